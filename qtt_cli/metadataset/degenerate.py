"""Records of the Quick-Tune meta-dataset that are broken runs, not learning curves.

Every linear-probing record of ``quicktune-extended`` (946 of 3,214 configurations, on all 18 datasets) is a
single epoch: no linear-probing configuration was ever continued to a second epoch, while the other
configurations have 30 epochs on average. Their accuracy is near chance (median best 3.1 %, at most 26.6 %,
against a median of 33.7 % for the other configurations after all their epochs), and 585 of them cost under
5 % of their dataset's median epoch (the other 361: 5–97 %, median 10 %). A linear probe of an ImageNet
model reaches far above chance in one epoch on these datasets, and an out-of-memory failure would not have
left a finished, scored epoch: these are runs the generating study broke (e.g. a classifier that was not
trained), not cheap pipelines. Learnt as they are, the priors predicted a linear-probing epoch ~70x cheaper
than its fully finetuned twin and near-chance accuracy, so a cost-aware search ranked linear probing first.

Meta-training therefore drops them (``without_degenerate``) and the predictors learn linear probing from
the run's own observations (``qtt_cli.surrogate.features.RUN_LEARNT_COLUMNS``). The replay benchmark can
drop them from the candidates too (``qtt bench --drop-degenerate``), so that a gain cannot come from them.
Runs of ``qtt tune`` are never filtered: there, a linear-probing epoch is a real measurement.
"""

from __future__ import annotations

import numpy as np

from .curveset import CurveSet

__all__ = ["degenerate_rows", "without_degenerate"]


def degenerate_rows(curveset: CurveSet) -> np.ndarray:
    """Indices of linear-probing configurations recorded for at most one epoch (see the module docstring)."""
    if "linear_probing" not in curveset.features.columns:
        return np.zeros(0, dtype=np.int64)
    probing = curveset.features["linear_probing"].to_numpy(dtype=np.float64) > 0.5
    return np.flatnonzero(probing & (curveset.lengths <= 1))


def without_degenerate(curveset: CurveSet) -> CurveSet:
    """``curveset`` without its degenerate records (itself when it has none)."""
    bad = degenerate_rows(curveset)
    if not len(bad):
        return curveset
    return curveset.subset(np.setdiff1d(np.arange(len(curveset)), bad))
