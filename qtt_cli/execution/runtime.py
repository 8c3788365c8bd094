"""The worker side of every executor: build a ``FinetuneWorker`` from a :class:`WorkerSpec` and run tasks on it.

Runs inside a worker process (local executor) or a Ray actor. The worker object lives as long as the process,
so the decoded-image cache stays mapped and the timm/torch imports are paid once, not once per step.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from qtt_cli.execution.base import StepTask, WorkerSpec, disk_full_to_dict, result_to_dict
from qtt_cli.store.files import DiskFullError

__all__ = ["build_worker", "configure_threads", "run_task"]


def configure_threads(threads: int | None) -> None:
    """Pin torch's (and the BLAS libraries') thread pools to ``threads``: N workers on one machine then split
    its cores instead of each spawning one thread per core (oversubscription makes N workers slower than one)."""
    if not threads:
        return
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    import torch

    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # already set, or parallel work already ran in this process
        torch.set_num_interop_threads(1)


def build_worker(spec: WorkerSpec):
    """The ``FinetuneWorker`` of ``spec``: the run's cache mapped read-only, checkpoints in the run directory."""
    from qtt_cli.data import open_cache
    from qtt_cli.hub import parse_weights
    from qtt_cli.worker import FinetuneWorker

    configure_threads(spec.threads)
    root = Path(spec.run_dir)
    return FinetuneWorker(
        open_cache(root / "cache"),
        parse_weights(spec.weights),
        root / "checkpoints",
        max_epochs=spec.max_epochs,
        max_input_size=spec.max_input_size,
        device=spec.device,
        seed=spec.seed,
        num_workers=spec.num_workers,
    )


def run_task(worker, task: dict[str, Any]) -> dict[str, Any]:
    """Run one step (a ``StepTask`` as a dict) and return its result as a dict; never raises for a bad pipeline
    (``FinetuneWorker.step`` turns that into a failed result), nor for a full disk (sent as ``disk_full_to_dict``:
    a worker process that died of it would be replaced and the budget would burn on the same full disk)."""
    step = StepTask.from_dict(task)
    try:
        result = worker.step(step.pipeline_id, step.config, step.start_epoch, step.end_epoch, deadline=step.deadline())
    except DiskFullError as e:  # the run's problem, not the pipeline's: the tuner stops the run (result_from_dict)
        return disk_full_to_dict(e)
    return result_to_dict(result)
