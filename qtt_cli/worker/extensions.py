"""Training-only additions to a pipeline: the one hook through which regularisers and training methods plug in.

Several finetuning strategies of the Quick-Tune space (SP/DELTA/BSS regularisation, Co-Tuning) and the
training methods SPG and HVP change *how a batch is trained* without changing the model that is evaluated
and exported. Each is an :class:`Extension`: it may choose the inputs (HVP picks hard views), add a loss term
(computed from the batch's features, pre-logits and logits), own extra parameters (SPG's modules), and
carry state across freeze-thaw steps (reference weights, a relationship matrix). The worker trains with the
sum of the base loss and every extension's term, adds their parameters to the optimizer, and saves their
state in the pipeline's checkpoint -- it knows nothing about any particular strategy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from qtt_cli.space.config import PipelineConfig


@dataclass
class TrainBatch:
    """One training batch as the loss terms see it.

    ``features`` is ``model.forward_features(inputs)`` and ``logits`` is ``model.forward_head(features)``
    (exactly ``model(inputs)`` for timm models). ``pre_logits()`` is the pooled representation the classifier
    reads, computed on first use.
    """

    model: nn.Module
    inputs: torch.Tensor  # after view selection and mixup/cutmix
    labels: torch.Tensor  # hard labels of the un-mixed images
    targets: torch.Tensor  # what the base loss compares to (soft after mixup)
    features: torch.Tensor
    logits: torch.Tensor
    _pre_logits: torch.Tensor | None = field(default=None, repr=False)

    def pre_logits(self) -> torch.Tensor:
        if self._pre_logits is None:
            self._pre_logits = self.model.forward_head(self.features, pre_logits=True)
        return self._pre_logits


class Extension:
    """Base class: every hook is optional and does nothing by default.

    Two class attributes ask the worker for more than a hook can do:

    * ``views_per_image``: the training loader delivers that many augmented views of each image, as
      ``[B, views, C, H, W]``; ``select_inputs`` must reduce them to ``[B, C, H, W]``. With several
      extensions the largest count wins.
    * ``cold_start_epochs``: epochs to train with learning rate 0 before the first epoch of a new pipeline
      (optimizer cold start; the worker documents how they are counted).
    """

    name: str = "extension"
    views_per_image: int = 1
    cold_start_epochs: int = 0

    def parameters(self) -> Iterable[nn.Parameter]:
        """Extra trainable parameters (added to the optimizer as their own group)."""
        return ()

    def to(self, device: torch.device) -> Extension:
        return self

    def select_inputs(self, model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Choose the images to train on before mixup (inputs may carry several views per image)."""
        return inputs

    def loss(self, batch: TrainBatch) -> torch.Tensor | None:
        """An extra loss term added to the base loss, or None."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """Tensors/primitives to keep across freeze-thaw steps (saved with ``weights_only``-safe types)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


@dataclass(frozen=True)
class ExtensionContext:
    """What an extension may need when it is created for a pipeline."""

    config: PipelineConfig
    model: nn.Module  # the model being finetuned (already on its device)
    num_classes: int
    device: torch.device
    reference_model: Callable[[], nn.Module]  # builds the pipeline's *initial* (pretrained) model, lazily
    train_loader: Callable[[], torch.utils.data.DataLoader]  # a loader over the training split, plain transform
    resumed: bool  # True when the step continues from a checkpoint (state is then loaded after creation)
    # the initial model with the classifier of its source task (e.g. ImageNet's 1000 classes), frozen, or
    # (None, why not) when the weights have none (random weights, no classifier in the file)
    source_model: Callable[[], tuple[nn.Module | None, str]] = lambda: (None, "no source model available")
    note: Callable[[str], None] = lambda text: None  # adds a line to the step's StepResult.notes


ExtensionFactory = Callable[[ExtensionContext], "Extension | None"]

# Factories, in the order their loss terms are added. Each returns None when its config switch is off.
_FACTORIES: list[tuple[str, ExtensionFactory]] = []


def register_extension(name: str) -> Callable[[ExtensionFactory], ExtensionFactory]:
    """Decorator: register a factory under ``name`` (its checkpoint key)."""

    def add(factory: ExtensionFactory) -> ExtensionFactory:
        if any(existing == name for existing, _ in _FACTORIES):
            raise ValueError(f"extension {name!r} registered twice")
        _FACTORIES.append((name, factory))
        return factory

    return add


def build_extensions(context: ExtensionContext) -> list[Extension]:
    """The extensions ``context.config`` switches on, in registration order."""
    built = []
    for name, factory in _FACTORIES:
        extension = factory(context)
        if extension is not None:
            extension.name = name
            built.append(extension.to(context.device))
    return built


def registered() -> Sequence[str]:
    return [name for name, _ in _FACTORIES]
