"""The Ray executor: steps on Ray actors, on this machine or a cluster (``--executor ray [--address A]``).

Each slot is a long-lived actor (one per ``--workers`` or per GPU, with ``num_cpus`` threads or ``num_gpus=1``)
that builds its ``FinetuneWorker`` once from the run directory as the cluster sees it (``--storage``: the same
directory on a shared file system; by default the run directory itself, which is right when the cluster is this
machine). The tuner stays the only writer of the results store and the only caller of the optimizer: actors
return plain dicts, nothing else flows back. Ray is imported here only, when ``--executor ray`` is asked for.

Faults are handled as in the local executor: an actor that dies with a step in flight (its process killed, its
node lost) gives a failed "worker died" result and is replaced. When the tuner dies, Ray ends the job's
(non-detached) actors; a Ray instance the tuner started itself goes down with it.
"""

from __future__ import annotations

import os
import time
from typing import Any

from qtt_cli.execution.base import (
    Executor,
    ExecutorError,
    Finished,
    StepTask,
    WorkerSpec,
    died,
    pick_worker,
    result_from_dict,
)

__all__ = ["RayExecutor"]

STARTUP_TIMEOUT_S = 600.0


class _StepActor:
    """The body of a Ray actor: one ``FinetuneWorker`` kept for the actor's lifetime."""

    def __init__(self, spec: dict[str, Any]) -> None:
        from qtt_cli.execution.runtime import build_worker

        self.worker = build_worker(WorkerSpec(**spec))
        self.last_done: float | None = None

    def pid(self) -> int:
        return os.getpid()

    def step(self, task: dict[str, Any]) -> tuple[dict[str, Any], float | None]:
        from qtt_cli.execution.runtime import run_task

        idle = None if self.last_done is None else time.monotonic() - self.last_done
        result = run_task(self.worker, task)
        self.last_done = time.monotonic()
        return result, idle


class RayExecutor(Executor):
    """Steps on ``workers`` Ray actors.

    Args:
        spec: how each actor builds its worker (``run_dir`` as the cluster's nodes see it).
        workers: number of actors (steps in flight).
        gpus: one GPU per actor (``num_gpus=1``) instead of CPU threads.
        address: ``None`` starts a Ray instance on this machine (loopback only) and shuts it down at the end;
            ``auto`` or ``HOST:PORT`` joins a running cluster, which is left running.
        threads: CPUs per actor (default: this machine's cores split over the workers).
    """

    name = "ray"

    def __init__(self, spec: WorkerSpec, *, workers: int, gpus: bool = False, address: str | None = None,
                 threads: int | None = None, on_event=None) -> None:  # fmt: skip
        if workers < 1:
            raise ValueError("at least one worker")
        self.spec = spec
        self.workers = workers
        self.gpus = gpus
        self.address = address
        self.threads = threads or max(1, (os.cpu_count() or 1) // workers)
        self.on_event = on_event or (lambda message: None)
        self.idle_s: list[float] = []
        self.pids: dict[Any, int] = {}  # actor -> its process id (logs, tests)
        self.busy: dict[Any, StepTask] = {}  # actor -> its step in flight
        self._ray = None
        self._actor_class = None
        self._owns_ray = False
        self._free: list[Any] = []  # actors ready for a step
        self._last_pipeline: dict[Any, str] = {}  # actor -> the pipeline it keeps in memory (worker/warm.py)
        self._running: dict[Any, tuple[Any, StepTask]] = {}  # object ref -> (actor, task)
        self._starting: dict[Any, Any] = {}  # ready() ref -> actor being (re)built
        self._started = False

    # ------------------------------------------------------------------ interface

    @property
    def capacity(self) -> int:
        return self.workers

    @property
    def in_flight(self) -> int:
        return len(self._running)

    @property
    def free_slots(self) -> int:
        return len(self._free)

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        if self.address is None or _loopback(self.address):
            # a Ray on this machine only: its node (and this driver) on the loopback address, not the machine's IP
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        ray = self._ray = _import_ray()
        if not ray.is_initialized():
            if self.address is None:
                ray.init(num_cpus=self.workers * self.threads, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)  # fmt: skip
            else:
                ray.init(address=self.address, log_to_driver=False, configure_logging=False)
            self._owns_ray = True
        self.on_event(f"ray: {'local instance on 127.0.0.1' if self.address is None else self.address}, "
                      f"{self.workers} actor(s)")  # fmt: skip
        resources = {"num_gpus": 1, "num_cpus": 1} if self.gpus else {"num_cpus": self.threads}
        self._actor_class = ray.remote(max_restarts=0, max_task_retries=0, **resources)(_StepActor)
        for _ in range(self.workers):
            self._spawn()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while self._starting:
            if time.monotonic() > deadline:
                self.close()
                raise ExecutorError(f"Ray actors did not start within {STARTUP_TIMEOUT_S:.0f} s (not enough "
                                    "resources on the cluster?)")  # fmt: skip
            self._collect_started(timeout=1.0, strict=True)

    def submit(self, task: StepTask) -> None:
        if not self._free:
            raise RuntimeError("no free worker (submit only while free_slots > 0)")
        actor = pick_worker(self._free, task.pipeline_id, self._last_pipeline.get)
        self._free.remove(actor)
        self._last_pipeline[actor] = task.pipeline_id
        self._running[actor.step.remote(task.to_dict())] = (actor, task)
        self.busy[actor] = task

    def wait(self, timeout: float | None = None) -> list[Finished]:
        ray = self._ray
        if self._starting:
            self._collect_started(timeout=0)
        if not self._running:
            if self._starting:
                self._collect_started(timeout=timeout)
            return []
        ready, _ = ray.wait(list(self._running), num_returns=1, timeout=timeout)
        if ready:  # everything else that is ready too
            ready, _ = ray.wait(list(self._running), num_returns=len(self._running), timeout=0)
        finished = []
        for ref in ready:
            actor, task = self._running.pop(ref)
            self.busy.pop(actor, None)
            try:
                payload, idle = ray.get(ref)
            except ray.exceptions.RayActorError as e:
                finished.append(Finished(task, died(task, f"Ray actor lost ({type(e).__name__})"), "ray"))
                self.on_event(f"ray actor died with {task.pipeline_id}; starting a new one")
                self._spawn()
                continue
            except ray.exceptions.RayError as e:  # the task itself raised: a bug, reported as the step's failure
                from qtt_cli.worker.results import StepResult

                finished.append(Finished(task, StepResult(task.pipeline_id, [], "failed", f"{type(e).__name__}: {e}"),
                                         "ray"))  # fmt: skip
                self._free.append(actor)
                continue
            if idle is not None:
                self.idle_s.append(float(idle))
            finished.append(Finished(task, result_from_dict(payload), "ray"))
            self._free.append(actor)
        return finished

    def cancel(self) -> None:
        for actor, _ in self._running.values():
            self._ray.kill(actor, no_restart=True)
        self._running.clear()

    def close(self) -> None:
        if self._ray is None:
            return
        self.cancel()
        for actor in [*self._free, *self._starting.values()]:
            self._ray.kill(actor, no_restart=True)
        self._free, self._starting = [], {}
        if self._owns_ray:
            self._ray.shutdown()
            self._owns_ray = False
        self._ray = None

    # ------------------------------------------------------------------ internals

    def _spawn(self) -> None:
        spec = {**self.spec.to_dict(), "threads": None if self.gpus else self.threads}
        actor = self._actor_class.remote(spec)
        self._starting[actor.pid.remote()] = actor

    def _collect_started(self, timeout: float | None, strict: bool = False) -> None:
        ray = self._ray
        ready, _ = ray.wait(list(self._starting), num_returns=len(self._starting), timeout=timeout)
        for ref in ready:
            actor = self._starting.pop(ref)
            try:
                pid = ray.get(ref)
            except ray.exceptions.RayError as e:
                raise ExecutorError(f"a Ray worker could not start: {e}") from None
            self.on_event(f"ray actor (pid {pid}) ready")
            self.pids[actor] = pid
            self._free.append(actor)



def _loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1")


def _import_ray():
    try:
        import ray
    except ImportError:
        from qtt_cli.execution.factory import RAY_MISSING

        raise ExecutorError(RAY_MISSING) from None
    return ray
