"""The executor interface: where freeze-thaw steps run, behind three verbs (submit, wait, cancel).

After Syne Tune's backends (``start_trial`` / ``fetch_status_results`` / ``stop_trial``) and Ray Tune's trial
executor, cut down to what a freeze-thaw loop needs: the tuner submits a step when a slot is free, collects
the steps that finished (in the order they finished), and at the end of the search cancels what is still in
flight. The executor only runs steps; the tuner alone asks the optimizer and writes the store, so the store
never has two writers and the workers never learn that there are several of them.

A step that cannot report its own result (its worker process was killed, or crashed in native code) comes
back as a failed :class:`~qtt_cli.worker.StepResult` whose error starts with :data:`WORKER_DIED`; the
optimizers treat that error as transient (the pipeline is retried once from its last checkpoint).
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from qtt_cli.space.config import PipelineConfig
from qtt_cli.store.files import DiskFullError
from qtt_cli.worker.results import EpochResult, StepResult

__all__ = [
    "WORKER_DIED", "Executor", "ExecutorError", "Finished", "StepTask", "WorkerSpec", "pick_worker",
    "result_from_dict", "result_to_dict",
]

WORKER_DIED = "worker died"


class ExecutorError(RuntimeError):
    """The workers cannot be started or used as asked (a message meant for the user: exit code 2)."""


@dataclass(frozen=True)
class StepTask:
    """One freeze-thaw step to run: train ``pipeline_id`` from ``start_epoch`` to ``end_epoch``.

    ``time_left_s`` is the budget left when the step is submitted; the worker turns it into a deadline on its
    own clock (a relative time, so that a worker on another machine needs no synchronised clock), and past it
    the running epoch is cut and discarded.
    """

    pipeline_id: str
    config: PipelineConfig
    start_epoch: int
    end_epoch: int
    time_left_s: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"pipeline_id": self.pipeline_id, "config": self.config.to_dict(), "start_epoch": self.start_epoch,
                "end_epoch": self.end_epoch, "time_left_s": self.time_left_s}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepTask:
        return cls(data["pipeline_id"], PipelineConfig.from_dict(data["config"]), int(data["start_epoch"]),
                   int(data["end_epoch"]), data["time_left_s"])  # fmt: skip

    def deadline(self) -> float | None:
        """The step's deadline on this process's ``time.monotonic()`` clock."""
        return None if self.time_left_s is None else time.monotonic() + self.time_left_s


@dataclass(frozen=True)
class Finished:
    """A step that ended (in any way) and what it reported; ``worker`` names the slot it ran on."""

    task: StepTask
    result: StepResult
    worker: str = "in-process"


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to build its :class:`~qtt_cli.worker.FinetuneWorker`: plain values, so that a worker
    in another process or on another machine builds the same one from the run directory.

    Args:
        run_dir: the run directory as the worker sees it (its ``cache/`` is mapped, ``checkpoints/`` written).
        weights: the ``--weights`` text.
        max_epochs, max_input_size, seed, num_workers: as in ``FinetuneWorker``.
        device: torch device inside the worker (``None``: CUDA when visible, else CPU).
        threads: torch intra-op threads of the worker (``None``: torch's default); set explicitly so that N
            workers on one machine split its cores instead of each using all of them.
    """

    run_dir: str
    weights: str
    max_epochs: int
    max_input_size: int | None
    seed: int
    num_workers: int = 0
    device: str | None = None
    threads: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def result_to_dict(result: StepResult) -> dict[str, Any]:
    """A step result as plain JSON-able values (what crosses a process or machine boundary); every field of
    ``StepResult`` and ``EpochResult``, so that a field added to them travels without a change here."""
    return asdict(result)


DISK_FULL = "disk_full"  # the key of what a worker sends instead of a result when the disk is full


def result_from_dict(data: dict[str, Any]) -> StepResult:
    """The step result a worker sent; raises ``DiskFullError`` in the tuner where the worker found the disk full
    (``disk_full_to_dict``), so that the tuner stops the run with exit 2 as it does with one in-process worker,
    instead of recording a failed pipeline and trying the next on a disk that is still full."""
    if DISK_FULL in data:
        raise DiskFullError(data[DISK_FULL])
    return StepResult(**{**data, "epochs": [EpochResult(**e) for e in data["epochs"]]})


def disk_full_to_dict(error: DiskFullError) -> dict[str, Any]:
    """What a worker sends instead of a result when a write of its step found the disk full: not the
    pipeline's fault, and the previous checkpoint is intact."""
    return {DISK_FULL: str(error.path)}


def pick_worker(free: list, pipeline_id: str, last_pipeline: Callable[[Any], str | None]) -> Any:
    """The free worker whose last step was ``pipeline_id`` (it continues the pipeline from memory instead of
    its checkpoint: ``qtt_cli/worker/warm.py``), else the first free one. Only where a step runs changes,
    never its result."""
    return next((w for w in free if last_pipeline(w) == pipeline_id), free[0])


def died(task: StepTask, why: str) -> StepResult:
    """The result of a step whose worker vanished without reporting: failed, no epoch recorded (the epochs it
    may have completed are not trusted: the tuner never saw them; the pipeline's last recorded checkpoint is
    where a retry continues from)."""
    return StepResult(task.pipeline_id, [], "failed", f"{WORKER_DIED}: {why}")


class Executor(abc.ABC):
    """Runs freeze-thaw steps on ``capacity`` slots (worker processes, GPUs, Ray actors, or the tuner itself)."""

    name: str = "executor"

    @property
    @abc.abstractmethod
    def capacity(self) -> int:
        """How many steps may be in flight at once."""

    @property
    @abc.abstractmethod
    def in_flight(self) -> int:
        """Steps submitted and not yet collected."""

    @property
    def free_slots(self) -> int:
        """Slots ready for a step now (a worker being replaced is not)."""
        return self.capacity - self.in_flight

    def start(self) -> None:  # noqa: B027 -- optional hook
        """Bring the workers up (before the budget starts); idempotent."""

    @abc.abstractmethod
    def submit(self, task: StepTask) -> None:
        """Start ``task`` on a free slot (call only while ``in_flight < capacity``)."""

    @abc.abstractmethod
    def wait(self, timeout: float | None = None) -> list[Finished]:
        """Steps that finished, waiting up to ``timeout`` seconds for at least one (``None``: until one does).
        May return an empty list on timeout."""

    @abc.abstractmethod
    def cancel(self) -> None:
        """Cut every step in flight now; their results are discarded (as the step in flight on Ctrl-C)."""

    def close(self) -> None:  # noqa: B027 -- optional hook
        """Stop the workers; idempotent. Steps still in flight are cancelled."""

    def __enter__(self) -> Executor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
