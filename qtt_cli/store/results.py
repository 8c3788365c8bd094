"""The Parquet results store: one row per pipeline per trained epoch, written atomically.

Like Optuna's storages, the store is the single source of truth of a run: the optimizer re-reads it
to decide, the tuner re-reads it to resume, the leaderboard reads it to rank. Each append rewrites the
file once, through a temporary file (flushed to disk) and ``os.replace``, so a crash leaves either the old
or the new file, never a torn one, and a full disk leaves the old file and raises ``DiskFullError``.

Runs hold at most a few thousand rows, so rewriting is cheaper than it sounds: writing a Parquet file
costs about the same for 2 rows as for 3,000 (metadata and encoding per column, not data), which is why
per-step part files compacted later would save nothing worth their recovery rules. What is per append, not
per row, is kept small instead: the store keeps its rows in memory as the Arrow table it writes, converts
only the new rows, and never re-reads the file.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

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
    """Append-only table of epoch results of one run directory.

    The rows live in memory as an Arrow table, which is what is written: an append converts only its new
    rows (``pa.Table.from_pydict`` with the store's schema) and writes the table with ``pyarrow.parquet``.
    Going through pandas on every write (``DataFrame.to_parquet``, which converts the whole frame column by
    column and types the new rows) was most of the tuner's time between two steps. The pandas view that
    readers use is built from the table only when asked for (:meth:`load`); the tuner reads
    :meth:`records`.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / RESULTS_FILE
        self._table: pa.Table | None = None
        self._frame: pd.DataFrame | None = None  # pandas view of _table, built lazily
        self.writes = 0  # files written by this object (one per append; tests count them)

    def load(self) -> pd.DataFrame:
        """All rows recorded so far (an empty frame with the right columns for a new run); a copy, which
        the caller may change."""
        if self._frame is None:
            self._frame = self._loaded().to_pandas()
        return self._frame.copy()

    def records(self) -> list[dict[str, Any]]:
        """All rows as plain Python dicts (missing values ``None``), without building a pandas frame."""
        return self._loaded().to_pylist()

    def _loaded(self) -> pa.Table:
        if self._table is None:
            self._table = _conformed(pq.read_table(self.path)) if self.path.exists() else SCHEMA.empty_table()
        return self._table

    def append(self, rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Add rows and persist atomically. Unknown columns are an error, missing ones are null.

        Returns the new rows as they are stored (every column, values converted to the column's type,
        missing ones ``None``): what :meth:`records` will return for them."""
        rows = list(rows)
        if not rows:
            return []
        for row in rows:
            unknown = set(row) - set(COLUMNS)
            if unknown:
                raise ValueError(f"unknown result column(s): {sorted(unknown)}")
        new = _table_of(rows)
        # One chunk per column: a table grown by concatenation has a chunk per append, and writing 300 chunks
        # cost ten times writing one.
        table = pa.concat_tables([self._loaded(), new]).combine_chunks()

        def write(tmp: str) -> None:
            pq.write_table(table, tmp)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())

        atomic_write(self.path, write)
        self._table, self._frame = table, None
        self.writes += 1
        return new.to_pylist()


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


def charged_cost(row: Mapping[str, Any]) -> float:
    """What the budget was charged for one row's epoch: ``cost_s`` plus ``overhead_s`` (on a step's first row;
    absent in stores written before the column existed). The cost predictor learns these, so model builds,
    restores and checkpoint writes are not free in its eyes."""
    overhead = row.get("overhead_s")
    return float(row["cost_s"]) + (0.0 if is_null(overhead) else float(overhead))


def is_null(value: Any) -> bool:
    """A missing value of the store however it is read: ``None`` (Arrow rows), pandas' NA/NaT, or a float NaN
    (a null of a float column of a frame)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)


def charged_costs(rows: pd.DataFrame) -> list[float]:
    """:func:`charged_cost` of every row of a frame of the store."""
    return [charged_cost(row) for row in rows.to_dict("records")]


def _empty_frame() -> pd.DataFrame:
    """No rows, every column with its pandas dtype: the source of the Arrow schema (and its pandas metadata,
    so that ``pd.read_parquet`` of the file gives these dtypes back)."""
    frame = pd.DataFrame({c: pd.Series(dtype=_DTYPES.get(c, "object")) for c in COLUMNS})
    frame["wall_time"] = pd.Series(dtype="datetime64[ns, UTC]")
    return frame


SCHEMA = pa.Schema.from_pandas(_empty_frame(), preserve_index=False)


def _table_of(rows: list[Mapping[str, Any]]) -> pa.Table:
    """``rows`` as an Arrow table of the store's schema (missing columns null)."""
    columns = {
        column: [_arrow_value(row.get(column)) for row in rows] for column in COLUMNS
    }
    return pa.Table.from_pydict(columns, schema=SCHEMA)


def _arrow_value(value: Any) -> Any:
    """numpy scalars to Python, missing values to ``None`` (Arrow converts the rest)."""
    if is_null(value):
        return None
    return value.item() if isinstance(value, np.generic) else value


def _conformed(table: pa.Table) -> pa.Table:
    """A table read from disk in the store's schema. A store written by an older qtt may lack columns: a
    hyperparameter that did not exist then was at its default (what a resumed run must see), a metric
    column that did not exist is null."""
    for column in COLUMNS:
        if column not in table.column_names:
            value = _DEFAULTS.get(column)
            table = table.append_column(column, pa.array([value] * len(table), SCHEMA.field(column).type))
    return table.select(list(COLUMNS)).cast(SCHEMA)


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(PipelineConfig)
             if f.default is not dataclasses.MISSING}  # fmt: skip
