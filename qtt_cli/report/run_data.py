"""What a run report shows, computed from the run directory alone (no training, no optimizer state).

Everything here reads the results store, ``run.json`` and ``state.json``; the figures and the HTML page
only draw what these functions return, so the numbers can be tested without a browser or matplotlib.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qtt_cli.report.leaderboard import leaderboard
from qtt_cli.space.config import PipelineConfig
from qtt_cli.store import HYPERPARAMETER_COLUMNS, RunDir

# Columns in which the tuner records what the optimizer predicted for a step (Quick-Tune only); runs made
# before they existed simply lack them.
PREDICTION_COLUMNS = ("pred_val_top1", "pred_val_std", "pred_cost_s")


@dataclass
class RunData:
    """A run as the report sees it."""

    run_dir: Path
    settings: dict[str, Any]
    dataset: dict[str, Any]
    used_s: float
    history: pd.DataFrame  # the results store, in recording order
    table: pd.DataFrame  # the leaderboard, best first

    @property
    def budget_s(self) -> float:
        return float(self.settings.get("budget_s") or 0.0)

    @property
    def best_pipeline(self) -> str | None:
        scored = self.table[self.table["best_val_top1"].notna()]
        return None if scored.empty else str(scored.iloc[0]["pipeline_id"])


def load_run(run_dir: Path) -> RunData:
    """Read a run directory (raises the store's RunDirError if it is not one)."""
    rd = RunDir(Path(run_dir))
    run = rd.read_run()
    history = rd.store.load()
    order = [c for c in ("step", "epoch") if c in history.columns]
    history = history.sort_values(order, kind="stable").reset_index(drop=True) if order else history
    return RunData(
        run_dir=rd.root,
        settings=dict(run.get("settings", {})),
        dataset={k: v for k, v in run.items() if k != "settings"},
        used_s=float(rd.read_state().used_s),
        history=history,
        table=leaderboard(rd.root),
    )


def steps_table(history: pd.DataFrame) -> pd.DataFrame:
    """One row per tuner step: pipeline, model, last epoch reached, its accuracy, the step's cost, the
    cumulative training time after it and the best accuracy so far; plus the optimizer's predictions of
    that step's accuracy and cost where the run recorded them."""
    columns = ["step", "pipeline_id", "model", "epoch", "val_top1", "cost_s", "time_s", "best_so_far",
               *PREDICTION_COLUMNS]
    if history.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for step, group in history.groupby("step", sort=True):
        last = group.iloc[-1]
        row = {
            "step": int(step),
            "pipeline_id": last["pipeline_id"],
            "model": last["model"],
            "epoch": _int_or_none(last["epoch"]),
            "val_top1": _float_or_nan(last["val_top1"]),
            "cost_s": charged_seconds(group),
        }
        for name in PREDICTION_COLUMNS:
            row[name] = _float_or_nan(last[name]) if name in group.columns else np.nan
        rows.append(row)
    steps = pd.DataFrame(rows, columns=[c for c in columns if c not in ("time_s", "best_so_far")])
    steps["time_s"] = steps["cost_s"].cumsum()
    steps["best_so_far"] = steps["val_top1"].cummax().ffill()  # a failed step keeps the best so far
    return steps[columns]


def charged_seconds(rows: pd.DataFrame) -> float:
    """Seconds the budget paid for these rows: their epochs' ``cost_s`` plus the steps' ``overhead_s`` (model
    build, checkpoint restore and writes; recorded by runs of qtt versions that have the column)."""
    total = float(rows["cost_s"].fillna(0.0).sum())
    if "overhead_s" in rows.columns:
        total += float(rows["overhead_s"].fillna(0.0).sum())
    return total


def pareto_front(cost: np.ndarray, accuracy: np.ndarray) -> np.ndarray:
    """Indices of the points no other point beats on both axes (cheaper or equal and at least as accurate,
    strictly better on one), sorted by cost: the pipelines worth their seconds."""
    cost, accuracy = np.asarray(cost, dtype=float), np.asarray(accuracy, dtype=float)
    keep = []
    for i in np.argsort(cost, kind="stable"):
        if not np.isfinite(accuracy[i]):
            continue
        if not keep or accuracy[i] > accuracy[keep[-1]]:
            keep.append(int(i))
    return np.asarray(keep, dtype=int)


def strategies(config: dict[str, Any]) -> list[str]:
    """The finetuning strategies (Table 7 and the two training methods) a pipeline uses; "full finetuning"
    when it uses none of them. A pipeline can use several."""
    found = []
    if config.get("linear_probing"):
        found.append("linear probing")
    if (config.get("pct_to_freeze") or 0) > 0:
        found.append("partial freezing")
    if config.get("layer_decay") is not None and not _nan(config.get("layer_decay")):
        found.append("layer decay")
    if config.get("stoch_norm"):
        found.append("StochNorm")
    for name, label in (("sp_reg", "SP-regulariser"), ("delta_reg", "DELTA"), ("bss_reg", "BSS"),
                        ("cotuning_reg", "Co-Tuning")):
        if (config.get(name) or 0) > 0:
            found.append(label)
    if (config.get("mixup") or 0) > 0 or (config.get("cutmix") or 0) > 0:
        found.append("mixup/cutmix")
    if config.get("spg"):
        found.append("SPG")
    if (config.get("hvp_views") or 1) > 1:
        found.append("HVP")
    return found or ["full finetuning"]


def time_per(history: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Seconds charged to the budget (epochs + step overheads) per model, and per strategy (a pipeline's
    seconds count for each strategy it uses), largest first."""
    if history.empty:
        empty = pd.Series(dtype=float)
        return empty, empty
    per_model = pd.Series({m: charged_seconds(g) for m, g in history.groupby("model")}, dtype=float)
    per_model = per_model.sort_values(ascending=False)
    per_strategy: dict[str, float] = {}
    for _, group in history.groupby("pipeline_id", sort=False):
        seconds = charged_seconds(group)
        for name in strategies(group.iloc[0].to_dict()):
            per_strategy[name] = per_strategy.get(name, 0.0) + seconds
    return per_model.astype(float), pd.Series(per_strategy, dtype=float).sort_values(ascending=False)


def recipe(history: pd.DataFrame, pipeline_id: str) -> dict[str, Any]:
    """Every active hyperparameter of one pipeline (inactive conditional ones left out)."""
    first = history[history["pipeline_id"] == pipeline_id].iloc[0]
    values = {c: _plain(first[c]) for c in HYPERPARAMETER_COLUMNS if c in history.columns}
    config = PipelineConfig.from_dict(values)
    return {k: v for k, v in config.to_dict().items() if v is not None}


def _plain(value):
    if value is pd.NA or value is None:
        return None
    if isinstance(value, float) and np.isnan(value):
        return None
    return value.item() if hasattr(value, "item") else value


def _nan(value) -> bool:
    return value is pd.NA or (isinstance(value, float) and np.isnan(value))


def _float_or_nan(value) -> float:
    return np.nan if value is None or _nan(value) else float(value)


def _int_or_none(value) -> int | None:
    return None if value is None or _nan(value) else int(value)
