"""The local-process executor: long-lived worker processes on this machine, one step at a time each.

``--workers N`` starts N CPU workers that split the cores (each gets ``cores // N`` torch threads and, where
the OS allows, its own set of cores); ``--devices 0,1`` starts one worker per GPU, pinned to it with
``CUDA_VISIBLE_DEVICES`` before CUDA is initialised. A worker builds its ``FinetuneWorker`` once: the decoded
images stay mapped and torch/timm stay imported between steps. Workers are started with ``spawn`` (a forked
copy of a process that already runs torch's thread pools can deadlock).

Faults:

- A worker that dies mid-step (killed, segfault, out of host memory) is noticed through its process sentinel;
  its step comes back failed with "worker died: ..." and a fresh worker takes its slot.
- A worker watches its parent: ``PR_SET_PDEATHSIG`` (Linux) kills it with the tuner, and a watchdog thread
  exits when its parent process changes (other systems, or a parent that died before the call), so killing
  the tuner with ``kill -9`` leaves no orphan training on.
- Ctrl-C goes to the whole foreground process group; workers ignore it and the tuner cancels them.

Messages are plain dicts over a ``multiprocessing`` pipe (nothing is pickled into the run directory).
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
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

__all__ = ["ExecutorError", "LocalProcessExecutor", "Slot", "cpu_slots", "gpu_slots"]

_PR_SET_PDEATHSIG = 1
STARTUP_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Slot:
    """Where one worker runs: a name, environment variables it needs (``CUDA_VISIBLE_DEVICES``), the cores it
    may use (empty: any) and its torch thread count."""

    name: str
    env: dict[str, str] = field(default_factory=dict)
    cpus: tuple[int, ...] = ()
    threads: int | None = None
    device: str | None = None


def cpu_slots(workers: int, cpus: list[int] | None = None) -> list[Slot]:
    """``workers`` CPU slots splitting the usable cores evenly (at least one thread each)."""
    if workers < 1:
        raise ValueError("--workers must be >= 1")
    cpus = sorted(cpus if cpus is not None else _usable_cpus())
    per = max(1, len(cpus) // workers)
    slots = []
    for i in range(workers):
        mine = tuple(cpus[i * per:(i + 1) * per]) if workers <= len(cpus) else ()
        slots.append(Slot(f"cpu{i}", cpus=mine, threads=per, device="cpu"))
    return slots


def gpu_slots(devices: list[str], cpus: list[int] | None = None) -> list[Slot]:
    """One slot per GPU index, each seeing only its GPU (as ``cuda:0``); the cores are split for data work."""
    threads = max(1, len(cpus if cpus is not None else _usable_cpus()) // max(1, len(devices)))
    return [Slot(f"gpu{d}", env={"CUDA_VISIBLE_DEVICES": str(d)}, threads=threads, device="cuda") for d in devices]


def _usable_cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


class _Worker:
    """The tuner's handle on one worker process."""

    def __init__(self, slot: Slot, process, conn: Connection) -> None:
        self.slot = slot
        self.process = process
        self.conn = conn
        self.ready = False
        self.task: StepTask | None = None
        self.last_pipeline: str | None = None  # the pipeline its worker keeps in memory (worker/warm.py)
        self.pid: int | None = None
        self.started = time.monotonic()


class LocalProcessExecutor(Executor):
    """Steps on long-lived worker processes, one per :class:`Slot`.

    Args:
        spec: how each worker builds its ``FinetuneWorker``.
        slots: one worker per slot (``cpu_slots`` / ``gpu_slots``).
        on_event: optional ``(message)`` callback for worker starts and deaths (the tuner logs them).
    """

    name = "local"

    def __init__(self, spec: WorkerSpec, slots: list[Slot], on_event=None) -> None:
        if not slots:
            raise ValueError("at least one slot")
        self.spec = spec
        self.slots = list(slots)
        self.on_event = on_event or (lambda message: None)
        self._ctx = multiprocessing.get_context("spawn")
        self._workers: list[_Worker] = []
        self._started = False
        self.idle_s: list[float] = []  # per step after a worker's first: seconds between its result and next step

    # ------------------------------------------------------------------ interface

    @property
    def capacity(self) -> int:
        return len(self.slots)

    @property
    def in_flight(self) -> int:
        return sum(w.task is not None for w in self._workers)

    @property
    def free_slots(self) -> int:
        return sum(w.ready and w.task is None for w in self._workers)

    @property
    def pids(self) -> list[int]:
        """Process ids of the live workers (for tests and logs)."""
        return [w.process.pid for w in self._workers if w.process.is_alive()]

    def start(self) -> None:
        """Start every worker and wait until each has built its ``FinetuneWorker`` (before the budget starts)."""
        if self._started:
            return
        self._started = True
        self._workers = [self._spawn(slot) for slot in self.slots]
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not all(w.ready for w in self._workers):
            if time.monotonic() > deadline:
                self.close()
                raise ExecutorError(f"worker processes did not start within {STARTUP_TIMEOUT_S:.0f} s")
            self._poll(timeout=1.0, during_startup=True)

    def submit(self, task: StepTask) -> None:
        free = [w for w in self._workers if w.ready and w.task is None]
        if not free:
            raise RuntimeError("no free worker (submit only while free_slots > 0)")
        worker = pick_worker(free, task.pipeline_id, lambda w: w.last_pipeline)
        worker.task, worker.last_pipeline = task, task.pipeline_id
        # a worker that died between two steps: its sentinel reports it in wait() and the step comes back failed
        with contextlib.suppress(BrokenPipeError, OSError):
            worker.conn.send(("step", task.to_dict()))

    def wait(self, timeout: float | None = None) -> list[Finished]:
        return self._poll(timeout)

    def cancel(self) -> None:
        for w in self._workers:
            if w.task is not None:
                _kill(w.process)
                w.task = None
        self._workers = [w for w in self._workers if w.process.is_alive() or w.task is not None]

    def close(self) -> None:
        for w in self._workers:
            if w.task is None and w.process.is_alive():
                with contextlib.suppress(BrokenPipeError, OSError):
                    w.conn.send(("stop", None))
        end = time.monotonic() + 5.0
        for w in self._workers:
            if w.task is None:
                w.process.join(timeout=max(0.0, end - time.monotonic()))
            if w.process.is_alive():
                _kill(w.process)
            w.conn.close()
        self._workers = []

    # ------------------------------------------------------------------ internals

    def _spawn(self, slot: Slot) -> _Worker:
        parent, child = self._ctx.Pipe(duplex=True)
        spec = {**self.spec.to_dict(), "threads": slot.threads or self.spec.threads,
                "device": slot.device or self.spec.device}  # fmt: skip
        process = self._ctx.Process(
            target=worker_main, args=(child, spec, dict(slot.env), list(slot.cpus), os.getpid()),
            name=f"qtt-worker-{slot.name}", daemon=True,
        )  # fmt: skip
        process.start()
        child.close()
        return _Worker(slot, process, parent)

    def _poll(self, timeout: float | None, during_startup: bool = False) -> list[Finished]:
        watched: dict[Any, _Worker] = {}
        for w in self._workers:
            watched[w.conn] = w
            watched[w.process.sentinel] = w
        if not watched:
            return []
        ready = wait(list(watched), timeout)
        finished: list[Finished] = []
        seen: set[int] = set()
        for obj in ready:
            w = watched[obj]
            if id(w) in seen:
                continue
            seen.add(id(w))
            alive = self._drain(w, finished)
            if not alive:
                finished.extend(self._replace(w, during_startup))
        return finished

    def _drain(self, w: _Worker, finished: list[Finished]) -> bool:
        """Read every message of ``w``; False when its process is gone."""
        try:
            while w.conn.poll():
                kind, payload, *extra = w.conn.recv()
                if kind == "ready":
                    w.ready, w.pid = True, payload
                    self.on_event(f"worker {w.slot.name} (pid {payload}) ready in {time.monotonic() - w.started:.1f} s")
                elif kind == "result" and w.task is not None:
                    finished.append(Finished(w.task, result_from_dict(payload), w.slot.name))
                    w.task = None
                    if extra and extra[0] is not None:
                        self.idle_s.append(float(extra[0]))
                elif kind == "error":
                    raise ExecutorError(f"worker {w.slot.name} could not start: {payload}")
        except (EOFError, OSError):
            return False
        if not w.process.is_alive():
            w.process.join(timeout=1.0)
            return False
        return True

    def _replace(self, w: _Worker, during_startup: bool) -> list[Finished]:
        """A worker is gone: its step (if any) fails with "worker died", and a fresh worker takes the slot."""
        code = w.process.exitcode
        why = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        w.conn.close()
        self._workers.remove(w)
        if not w.ready and (during_startup or w.task is None):
            raise ExecutorError(f"worker {w.slot.name} exited while starting ({why})")
        lost = [Finished(w.task, died(w.task, f"{w.slot.name} ({why}) mid-step"), w.slot.name)] if w.task else []
        self.on_event(f"worker {w.slot.name} died ({why}); starting a new one")
        self._workers.append(self._spawn(w.slot))
        return lost


def _kill(process) -> None:
    if process.is_alive():
        process.kill()
    process.join(timeout=5.0)


# ---------------------------------------------------------------------- the worker process


def worker_main(conn: Connection, spec: dict[str, Any], env: dict[str, str], cpus: list[int], parent_pid: int) -> None:
    """Entry point of a worker process: build the worker once, then run steps until told to stop."""
    os.environ.update(env)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the tuner's to handle
    _die_with_parent(parent_pid)
    if cpus and hasattr(os, "sched_setaffinity"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, cpus)
    from qtt_cli.execution.runtime import build_worker, run_task

    try:
        worker = build_worker(WorkerSpec(**spec))
    except Exception as e:  # noqa: BLE001 -- reported to the tuner as a startup failure
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready", os.getpid()))
    last_done = None
    while True:
        try:
            kind, payload = conn.recv()
        except (EOFError, OSError):
            return  # the tuner is gone
        if kind == "stop":
            return
        # idle: from sending the previous result to receiving this step (the tuner's recording, asking, IPC)
        idle = None if last_done is None else time.monotonic() - last_done
        result = run_task(worker, payload)
        last_done = time.monotonic()
        conn.send(("result", result, idle))


def _die_with_parent(parent_pid: int) -> None:
    """Exit when the tuner dies: the kernel's parent-death signal where available, and a watchdog thread."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(0.5)

    threading.Thread(target=watch, name="qtt-parent-watch", daemon=True).start()
