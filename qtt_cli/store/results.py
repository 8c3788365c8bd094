"""The Parquet results store: one row per pipeline per trained epoch, written atomically.

Like Optuna's storages, the store is the single source of truth of a run: the optimizer re-reads it
to decide, the tuner re-reads it to resume, the leaderboard reads it to rank. Each append rewrites the
file once, through a temporary file (flushed to disk) and ``os.replace``, so a crash leaves either the old
or the new file, never a torn one, and a full disk leaves the old file and raises ``DiskFullError``.

Runs hold at most a few thousand rows, so rewriting is cheaper than it sounds: writing a Parquet file
costs about the same for 2 rows as for 3,000 (pandas-to-Arrow conversion and metadata per column, not
data), which is why per-step part files compacted later would save nothing worth their recovery rules.
What is per append, not per row, is kept small instead: the new rows are built column by column with their
final types (one ``astype`` per column of a whole frame cost more than the write), and the store keeps its
rows in memory so that an append never re-reads the file.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from qtt_cli.space.config import PipelineConfig
from qtt_cli.store.files import atomic_write

RESULTS_FILE = "results.parquet"

HYPERPARAMETER_COLUMNS = tuple(f.name for f in dataclasses.fields(PipelineConfig))
METRIC_COLUMNS = (
    "epoch",  # 1-based epoch this row reports
    "val_top1",  # validation top-1 accuracy in percent (0-100), as in the Quick-Tune meta-dataset
    "val_loss",
    "train_loss",
    "cost_s",  # seconds of training + evaluation spent on this epoch
    "overhead_s",  # seconds of the step outside its epochs' cost_s, on the step's first row (0 on the others)
    "wall_time",  # UTC time the row was recorded
    "step",  # index of the tuner step that produced the row
    "status",  # ok | failed | diverged | interrupted
    "error",
    # What the optimizer predicted for the step, on the row of the epoch it predicted (Quick-Tune only):
    "pred_val_top1",  # validation top-1 (%) expected at this epoch
    "pred_val_std",  # its standard deviation (percentage points)
    "pred_cost_s",  # seconds expected for the whole step (all its epochs)
)
COLUMNS = ("pipeline_id",) + HYPERPARAMETER_COLUMNS + METRIC_COLUMNS

def _pandas_dtype(annotation: str) -> str:
    """Nullable pandas dtype of a PipelineConfig field, so that inactive hyperparameters (None) keep
    the column's type in Parquet instead of turning it into an untyped column."""
    for prefix, dtype in (("bool", "boolean"), ("int", "Int64"), ("float", "float64"), ("str", "string")):
        if str(annotation).startswith(prefix):
            return dtype
    raise TypeError(f"no Parquet type for annotation {annotation!r}")


_DTYPES: dict[str, str] = {
    **{f.name: _pandas_dtype(f.type) for f in dataclasses.fields(PipelineConfig)},
    "pipeline_id": "string",
    "epoch": "Int64",
    "val_top1": "float64",
    "val_loss": "float64",
    "train_loss": "float64",
    "cost_s": "float64",
    "overhead_s": "float64",
    "step": "Int64",
    "status": "string",
    "error": "string",
    "pred_val_top1": "float64",
    "pred_val_std": "float64",
    "pred_cost_s": "float64",
}


class ResultsStore:
    """Append-only table of epoch results of one run directory."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / RESULTS_FILE
        self._frame: pd.DataFrame | None = None
        self.writes = 0  # files written by this object (one per append; tests count them)

    def load(self) -> pd.DataFrame:
        """All rows recorded so far (an empty frame with the right columns for a new run); a copy, which
        the caller may change."""
        return self._loaded().copy()

    def rows_of(self, pipeline_id: str) -> pd.DataFrame:
        """The rows of one pipeline (a copy), without copying the rest of the store."""
        frame = self._loaded()
        return frame[frame["pipeline_id"] == pipeline_id].copy()

    def _loaded(self) -> pd.DataFrame:
        if self._frame is None:
            if self.path.exists():
                self._frame = pd.read_parquet(self.path)
            else:
                self._frame = _empty_frame()
        return self._frame

    def append(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Add rows and persist atomically. Unknown columns are an error, missing ones are null."""
        rows = list(rows)
        if not rows:
            return
        for row in rows:
            unknown = set(row) - set(COLUMNS)
            if unknown:
                raise ValueError(f"unknown result column(s): {sorted(unknown)}")
        new = _frame_of(rows)
        current = self._loaded()
        frame = new if current.empty else pd.concat([current, new], ignore_index=True)

        def write(tmp: str) -> None:
            frame.to_parquet(tmp, index=False)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())

        atomic_write(self.path, write)
        self._frame = frame
        self.writes += 1


def make_rows(
    pipeline_id: str,
    config: PipelineConfig,
    epochs: Iterable[Any],
    *,
    step: int,
    status: str,
    error: str | None,
    wall_time: pd.Timestamp,
    failed_epoch: int | None = None,
    overhead_s: float | None = None,
) -> list[dict[str, Any]]:
    """Rows for one worker step: one per completed epoch, plus one without metrics for a step that
    failed or diverged before completing an epoch (so that failures are visible in the store).

    ``overhead_s`` (the step's seconds outside its epochs, ``StepResult.overhead_s``) goes on the step's
    first row and 0 on the others, so that the sum of ``cost_s + overhead_s`` over a step's rows is its
    wall time."""
    base = {"pipeline_id": pipeline_id, **config.to_dict(), "step": step, "wall_time": wall_time}
    rows = [
        {
            **base,
            "epoch": e.epoch,
            "val_top1": e.val_top1,
            "val_loss": e.val_loss,
            "train_loss": e.train_loss,
            "cost_s": e.cost_s,
            "status": "ok",
            "error": None,
        }
        for e in epochs
    ]
    if status in ("failed", "diverged"):
        if rows:
            rows[-1]["status"], rows[-1]["error"] = status, error
        else:
            rows.append({**base, "epoch": failed_epoch, "status": status, "error": error})
    if overhead_s is not None:
        for i, row in enumerate(rows):
            row["overhead_s"] = float(overhead_s) if i == 0 else 0.0
    return rows


def charged_costs(rows: pd.DataFrame) -> list[float]:
    """Per row: ``cost_s`` plus ``overhead_s`` (on a step's first row; absent in stores written before the
    column existed), i.e. what the budget was charged for that epoch. The cost predictor learns these, so
    model builds, restores and checkpoint writes are not free in its eyes."""
    cost = rows["cost_s"].astype("float64")
    if "overhead_s" in rows.columns:
        cost = cost + rows["overhead_s"].astype("float64").fillna(0.0)
    return [float(v) for v in cost]


def _frame_of(rows: list[Mapping[str, Any]]) -> pd.DataFrame:
    """``rows`` as a frame with the store's columns and types (missing values null), built column by column:
    the same frame as ``_typed`` of the untyped one, at a quarter of its cost."""
    columns = {}
    for column in COLUMNS:
        values = [row.get(column) for row in rows]
        columns[column] = (pd.to_datetime(values, utc=True) if column == "wall_time"
                           else pd.array(values, dtype=_DTYPES[column]))
    return pd.DataFrame(columns)


def _empty_frame() -> pd.DataFrame:
    return _typed(pd.DataFrame({c: pd.Series(dtype="object") for c in COLUMNS}))


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    for column, dtype in _DTYPES.items():
        frame[column] = frame[column].astype(dtype)
    frame["wall_time"] = pd.to_datetime(frame["wall_time"], utc=True)
    return frame
