"""Rank what a run tried: one line per pipeline, best validation top-1 first."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from qtt_cli.store import ResultsStore

# Hyperparameters shown by default: the ones that most change what a pipeline is.
KEY_HYPERPARAMETERS = (
    "lr", "batch_size", "opt", "weight_decay", "sched", "data_augmentation", "pct_to_freeze", "linear_probing",
)


def leaderboard(run_dir: Path, *, top: int | None = None) -> pd.DataFrame:
    """Pipelines ranked by best validation top-1 (percent), with the epoch it was reached at.

    Pipelines that never completed an epoch rank last, with their status and error.
    """
    history = ResultsStore(Path(run_dir)).load()
    if history.empty:
        return pd.DataFrame(columns=["rank", "pipeline_id", "model", "best_val_top1"])
    rows = []
    for pid, group in history.groupby("pipeline_id", sort=False):
        done = group[group["val_top1"].notna()]
        first, last = group.iloc[0], group.iloc[-1]
        best = done.loc[done["val_top1"].idxmax()] if not done.empty else None
        rows.append(
            {
                "pipeline_id": pid,
                "model": first["model"],
                "best_val_top1": float(best["val_top1"]) if best is not None else None,
                "best_epoch": int(best["epoch"]) if best is not None else None,
                "val_loss_at_best": float(best["val_loss"]) if best is not None else None,
                "epochs": len(done),
                "cost_s": float(done["cost_s"].sum()),
                "status": last["status"],
                "error": last["error"] if pd.notna(last["error"]) else None,
                **{name: _plain(first[name]) for name in KEY_HYPERPARAMETERS},
            }
        )
    _mark_stopped(Path(run_dir), rows)
    table = pd.DataFrame(rows).sort_values(
        ["best_val_top1", "cost_s"], ascending=[False, True], na_position="last", kind="stable"
    )
    table.insert(0, "rank", range(1, len(table) + 1))
    table = table.reset_index(drop=True)
    return table.head(top) if top else table


def _mark_stopped(run_dir: Path, rows: list[dict]) -> None:
    """A pipeline that is neither finished nor failed but has no checkpoint to continue from (given up for
    --max-checkpoints, or deleted) is "stopped", as the optimizer sees it, not "ok"."""
    try:
        max_epochs = int(json.loads((run_dir / "run.json").read_text())["settings"]["max_epochs"])
    except (OSError, ValueError, KeyError, TypeError):
        return
    for row in rows:
        checkpoint = run_dir / "checkpoints" / row["pipeline_id"] / f"epoch-{row['epochs']:04d}.pt"
        if row["status"] == "ok" and 0 < row["epochs"] < max_epochs and not checkpoint.is_file():
            row["status"] = "stopped"


def _plain(value):
    if value is pd.NA:
        return None
    return value.item() if hasattr(value, "item") else value
