"""Hard views (HVP, "Pretraining with Hard Views", Ferreira et al.) for supervised finetuning.

HVP draws N augmented views of every training image and trains on the view the current model finds hardest.
Here, per training step: the data pipeline delivers ``[B, N, C, H, W]`` (``qtt_cli.data.views``: N random
augmentations of the one cached image, no second decode); one forward pass over all B*N views, without
gradient and in evaluation mode, scores each view by its per-sample cross-entropy (float32) against the
image's label; the highest-loss view of each image is kept; then the worker's normal step runs on the kept
views (mixup/cutmix are applied after selection, so that they mix hard views).

Evaluation mode matters: the reference code scored in train mode, so BatchNorm running statistics saw N*B
images and were updated twice per step, and dropout made the scores noisy. Every module's own train/eval flag
is restored afterwards (frozen normalisation layers stay in eval mode).

``every = k`` selects only on every k-th training step (the others train on the first view, an ordinary random
augmentation), bounding the extra forward cost; the step counter is part of the checkpointed state, so
freeze-thaw continuation selects on the same steps as an uninterrupted run.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..extensions import Extension, ExtensionContext, register_extension


@contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[None]:
    """``model.eval()`` for the duration, then every submodule's own training flag back."""
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training


def view_losses(model: nn.Module, views: torch.Tensor, labels: torch.Tensor, use_amp: bool = False) -> torch.Tensor:
    """Per-view cross-entropy ``[B, N]`` (float32) of ``views`` ``[B, N, C, H, W]``, in one forward pass without
    gradient in evaluation mode."""
    b, n = views.shape[:2]
    with torch.no_grad(), evaluation_mode(model), torch.autocast(views.device.type, dtype=torch.float16,
                                                                  enabled=use_amp):
        logits = model(views.flatten(0, 1))
    loss = F.cross_entropy(logits.float(), labels.repeat_interleave(n), reduction="none")
    return loss.view(b, n)


def select_hardest(views: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
    """The view of each image with the highest loss: ``views[i, argmax_k losses[i, k]]``, ``[B, C, H, W]``."""
    hardest = losses.argmax(dim=1)
    return views[torch.arange(len(views), device=views.device), hardest]


class HardViewSelection(Extension):
    """Keeps the hardest of ``views`` augmented views of each image (see the module docstring)."""

    def __init__(self, views: int, every: int = 1, use_amp: bool = False) -> None:
        if views < 1 or every < 1:
            raise ValueError(f"need views >= 1 and every >= 1, got views={views}, every={every}")
        self.views_per_image = views
        self.every = every
        self.use_amp = use_amp
        self.steps = 0  # training steps seen, for ``every``

    def select_inputs(self, model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if inputs.ndim == 4:  # one view per image (a loader without views)
            inputs = inputs[:, None]
        if inputs.ndim != 5:
            raise ValueError(f"hard-view selection needs [B, views, C, H, W] inputs, got {tuple(inputs.shape)}")
        step, self.steps = self.steps, self.steps + 1
        if step % self.every != 0:
            return inputs[:, 0]
        return select_hardest(inputs, view_losses(model, inputs, labels, self.use_amp))

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])


@register_extension("hvp")
def _hvp(context: ExtensionContext) -> HardViewSelection | None:
    config = context.config
    if config.hvp_views <= 1:
        return None
    return HardViewSelection(config.hvp_views, config.hvp_every or 1,
                             use_amp=config.amp and context.device.type == "cuda")
