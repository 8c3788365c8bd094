"""The in-process executor: the tuner trains each step itself, one at a time (the default for one device).

``submit`` only remembers the step and ``wait`` runs it, so the loop ask → train → record happens in exactly
the order of the sequential tuner, with the same worker object: a run with this executor is identical to a
run of the tuner before executors existed. Ctrl-C raises inside the step, as it always did.
"""

from __future__ import annotations

import time

from qtt_cli.execution.base import Executor, Finished, StepTask

__all__ = ["InProcessExecutor"]


class InProcessExecutor(Executor):
    """Runs steps on ``worker`` (a ``FinetuneWorker``) in the calling thread."""

    name = "in-process"

    def __init__(self, worker) -> None:
        self.worker = worker
        self._pending: StepTask | None = None
        self._last_done: float | None = None
        self.idle_s: list[float] = []  # between a step's end and the next step's start (recording, asking)

    @property
    def capacity(self) -> int:
        return 1

    @property
    def in_flight(self) -> int:
        return 0 if self._pending is None else 1

    def submit(self, task: StepTask) -> None:
        if self._pending is not None:
            raise RuntimeError("the in-process executor runs one step at a time")
        self._pending = task

    def wait(self, timeout: float | None = None) -> list[Finished]:
        task, self._pending = self._pending, None
        if task is None:
            return []
        if self._last_done is not None:
            self.idle_s.append(time.monotonic() - self._last_done)
        result = self.worker.step(task.pipeline_id, task.config, task.start_epoch, task.end_epoch,
                                  deadline=task.deadline())  # fmt: skip
        self._last_done = time.monotonic()
        return [Finished(task, result)]

    def cancel(self) -> None:
        self._pending = None
