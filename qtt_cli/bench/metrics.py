"""Normalized regret and ranks over time (Appendix A.1 of the Quick-Tune paper).

Per dataset, the regret of a best-so-far accuracy ``y`` is ``(y_max - y) / (y_max - y_min)`` with ``y_max`` and
``y_min`` the largest and smallest accuracy anywhere in that dataset's recorded curves: 0 means the best
recorded pipeline was found, 1 means nothing better than the worst recorded epoch (nothing observed yet
also counts as 1). Ranks compare the optimizers on the same dataset, seed and budget (1 = best; ties share
the average rank).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from qtt_cli.metadataset import CurveSet

__all__ = ["normalized_regret", "paired_differences", "regret_range", "summarize"]


def regret_range(curveset: CurveSet) -> tuple[float, float]:
    """``(y_min, y_max)`` over every recorded epoch of every configuration of the dataset."""
    values = np.concatenate([c for c in curveset.curves if len(c)]) if curveset.num_observations else np.zeros(0)
    if values.size == 0:
        raise ValueError(f"dataset {curveset.name!r} has no recorded values")
    return float(values.min()), float(values.max())


def normalized_regret(best: np.ndarray, y_min: float, y_max: float) -> np.ndarray:
    """``(y_max - best) / (y_max - y_min)``, 1 where nothing was observed (NaN), clipped to [0, 1]."""
    best = np.asarray(best, dtype=np.float64)
    span = y_max - y_min
    if span <= 0:
        return np.where(np.isnan(best), 1.0, 0.0)
    regret = (y_max - best) / span
    return np.clip(np.where(np.isnan(best), 1.0, regret), 0.0, 1.0)


def paired_differences(results: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Per budget and optimizer: the mean over (dataset, seed) pairs of ``regret(optimizer) −
    regret(reference)`` and its standard error (std / sqrt(pairs)). Positive = the optimizer is worse than
    ``reference``. Pairing removes the dataset-to-dataset spread, which dominates the unpaired std."""
    keys = ["dataset", "seed", "budget_h"]
    ref = results[results["optimizer"] == reference].set_index(keys)["regret"]
    rows = []
    for (budget, opt), group in results[results["optimizer"] != reference].groupby(["budget_h", "optimizer"]):
        diff = (group.set_index(keys)["regret"] - ref).dropna()
        n = len(diff)
        rows.append({"budget_h": budget, "optimizer": opt, "reference": reference, "mean_diff": float(diff.mean()),
                     "se": float(diff.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan"), "pairs": n})  # fmt: skip
    return pd.DataFrame(rows, columns=["budget_h", "optimizer", "reference", "mean_diff", "se", "pairs"])


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Mean (and std) normalized regret and mean rank per optimizer and budget.

    ``results`` has one row per ``dataset, seed, optimizer, budget_h`` with a ``regret`` column; ranks are taken
    within each ``dataset, seed, budget_h`` group.
    """
    ranked = results.assign(
        rank=results.groupby(["dataset", "seed", "budget_h"])["regret"].rank(method="average", ascending=True)
    )
    return (
        ranked.groupby(["budget_h", "optimizer"], sort=True)
        .agg(regret=("regret", "mean"), regret_std=("regret", "std"), rank=("rank", "mean"), runs=("regret", "size"))
        .reset_index()
    )
