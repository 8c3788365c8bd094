"""The ask interface shared by every optimizer, and the per-pipeline view of a run's history.

Optimizers keep no private history (as Optuna's samplers): ``ask`` receives the pipelines as
reconstructed from the results store, so resuming a run is nothing more than reloading the store.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from qtt_cli.space.config import PipelineConfig
from qtt_cli.store.results import HYPERPARAMETER_COLUMNS

FINAL_STATUSES = ("failed", "diverged")


@dataclass(frozen=True)
class PipelineState:
    """What the run knows about one pipeline: its configuration and its learning curve so far."""

    pipeline_id: str
    config: PipelineConfig
    curve: tuple[float, ...]  # validation top-1 (percent) after epoch 1, 2, ...
    costs: tuple[float, ...]  # seconds spent on epoch 1, 2, ...
    status: str  # status of the latest step: ok | interrupted | failed | diverged

    @property
    def epochs(self) -> int:
        return len(self.curve)

    @property
    def best(self) -> float | None:
        return max(self.curve) if self.curve else None

    @property
    def alive(self) -> bool:
        """Whether training may still be continued (not failed or diverged)."""
        return self.status not in FINAL_STATUSES


@dataclass(frozen=True)
class Suggestion:
    """Train ``pipeline_id`` (a new one when it is not in the history) from ``start_epoch`` to ``end_epoch``."""

    pipeline_id: str
    config: PipelineConfig
    start_epoch: int
    end_epoch: int


class Optimizer(abc.ABC):
    """Decides which pipeline to train next, and for how many more epochs (freeze-thaw)."""

    def __init__(self, *, max_epochs: int, delta_t: int) -> None:
        if delta_t < 1 or max_epochs < 1:
            raise ValueError("delta_t and max_epochs must be >= 1")
        self.max_epochs = max_epochs
        self.delta_t = delta_t

    @abc.abstractmethod
    def ask(self, pipelines: Mapping[str, PipelineState]) -> Suggestion | None:
        """The next step, or None when there is nothing left to try."""

    def may_continue(self, pipelines: Mapping[str, PipelineState]) -> set[str]:
        """Pipelines this optimizer may still continue: their latest checkpoint must be kept."""
        return {pid for pid, p in pipelines.items() if p.alive and p.epochs < self.max_epochs}

    def continue_step(self, pipeline: PipelineState) -> Suggestion:
        """The next Δt epochs of an existing pipeline, clipped at max_epochs."""
        return Suggestion(
            pipeline.pipeline_id,
            pipeline.config,
            pipeline.epochs,
            min(pipeline.epochs + self.delta_t, self.max_epochs),
        )


def next_pipeline_id(pipelines: Mapping[str, PipelineState]) -> str:
    return f"p{len(pipelines) + 1:04d}"


def pipeline_states(history: pd.DataFrame) -> dict[str, PipelineState]:
    """Group the results store's rows into one :class:`PipelineState` per pipeline (in first-seen order)."""
    states: dict[str, PipelineState] = {}
    if history.empty:
        return states
    for pid, rows in history.groupby("pipeline_id", sort=False):
        rows = rows.sort_values(["step", "epoch"], na_position="last")
        done = rows[rows["val_top1"].notna()]
        first = rows.iloc[0]
        config = PipelineConfig.from_dict({c: _plain(first[c]) for c in HYPERPARAMETER_COLUMNS})
        states[str(pid)] = PipelineState(
            pipeline_id=str(pid),
            config=config,
            curve=tuple(float(v) for v in done["val_top1"]),
            costs=tuple(float(v) for v in done["cost_s"]),
            status=str(rows.iloc[-1]["status"]),
        )
    return states


def _plain(value):
    """pandas scalars (NA, numpy types) to plain Python, for PipelineConfig.from_dict."""
    if value is pd.NA or value is None:
        return None
    return value.item() if hasattr(value, "item") else value
