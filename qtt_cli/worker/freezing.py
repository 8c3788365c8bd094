"""Which parameters a pipeline trains: partial freezing and linear probing.

Quick-Tune's ``pct_to_freeze`` freezes that share of the pretrained backbone, earliest layers first: early
layers hold generic features worth keeping, late ones are task specific. The share is measured in scalar
parameters and follows the model's own parameter order (``named_parameters``), which for timm models runs
from the stem to the last stage. The classifier head is new (randomly initialised for the target classes), so
it always trains; ``linear_probing`` trains only the head.

A normalisation layer whose parameters are all frozen also keeps its running statistics (it runs in eval mode
while the rest trains); otherwise "frozen" layers would still drift with the new data.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class FreezePlan:
    """The outcome of :func:`apply_freezing`.

    Args:
        frozen: names of the frozen parameters.
        head: names of the classifier parameters (always trained).
        backbone_numel: scalar parameters outside the head.
        frozen_numel: scalar parameters frozen.
        frozen_norms: names of the modules kept in eval mode during training.
    """

    frozen: tuple[str, ...]
    head: tuple[str, ...]
    backbone_numel: int
    frozen_numel: int
    frozen_norms: tuple[str, ...]

    @property
    def frozen_share(self) -> float:
        return self.frozen_numel / self.backbone_numel if self.backbone_numel else 0.0


def head_parameter_names(model: nn.Module) -> list[str]:
    """Names of the classifier parameters (timm's ``get_classifier()``, else
    ``pretrained_cfg['classifier']``)."""
    heads: list[nn.Module] = []
    if hasattr(model, "get_classifier"):
        found = model.get_classifier()
        heads = list(found) if isinstance(found, (tuple, list)) else [found]
    ids = {id(p) for h in heads if isinstance(h, nn.Module) for p in h.parameters()}
    names = [n for n, p in model.named_parameters() if id(p) in ids]
    if not names:
        prefix = (getattr(model, "pretrained_cfg", None) or {}).get("classifier")
        if prefix:
            names = [n for n, _ in model.named_parameters() if n.startswith(prefix + ".")]
    if not names:
        raise ValueError(f"cannot find the classifier head of {type(model).__name__} to keep it trainable")
    return names


def apply_freezing(model: nn.Module, pct_to_freeze: float, linear_probing: bool) -> FreezePlan:
    """Set ``requires_grad`` for partial freezing / linear probing and return what was frozen.

    The frozen prefix is the one whose size is closest to ``pct_to_freeze`` of the backbone (whole tensors
    only).
    """
    head = set(head_parameter_names(model))
    backbone = [(n, p) for n, p in model.named_parameters() if n not in head]
    total = sum(p.numel() for _, p in backbone)
    if linear_probing:
        count = len(backbone)
    else:
        target = pct_to_freeze * total
        cumulative, best_k, best_gap = 0, 0, target
        for k, (_, p) in enumerate(backbone, start=1):
            cumulative += p.numel()
            if abs(cumulative - target) < best_gap:
                best_k, best_gap = k, abs(cumulative - target)
        count = best_k
    frozen = backbone[:count]
    frozen_names = {n for n, _ in frozen}
    for n, p in model.named_parameters():
        p.requires_grad_(n not in frozen_names)
    frozen_ids = {id(p) for _, p in frozen}
    norms = []
    for name, module in model.named_modules():
        own = list(module.parameters(recurse=False))
        if (isinstance(module, nn.modules.batchnorm._NormBase) and own
                and all(id(p) in frozen_ids for p in own)):
            norms.append(name)
    return FreezePlan(
        frozen=tuple(n for n, _ in frozen),
        head=tuple(sorted(head)),
        backbone_numel=total,
        frozen_numel=sum(p.numel() for _, p in frozen),
        frozen_norms=tuple(norms),
    )


def set_train_mode(model: nn.Module, plan: FreezePlan) -> None:
    """``model.train()``, except the frozen normalisation layers, which keep their running statistics."""
    model.train()
    if plan.frozen_norms:
        modules = dict(model.named_modules())
        for name in plan.frozen_norms:
            modules[name].eval()
