"""What the tuner tells the outside world while it runs.

The tuner knows nothing about terminals: it calls a :class:`Reporter`, and the CLI decides whether
that becomes a rich live display, plain log lines or nothing (``--json``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class StepEvent:
    step: int
    pipeline_id: str
    model: str
    start_epoch: int
    end_epoch: int
    status: str
    val_top1: float | None
    cost_s: float
    error: str | None
    best_pipeline: str | None
    best_val_top1: float | None
    used_s: float
    budget_s: float


@dataclass(frozen=True)
class TuneSummary:
    """The outcome of a `qtt tune` session (also what ``--json`` prints)."""

    run_dir: Path
    reason: str  # budget | max_steps | exhausted | interrupted
    steps: int
    pipelines: int
    failed_pipelines: int
    used_s: float
    budget_s: float
    best_pipeline: str | None
    best_model: str | None
    best_val_top1: float | None
    best_epoch: int | None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["run_dir"] = str(self.run_dir)
        return data


class Reporter(Protocol):
    def prepared(self, info: dict[str, Any]) -> None: ...
    def step_started(self, step: int, pipeline_id: str, model: str, start: int, end: int) -> None: ...
    def step_finished(self, event: StepEvent) -> None: ...
    def finished(self, summary: TuneSummary) -> None: ...
    def message(self, text: str) -> None: ...


class SilentReporter:
    """For library use and tests."""

    def prepared(self, info: dict[str, Any]) -> None:
        pass

    def step_started(self, step: int, pipeline_id: str, model: str, start: int, end: int) -> None:
        pass

    def step_finished(self, event: StepEvent) -> None:
        pass

    def finished(self, summary: TuneSummary) -> None:
        pass

    def message(self, text: str) -> None:
        pass
