"""The run's history as the tuner uses it between steps: the store's rows and one state per pipeline.

The optimizer decides from :class:`~qtt_cli.optimizer.PipelineState` objects, which
:func:`~qtt_cli.optimizer.pipeline_states` groups out of the store's rows: a pandas group-by, sort and
row-to-config conversion per pipeline, a few milliseconds each. Regrouping the whole store after every step
made the tuner's time between two steps grow with the number of pipelines (0.7 s per call at 100
pipelines on a loaded 2-core machine, and it was called twice per step). A step changes only the
pipeline it trained, so :class:`History` keeps every pipeline's rows (as plain dicts, the way the store
typed them) and regroups that pipeline's rows alone; its states are by construction those of
``pipeline_states(store.load())`` (a test compares them after every step).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from qtt_cli.optimizer import PipelineState, pipeline_state
from qtt_cli.store import ResultsStore

__all__ = ["History", "recorded_steps"]


def recorded_steps(history: pd.DataFrame) -> int:
    """Steps that left at least one row (a step cut before its first epoch leaves none and is redone)."""
    return int(history["step"].nunique()) if not history.empty else 0


class History:
    """The rows of ``store`` and their pipeline states, updated by :meth:`record` (the only writer while the
    tuner runs)."""

    def __init__(self, store: ResultsStore) -> None:
        self.store = store
        self._rows: dict[str, list[dict[str, Any]]] = {}
        for row in store.records():
            self._rows.setdefault(str(row["pipeline_id"]), []).append(row)
        self._states = {pid: pipeline_state(pid, rows) for pid, rows in self._rows.items()}
        self._steps = {int(row["step"]) for rows in self._rows.values() for row in rows if row["step"] is not None}

    @property
    def steps(self) -> int:
        """Steps that left at least one row, as :func:`recorded_steps` counts them in the store."""
        return len(self._steps)

    def states(self) -> dict[str, PipelineState]:
        """One state per pipeline, in the order pipelines first appear in the store (a new dict)."""
        return dict(self._states)

    def record(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Append ``rows`` to the store (one atomic write) and regroup the pipelines they belong to."""
        stored = self.store.append(rows)  # the rows as the store typed them: what a reload would give
        for row in stored:
            self._rows.setdefault(str(row["pipeline_id"]), []).append(row)
            if row["step"] is not None:
                self._steps.add(int(row["step"]))
        for pid in dict.fromkeys(str(row["pipeline_id"]) for row in stored):
            self._states[pid] = pipeline_state(pid, self._rows[pid])
