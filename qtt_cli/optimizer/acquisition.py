"""Cost-aware expected improvement at the next fidelity (equation 3 of the Quick-Tune paper).

A candidate ``x`` that has been trained for ``k`` epochs would next be observed at ``τ(x) = k + Δt``. Its
score is the expected improvement of its predicted validation accuracy at ``τ(x)`` over the best accuracy
any pipeline has reached at that same epoch, divided by the predicted seconds of those ``Δt`` epochs::

    score(x) = EI(μ(x, τ), σ(x, τ); y*_τ) / cost(x, k → τ) ** cost_exponent

Comparing at the same epoch (instead of against the overall best) is what makes freeze-thaw work: a young
pipeline is judged against what others had at its age, not against pipelines trained ten times longer.

Knobs (exploration vs exploitation):

- ``xi`` (EI margin, percent points): the improvement counts only above ``y*_τ + xi``. 0 (the paper's
  setting) is greedy-leaning; larger values favour uncertain candidates.
- ``cost_exponent``: 1 is equation 3; 0 ignores the cost (plain EI); values between soften it.
- ``cost_floor``: predicted costs are clipped below at this fraction of the median predicted cost. A cost
  predictor that says "almost free" (the reference implementation clipped standardised costs near 0) would
  otherwise make the ratio explode and dominate the choice.

Accuracies are maximised (the meta-dataset records validation top-1 in percent).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.special import ndtr

__all__ = ["best_at_fidelity", "cost_aware_score", "expected_improvement"]

_TWO_PI_SQRT = np.sqrt(2.0 * np.pi)


def expected_improvement(mean: np.ndarray, std: np.ndarray, best: np.ndarray | float, xi: float = 0.0) -> np.ndarray:
    """``E[max(Y - best - xi, 0)]`` for ``Y ~ N(mean, std²)``, elementwise (closed form).

    ``EI = (μ - b) Φ(z) + σ φ(z)`` with ``b = best + xi`` and ``z = (μ - b) / σ``; with ``σ = 0`` it is
    ``max(μ - b, 0)``.
    """
    mean = np.asarray(mean, dtype=np.float64)
    std = np.asarray(std, dtype=np.float64)
    gap = mean - (np.asarray(best, dtype=np.float64) + xi)
    safe = np.where(std > 0, std, 1.0)
    z = gap / safe
    ei = gap * ndtr(z) + safe * np.exp(-0.5 * z * z) / _TWO_PI_SQRT
    return np.where(std > 0, np.maximum(ei, 0.0), np.maximum(gap, 0.0))


def best_at_fidelity(curves: Sequence[np.ndarray], fidelities: np.ndarray, floor: float = 0.0) -> np.ndarray:
    """The incumbent ``y*_τ`` for each requested epoch ``τ`` (1-based).

    ``y*_τ`` is the best value any curve has at exactly epoch ``τ``. When no curve reaches ``τ``, it is the
    best value observed at any lower epoch, by any pipeline (Section 4.3: "ℓ(x, t) ... t < τ(x)"), which is
    then the overall best; when nothing is observed at all, ``floor`` (0 % accuracy).

    Why the overall best and not the best at the highest epoch below ``τ``: a pipeline trained past every
    other one would otherwise only compete with its own previous epoch, so a cheap pipeline that has
    plateaued far below the incumbent keeps a positive EI (any noise upward counts as improvement) and,
    divided by its small cost, absorbs the budget. Against the overall best, continuing it past the others
    is worth something only if it may still become the best pipeline.
    """
    fidelities = np.asarray(fidelities, dtype=np.int64)
    longest = max((len(c) for c in curves), default=0)
    if longest == 0:
        return np.full(fidelities.shape, float(floor))
    padded = np.full((len(curves), longest), -np.inf)
    for i, curve in enumerate(curves):
        padded[i, : len(curve)] = curve
    best_per_epoch = padded.max(axis=0)  # finite everywhere: some curve reaches every epoch <= longest
    index = np.clip(fidelities, 1, longest) - 1
    return np.where(fidelities > longest, best_per_epoch.max(), best_per_epoch[index])


def cost_aware_score(
    ei: np.ndarray, cost_s: np.ndarray, *, cost_exponent: float = 1.0, cost_floor: float = 0.01
) -> np.ndarray:
    """``ei / cost ** cost_exponent`` with costs clipped below at ``cost_floor`` × their median."""
    ei = np.asarray(ei, dtype=np.float64)
    if cost_exponent == 0:
        return ei
    cost = np.asarray(cost_s, dtype=np.float64)
    if np.any(~np.isfinite(cost)) or np.any(cost <= 0):
        raise ValueError("predicted costs must be positive and finite")
    cost = np.maximum(cost, cost_floor * float(np.median(cost)))
    return ei / cost**cost_exponent
