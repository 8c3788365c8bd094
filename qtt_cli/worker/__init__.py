"""The finetuning worker: trains a pipeline a few epochs at a time, in process, with exact continuation."""

from .checkpoint import best_paths, epoch_path, epochs_on_disk, load_epoch, pipeline_dir
from .freezing import FreezePlan, apply_freezing, head_parameter_names
from .recipe import build_loss, build_optimizer, build_scheduler, optimizer_kwargs
from .results import EpochResult, StepResult
from .seeding import stable_seed
from .worker import FinetuneWorker

__all__ = [
    "EpochResult",
    "FinetuneWorker",
    "FreezePlan",
    "StepResult",
    "apply_freezing",
    "best_paths",
    "build_loss",
    "build_optimizer",
    "build_scheduler",
    "epoch_path",
    "epochs_on_disk",
    "head_parameter_names",
    "load_epoch",
    "optimizer_kwargs",
    "pipeline_dir",
    "stable_seed",
]
