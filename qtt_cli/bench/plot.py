"""The benchmark's figure: mean normalized regret and mean rank vs budget, one line per optimizer.

matplotlib is imported only here, when a plot is written (it is in the ``dev`` extra, not a dependency of
``qtt tune``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

__all__ = ["plot_regret"]


def plot_regret(
    results: pd.DataFrame, path: Path, *, labels: Mapping[str, str], marks_h: Sequence[float] = ()
) -> Path:
    """Write a PNG of mean regret (left, log scale) and mean rank (right) over the budget grid."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ValueError("the benchmark plot needs matplotlib: pip install 'qtt-cli[dev]'") from exc

    ranked = results.assign(
        rank=results.groupby(["dataset", "seed", "budget_s"])["regret"].rank(method="average")
    )
    curves = ranked.groupby(["optimizer", "budget_h"]).agg(regret=("regret", "mean"), rank=("rank", "mean"))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for name, label in labels.items():
        if name not in curves.index.get_level_values(0):
            continue
        curve = curves.loc[name]
        style = {"linewidth": 2.4 if name == "quicktune" else 1.4}
        left.plot(curve.index, curve["regret"].clip(lower=1e-4), label=label, **style)
        right.plot(curve.index, curve["rank"], label=label, **style)
    for ax, title in ((left, "mean normalized regret"), (right, "mean rank")):
        ax.set_xscale("log")
        ax.set_xlabel("budget (hours of recorded cost)")
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
        for mark in marks_h:
            ax.axvline(mark, color="grey", linestyle=":", linewidth=1)
    left.set_yscale("log")
    right.legend(loc="best", fontsize=8)
    datasets, seeds = results["dataset"].nunique(), results["seed"].nunique()
    fig.suptitle(f"Replay benchmark: {datasets} datasets × {seeds} seed(s)", fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
