"""The ask interface shared by every optimizer, and the per-pipeline view of a run's history.

Optimizers keep no private history (as Optuna's samplers): ``ask`` receives the pipelines as
reconstructed from the results store, so resuming a run is nothing more than reloading the store.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from qtt_cli.space.config import PipelineConfig
from qtt_cli.store.results import HYPERPARAMETER_COLUMNS, charged_cost, is_null

# "stopped": the run gave up its checkpoint (``qtt tune --max-checkpoints``), so it cannot be continued.
# Never written to the store: the tuner marks it from the checkpoint folder, which is the truth on resume.
FINAL_STATUSES = ("failed", "diverged", "stopped")
# "running": a step of the pipeline is in flight on another worker (``qtt_cli.optimizer.pending``). Never written
# to the store either: the tuner marks it while it waits for the step.
RUNNING = "running"
# Errors that say nothing about the pipeline itself (another process held the GPU memory, a driver hiccup):
# such a failed step may be retried once before the pipeline is given up.
TRANSIENT_ERRORS = ("out of memory", "alloc_failed", "resource temporarily unavailable", "worker died")


def is_transient(error: str | None) -> bool:
    return bool(error) and any(marker in error.lower() for marker in TRANSIENT_ERRORS)


@dataclass(frozen=True)
class PipelineState:
    """What the run knows about one pipeline: its configuration and its learning curve so far.

    ``config`` is ``None`` only when replaying a meta-dataset, where a recorded configuration is known by
    its id (``pipeline_id``) and its encoded table row, and may use strategies the worker cannot train.
    """

    pipeline_id: str
    config: PipelineConfig | None
    curve: tuple[float, ...]  # validation top-1 (percent) after epoch 1, 2, ...
    costs: tuple[float, ...]  # seconds spent on epoch 1, 2, ...
    status: str  # status of the latest step: ok | interrupted | failed | diverged
    error: str | None = None  # error of the latest step, if it failed or diverged
    failed_steps: int = 0  # steps of this pipeline that ended with status "failed"
    in_flight_to: int | None = None  # status "running": the epoch its step in flight will reach

    @property
    def epochs(self) -> int:
        return len(self.curve)

    @property
    def best(self) -> float | None:
        return max(self.curve) if self.curve else None

    @property
    def alive(self) -> bool:
        """Whether training may still be continued (not failed or diverged)."""
        return self.status not in FINAL_STATUSES and self.status != RUNNING

    @property
    def retryable(self) -> bool:
        """A pipeline whose only failure looks transient (e.g. out of memory) may be stepped once more."""
        return self.status == "failed" and self.failed_steps == 1 and is_transient(self.error)


@dataclass(frozen=True)
class BudgetStatus:
    """How much of the search budget is spent: what a budget-aware optimizer may plan with.

    Seconds of the same clock the budget is enforced on (``qtt tune``: search wall time; replay: recorded
    seconds).
    """

    total_s: float
    used_s: float

    @property
    def left_s(self) -> float:
        return max(self.total_s - self.used_s, 0.0)

    @property
    def fraction_left(self) -> float:
        return self.left_s / self.total_s if self.total_s > 0 else 0.0


@dataclass(frozen=True)
class Suggestion:
    """Train ``pipeline_id`` (a new one when it is not in the history) from ``start_epoch`` to ``end_epoch``."""

    pipeline_id: str
    config: PipelineConfig | None  # None only in replay (see PipelineState)
    start_epoch: int
    end_epoch: int
    # What the optimizer expected of this step, when it predicts (Quick-Tune): validation top-1 (%) at
    # ``end_epoch`` with its std, and the seconds of the step. Recorded in the store for `qtt report`; not
    # part of what the step *is*, so two suggestions of the same step compare equal.
    predicted_val_top1: float | None = field(default=None, compare=False)
    predicted_val_std: float | None = field(default=None, compare=False)
    predicted_cost_s: float | None = field(default=None, compare=False)


class Optimizer(abc.ABC):
    """Decides which pipeline to train next, and for how many more epochs (freeze-thaw)."""

    def __init__(self, *, max_epochs: int, delta_t: int, epoch_limits: Mapping[str, int] | None = None) -> None:
        """``epoch_limits``: per pipeline id, the epoch it cannot be trained past (replay: the recorded
        length of its curve); pipelines not listed go to ``max_epochs``."""
        if delta_t < 1 or max_epochs < 1:
            raise ValueError("delta_t and max_epochs must be >= 1")
        self.max_epochs = max_epochs
        self.delta_t = delta_t
        self.epoch_limits = dict(epoch_limits or {})

    @abc.abstractmethod
    def ask(self, pipelines: Mapping[str, PipelineState], budget: BudgetStatus | None = None) -> Suggestion | None:
        """The next step, or None when there is nothing left to try. ``budget``: where the search stands in
        its time budget (None: unknown); optimizers that do not plan with it ignore it."""

    def save_state(self, directory: Path) -> None:
        """Persist what ``ask`` keeps beyond the history (Quick-Tune: its fitted surrogate and refit
        schedule), so that a resumed run decides as the uninterrupted one would. Default: nothing to keep."""
        return None

    def load_state(self, directory: Path) -> bool:
        """Restore what ``save_state`` wrote; False when there was nothing (usable) to restore."""
        return False

    def limit(self, pipeline_id: str) -> int:
        """The epoch at which ``pipeline_id`` is finished."""
        return min(self.max_epochs, self.epoch_limits.get(pipeline_id, self.max_epochs))

    def can_continue(self, pipeline: PipelineState) -> bool:
        """Not finished, and not failed (except a first transient failure, which is retried once)."""
        return (pipeline.alive or pipeline.retryable) and pipeline.epochs < self.limit(pipeline.pipeline_id)

    def may_continue(self, pipelines: Mapping[str, PipelineState]) -> set[str]:
        """Pipelines this optimizer may still continue: their latest checkpoint must be kept."""
        return {pid for pid, p in pipelines.items() if self.can_continue(p)}

    def continue_step(self, pipeline: PipelineState) -> Suggestion:
        """The next Δt epochs of an existing pipeline, clipped at its limit."""
        return Suggestion(
            pipeline.pipeline_id,
            pipeline.config,
            pipeline.epochs,
            min(pipeline.epochs + self.delta_t, self.limit(pipeline.pipeline_id)),
        )


def next_pipeline_id(pipelines: Mapping[str, PipelineState]) -> str:
    """``p<n+1>`` for n pipelines, or the next free number after it. One at a time, pipelines are recorded in
    the order of their ids and ``p<n+1>`` is always free; with parallel workers a later pipeline can be
    recorded while an earlier one never is (its step was in flight when the tuner was killed), and the count
    alone would give an id that is taken, training a new configuration into an existing pipeline."""
    n = len(pipelines) + 1
    while f"p{n:04d}" in pipelines:
        n += 1
    return f"p{n:04d}"


def pipeline_states(history: pd.DataFrame | Iterable[Mapping[str, Any]]) -> dict[str, PipelineState]:
    """Group the results store's rows (a frame, or plain row dicts as ``ResultsStore.records`` gives them) into
    one :class:`PipelineState` per pipeline, in first-seen order."""
    if isinstance(history, pd.DataFrame):
        history = history.to_dict("records")
    by_pipeline: dict[str, list[Mapping[str, Any]]] = {}
    for row in history:
        by_pipeline.setdefault(str(row["pipeline_id"]), []).append(row)
    return {pid: pipeline_state(pid, rows) for pid, rows in by_pipeline.items()}


def pipeline_state(pipeline_id: str, rows: Iterable[Mapping[str, Any]]) -> PipelineState:
    """The state of one pipeline from its rows in the store (any order). Plain Python, no pandas: the tuner
    regroups the pipeline it just trained after every step, and a pandas group-by and sort per call was a
    good part of its time between two steps."""
    rows = sorted(rows, key=lambda r: (_na_last(r.get("step")), _na_last(r.get("epoch"))))
    done = [r for r in rows if not is_null(r.get("val_top1"))]
    first, last = rows[0], rows[-1]
    # A frame of a store written before a hyperparameter existed may lack its column: its default then.
    config = PipelineConfig.from_dict({c: _plain(first[c]) for c in HYPERPARAMETER_COLUMNS if c in first})
    return PipelineState(
        pipeline_id=str(pipeline_id),
        config=config,
        curve=tuple(float(r["val_top1"]) for r in done),
        costs=tuple(charged_cost(r) for r in done),  # epoch + step overhead: what the cost predictor learns
        status=str(last["status"]),
        error=None if is_null(last.get("error")) else str(last["error"]),
        failed_steps=len({int(r["step"]) for r in rows if r["status"] == "failed" and not is_null(r.get("step"))}),
    )


def _na_last(value: Any) -> tuple[bool, Any]:
    return (True, 0) if is_null(value) else (False, value)


def _plain(value):
    """pandas scalars (NA, numpy types) to plain Python, for PipelineConfig.from_dict."""
    if value is pd.NA or value is None:
        return None
    return value.item() if hasattr(value, "item") else value
