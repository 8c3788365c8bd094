"""The report's figures, drawn with matplotlib's Agg backend (no display needed) and returned as PNG bytes.

Every series differs in marker and line style as well as colour, so the figures stay readable printed in
black and white; every axis names its unit.
"""

from __future__ import annotations

import io
from itertools import cycle

import numpy as np
import pandas as pd

from qtt_cli.report.run_data import RunData, pareto_front, steps_table, time_per

_COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_LINES = ("-", "--", "-.", ":")
_HATCHES = ("", "//", "..", "xx", "\\\\", "oo", "--", "++")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def model_styles(models) -> dict[str, dict]:
    """A distinct (colour, marker, line style) per model, in a stable order."""
    styles = {}
    for i, (model, color, marker) in enumerate(zip(sorted(set(models)), cycle(_COLORS), cycle(_MARKERS))):
        styles[model] = {"color": color, "marker": marker, "linestyle": _LINES[(i // len(_MARKERS)) % 4]}
    return styles


def _time_unit(seconds: float) -> tuple[float, str]:
    if seconds >= 2 * 3600:
        return 3600.0, "h"
    if seconds >= 10 * 60:
        return 60.0, "min"
    return 1.0, "s"


def _png(fig) -> bytes:
    plt = _pyplot()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def best_so_far(data: RunData) -> bytes:
    """Best validation top-1 so far against the training time used, with the budget marked."""
    plt = _pyplot()
    steps = steps_table(data.history)
    scale, unit = _time_unit(max(data.budget_s, data.used_s, float(steps["time_s"].max() or 0) if len(steps) else 0))
    fig, ax = plt.subplots(figsize=(7, 3.6), constrained_layout=True)
    if len(steps):
        x = np.concatenate([[0.0], steps["time_s"].to_numpy(float)]) / scale
        y = np.concatenate([[np.nan], steps["best_so_far"].to_numpy(float)])
        ax.step(x, y, where="post", color="black", linewidth=1.8, label="best so far")
        ax.plot(steps["time_s"] / scale, steps["val_top1"], linestyle="none", marker="o", markersize=4,
                markerfacecolor="white", color="#0072B2", label="each step's last epoch")
    if data.budget_s:
        ax.axvline(data.budget_s / scale, color="#D55E00", linestyle="--", linewidth=1.5, label="budget")
    if data.used_s:
        ax.axvline(data.used_s / scale, color="grey", linestyle=":", linewidth=1.5,
                   label="budget used (incl. search overhead)")
    ax.set_xlim(left=0)
    ax.set_xlabel(f"time used by the steps ({unit}; training, evaluation, checkpoints)")
    ax.set_ylabel("validation top-1 (%)")
    ax.set_title("Best validation accuracy so far")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def learning_curves(data: RunData) -> bytes:
    """Every pipeline's validation top-1 per epoch, one style per model."""
    plt = _pyplot()
    history = data.history[data.history["val_top1"].notna()]
    styles = model_styles(history["model"])
    fig, ax = plt.subplots(figsize=(7, 3.8), constrained_layout=True)
    shown = set()
    for _, group in history.groupby("pipeline_id", sort=False):
        model = group.iloc[0]["model"]
        ax.plot(group["epoch"].astype(float), group["val_top1"], markersize=4, linewidth=1.2, alpha=0.85,
                label=None if model in shown else model, **styles[model])
        shown.add(model)
    best = data.best_pipeline
    if best is not None:
        g = history[history["pipeline_id"] == best]
        ax.plot(g["epoch"].astype(float), g["val_top1"], color="black", linewidth=2.6, alpha=0.35,
                label=f"best pipeline ({best})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation top-1 (%)")
    ax.set_title("Learning curves of all pipelines")
    ax.grid(alpha=0.3)
    if shown:
        ax.legend(fontsize=7, loc="best")
    return _png(fig)


def accuracy_vs_cost(data: RunData) -> bytes:
    """Each pipeline's best validation top-1 against the seconds spent on it, Pareto front marked."""
    plt = _pyplot()
    table = data.table[data.table["best_val_top1"].notna()]
    styles = model_styles(table["model"])
    fig, ax = plt.subplots(figsize=(7, 3.8), constrained_layout=True)
    for model, group in table.groupby("model"):
        style = {k: v for k, v in styles[model].items() if k != "linestyle"}
        ax.plot(group["cost_s"], group["best_val_top1"], linestyle="none", markersize=7, markerfacecolor="none",
                markeredgewidth=1.4, label=model, **style)
    if len(table):
        front = pareto_front(table["cost_s"].to_numpy(), table["best_val_top1"].to_numpy())
        points = table.iloc[front]
        ax.step(points["cost_s"], points["best_val_top1"], where="post", color="black", linestyle="--",
                linewidth=1.2, label="Pareto front")
        ax.plot(points["cost_s"], points["best_val_top1"], linestyle="none", marker=".", color="black")
    ax.set_xlabel("time spent on the pipeline (s, training + evaluation)")
    ax.set_ylabel("best validation top-1 (%)")
    ax.set_title("Accuracy vs cost per pipeline")
    ax.grid(alpha=0.3)
    if len(table):
        ax.legend(fontsize=7, loc="best")
    return _png(fig)


def time_spent(data: RunData) -> bytes:
    """Seconds per model (left) and per finetuning strategy (right) as hatched horizontal bars."""
    plt = _pyplot()
    per_model, per_strategy = time_per(data.history)
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.5 + 0.35 * max(len(per_model), len(per_strategy), 3)),
                             constrained_layout=True)
    for ax, series, title in ((axes[0], per_model, "per model"), (axes[1], per_strategy, "per strategy")):
        if len(series):
            series = series.iloc[::-1]
            bars = ax.barh(range(len(series)), series.to_numpy(), color="#BBBBBB", edgecolor="black")
            for bar, hatch in zip(bars, cycle(_HATCHES)):
                bar.set_hatch(hatch)
            ax.set_yticks(range(len(series)), list(series.index), fontsize=8)
        ax.set_xlabel("time used by its steps (s)")
        ax.set_title(f"Time {title}")
        ax.grid(alpha=0.3, axis="x")
    return _png(fig)


def predictions(data: RunData) -> bytes | None:
    """Predicted vs observed accuracy (with ±1 std) and cost of each step, or None when the run recorded
    no predictions (optimizers other than Quick-Tune, or runs made before predictions were recorded)."""
    steps = steps_table(data.history)
    steps = steps[steps["pred_val_top1"].notna() & steps["val_top1"].notna()]
    if steps.empty:
        return None
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    left.errorbar(steps["pred_val_top1"], steps["val_top1"], xerr=steps["pred_val_std"].fillna(0.0),
                  linestyle="none", marker="o", markersize=4, markerfacecolor="white", color="#0072B2",
                  ecolor="#999999", elinewidth=0.8, label="step (±1 std predicted)")
    _diagonal(left, np.concatenate([steps["pred_val_top1"], steps["val_top1"]]))
    left.set_xlabel("predicted validation top-1 (%)")
    left.set_ylabel("observed validation top-1 (%)")
    left.set_title("Accuracy predictor")
    cost = steps[steps["pred_cost_s"].notna()]
    right.plot(cost["pred_cost_s"], cost["cost_s"], linestyle="none", marker="s", markersize=4,
               markerfacecolor="white", color="#D55E00", label="step")
    if len(cost):
        _diagonal(right, np.concatenate([cost["pred_cost_s"], cost["cost_s"]]))
    right.set_xlabel("predicted cost of the step (s)")
    right.set_ylabel("observed cost of the step (s)")
    right.set_title("Cost predictor")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    return _png(fig)


def _diagonal(ax, values) -> None:
    values = pd.Series(values).dropna()
    lo, hi = float(values.min()), float(values.max())
    pad = 0.05 * (hi - lo or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="black", linestyle="--", linewidth=1,
            label="perfect prediction")
