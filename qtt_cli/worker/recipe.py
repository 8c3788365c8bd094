"""How a PipelineConfig becomes an optimizer, an LR schedule, a loss and a mixup function.

Every hyperparameter of the configuration is passed explicitly to timm's factories here, in one place,
because the predecessor tool silently dropped some (momentum and Adam betas never reached training). Two timm
defaults are overridden on purpose:

* timm's ``sgd`` is SGD with Nesterov momentum 0.9; Quick-Tune's ``sgd`` is plain SGD (momentum 0, no
  Nesterov), and ``momentum`` is classical momentum with the configured value.
* the schedule always spans ``max_epochs`` (the tuner's maximum fidelity), not the epochs of the current
  step, so a run that is paused and continued sees the same learning rates as one that never paused.

``multistep`` decays by ``decay_rate`` at milestones ``decay_epochs, 2 * decay_epochs, ...`` below
``max_epochs`` (the configuration has no separate milestone list, as in the Quick-Tune meta-dataset). timm
counts milestones one epoch earlier than ``step`` (bisect on ``epoch + 1``), so with equal ``decay_epochs``
multistep decays one epoch before step; both are timm's own semantics, kept as they are.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.scheduler.scheduler import Scheduler
from torch import nn

from qtt_cli.space.config import ADAM_LIKE, PipelineConfig


def optimizer_kwargs(config: PipelineConfig) -> dict:
    """Keyword arguments for ``timm.optim.create_optimizer_v2`` (everything except the model)."""
    kwargs: dict = {"lr": config.lr, "weight_decay": config.weight_decay, "layer_decay": config.layer_decay}
    if config.opt == "sgd":
        kwargs.update(opt="sgd", momentum=0.0, nesterov=False)
    elif config.opt == "momentum":
        kwargs.update(opt="momentum", momentum=float(config.momentum), nesterov=False)
    elif config.opt in ADAM_LIKE:
        kwargs.update(opt=config.opt, betas=config.betas)
    else:  # PipelineConfig validates opt; this guards a new choice added there but not here
        raise ValueError(f"optimizer {config.opt!r} is not supported by the worker")
    return kwargs


def build_optimizer(model: nn.Module, config: PipelineConfig) -> torch.optim.Optimizer:
    """The optimizer over the trainable parameters (timm skips ``requires_grad=False`` ones)."""
    return create_optimizer_v2(model, **optimizer_kwargs(config))


def build_scheduler(optimizer: torch.optim.Optimizer, config: PipelineConfig, max_epochs: int) -> Scheduler:
    """The per-epoch LR schedule over ``max_epochs``; ``plateau`` watches validation top-1 (mode ``max``)."""
    decay_epochs = config.decay_epochs if config.decay_epochs is not None else 90
    milestones = list(range(decay_epochs, max_epochs, decay_epochs)) or [max_epochs]
    with warnings.catch_warnings():
        # timm deprecates PlateauLRScheduler; Quick-Tune's space has it
        warnings.simplefilter("ignore", FutureWarning)
        scheduler, _ = create_scheduler_v2(
            optimizer,
            sched=config.sched,
            num_epochs=max_epochs,
            decay_epochs=decay_epochs,
            decay_milestones=milestones,
            patience_epochs=config.patience_epochs if config.patience_epochs is not None else 10,
            decay_rate=config.decay_rate if config.decay_rate is not None else 0.1,
            warmup_lr=config.warmup_lr,
            warmup_epochs=config.warmup_epochs,
            plateau_mode="max",
            step_on_epochs=True,
        )
    _set_first_epoch_lr(scheduler, optimizer, config)
    return scheduler


def _set_first_epoch_lr(scheduler: Scheduler, optimizer: torch.optim.Optimizer, config: PipelineConfig) -> None:
    """Give every group its epoch-0 LR, layer-decay scale included.

    timm multiplies a group's LR by its ``lr_scale`` (layer decay) only when the schedule sets the LR: at creation
    with warm-up, otherwise at the first ``step``, which comes after epoch 1 -- so epoch 1 would train every layer
    at the base LR. Fixed schedules are functions of the epoch, so stepping to epoch 0 sets exactly that LR; the
    plateau schedule's ``step(0)`` would mean warm-up to LR 0 (timm treats epoch 0 as the end of an empty
    warm-up), so without warm-up it is scaled here.
    """
    if config.sched != "plateau":
        scheduler.step(0)
    elif not config.warmup_epochs:
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * group.get("lr_scale", 1.0)


def scheduler_state(scheduler: Scheduler) -> dict:
    """The schedule's own state. The fixed schedules are functions of the epoch (their LR lives in the
    optimizer state); the plateau schedule also counts epochs without improvement, which timm's
    ``state_dict`` omits."""
    inner = getattr(scheduler, "lr_scheduler", None)
    if isinstance(inner, torch.optim.lr_scheduler.ReduceLROnPlateau):
        return {"plateau": {k: v for k, v in inner.state_dict().items() if _primitive(v)}}
    return {}


def load_scheduler_state(scheduler: Scheduler, state: dict) -> None:
    if "plateau" in state:
        scheduler.lr_scheduler.__dict__.update(state["plateau"])


def _primitive(value: object) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_primitive(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


@dataclass(frozen=True)
class LossRecipe:
    """The training loss and the optional mixup/cutmix function (applied to each batch before the forward)."""

    train_loss: nn.Module
    mixup: Mixup | None


def build_loss(config: PipelineConfig, num_classes: int) -> LossRecipe:
    """Mixup/cutmix with soft targets when active, else label smoothing or plain cross-entropy.

    Mixup is active when ``mixup`` or ``cutmix`` is > 0 and ``mixup_prob`` > 0; it then also applies the label
    smoothing (timm's convention).
    """
    if (config.mixup > 0 or config.cutmix > 0) and config.mixup_prob > 0:
        mixup = Mixup(
            mixup_alpha=config.mixup,
            cutmix_alpha=config.cutmix,
            prob=config.mixup_prob,
            label_smoothing=config.smoothing,
            num_classes=num_classes,
        )
        return LossRecipe(SoftTargetCrossEntropy(), mixup)
    if config.smoothing > 0:
        return LossRecipe(LabelSmoothingCrossEntropy(smoothing=config.smoothing), None)
    return LossRecipe(nn.CrossEntropyLoss(), None)


def mix_batch(mixup: Mixup, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply ``mixup`` to a batch of any size: timm's Mixup needs an even batch, so an odd last sample is left
    unmixed (its target is only label-smoothed)."""
    from timm.data.mixup import mixup_target

    if len(x) % 2 == 0:
        return mixup(x, y)
    if len(x) == 1:
        return x, mixup_target(y, mixup.num_classes, 1.0, mixup.label_smoothing)
    x_even, t_even = mixup(x[:-1], y[:-1])
    t_last = mixup_target(y[-1:], mixup.num_classes, 1.0, mixup.label_smoothing)
    return torch.cat([x_even, x[-1:]]), torch.cat([t_even, t_last])


