"""Where freeze-thaw steps run: in the tuner's process, in local worker processes, or on a Ray cluster.

One small interface (:class:`Executor`: submit a step, collect finished steps, cancel at the deadline) used by
the tuner; the worker stays the thing that trains one step. Ray is imported only by ``--executor ray``.
"""

from qtt_cli.execution.base import (
    WORKER_DIED,
    Executor,
    ExecutorError,
    Finished,
    StepTask,
    WorkerSpec,
    result_from_dict,
    result_to_dict,
)
from qtt_cli.execution.factory import check_executor, make_executor, resolve_devices
from qtt_cli.execution.inprocess import InProcessExecutor

__all__ = [
    "WORKER_DIED",
    "Executor",
    "ExecutorError",
    "Finished",
    "InProcessExecutor",
    "StepTask",
    "WorkerSpec",
    "check_executor",
    "make_executor",
    "resolve_devices",
    "result_from_dict",
    "result_to_dict",
]
