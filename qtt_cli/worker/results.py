"""What one freeze-thaw step reports back to the tuner.

Small frozen records instead of dicts, so that the tuner, the store and the reports agree on field names, and
a failed or cut step is described as honestly as a successful one: the epochs that really completed, with
their real cost, and the reason it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Status = Literal["ok", "failed", "diverged", "interrupted"]


@dataclass(frozen=True)
class EpochResult:
    """One completed epoch.

    Args:
        epoch: number of epochs completed after this one (1 = the first epoch), as in the checkpoint name.
        val_top1: validation top-1 accuracy in percent (0-100), as in the Quick-Tune meta-dataset.
        val_loss: mean validation cross-entropy.
        train_loss: mean training loss of the epoch (under mixup/smoothing the loss actually minimised).
        cost_s: wall-clock seconds of training plus evaluation of this epoch.
    """

    epoch: int
    val_top1: float
    val_loss: float
    train_loss: float
    cost_s: float


@dataclass(frozen=True)
class StepResult:
    """The outcome of ``FinetuneWorker.step``.

    ``epochs`` lists only completed epochs (each one has a checkpoint). ``error`` is ``None`` for ``ok`` and
    ``interrupted``; for ``failed`` it is ``"ExceptionType: message"``; for ``diverged`` it says where.
    ``notes`` are facts worth showing a user (e.g. "amp requested but not used on CPU").
    ``overhead_s``: seconds of the step outside its epochs' ``cost_s`` (model build or restore, DELTA's
    attention, Co-Tuning's relationship, checkpoint writes, out-of-memory retries, an epoch cut at the
    deadline), so that ``overhead_s + sum(cost_s)`` is the step's wall time.
    """

    pipeline_id: str
    epochs: list[EpochResult]
    status: Status
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    overhead_s: float = 0.0

    @property
    def last_epoch(self) -> int | None:
        return self.epochs[-1].epoch if self.epochs else None
