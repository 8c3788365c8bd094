"""Co-Tuning (You et al., "Co-Tuning for Transfer Learning", NeurIPS 2020): ``cotuning_reg``.

Standard finetuning throws the pretrained classifier away. Co-Tuning keeps it as a second head on the shared
representation and trains it too, against the *source-class* distribution that each target label corresponds
to, so that the pretrained head's knowledge keeps shaping the features:

    L = CE(target_head(f), y) + cotuning_reg * CE(source_head(f), p(y_s | y))

The category relationship ``p(y_s | y_t)`` comes from the pretrained model's own predictions on the target
training data, computed once when the pipeline starts: row ``t`` is the mean of the pretrained model's softmax
over the training images of class ``t`` (the paper's "direct" approach; its calibrated variant fits an extra
classifier first). Each row is a distribution over the source classes. With mixup the soft targets are
translated the same way (``targets @ R``). The relationship and the trained source head are kept in the
checkpoint, so a continued pipeline keeps both.

The source head is the pretrained classifier of the model's source task (e.g. the 1000 ImageNet classes), as
an ``nn.Linear`` on the pre-logits; a 1x1-convolution classifier (e.g. DLA) is read as the equivalent linear
layer. When there is none -- random weights, weights without a classifier, or a head that is not a linear map
of the pre-logits -- the step trains without the Co-Tuning term and says so in ``StepResult.notes``: the one
strategy with a documented fallback, because the issue asks for it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..extensions import Extension, ExtensionContext, TrainBatch, register_extension


def source_head(model: nn.Module) -> nn.Linear | None:
    """A copy of ``model``'s classifier as a linear layer on the pre-logits, or None if it is not one."""
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    if isinstance(classifier, nn.Linear):
        head = nn.Linear(classifier.in_features, classifier.out_features, bias=classifier.bias is not None)
        head.load_state_dict(classifier.state_dict())
        return head
    if isinstance(classifier, nn.Conv2d) and classifier.kernel_size == (1, 1) and classifier.groups == 1:
        head = nn.Linear(classifier.in_channels, classifier.out_channels, bias=classifier.bias is not None)
        with torch.no_grad():
            head.weight.copy_(classifier.weight.flatten(1))
            if classifier.bias is not None:
                head.bias.copy_(classifier.bias)
        return head
    return None


@torch.no_grad()
def learn_relationship(source_model: nn.Module, loader, num_classes: int, device: torch.device) -> torch.Tensor:
    """``[num_classes, source classes]``: row ``t`` is the mean softmax of ``source_model`` over the images of
    target class ``t`` (a class without images gets the mean over all images)."""
    source_model.eval()
    sums, counts = None, torch.zeros(num_classes, dtype=torch.float64)
    for x, y in loader:
        probs = source_model(x.to(device)).float().softmax(dim=1).double().cpu()
        if sums is None:
            sums = torch.zeros(num_classes, probs.shape[1], dtype=torch.float64)
        sums.index_add_(0, y, probs)
        counts += torch.bincount(y, minlength=num_classes).double()
    if sums is None:
        raise RuntimeError("cotuning_reg: the training split gave no images to learn the class relationship")
    overall = sums.sum(dim=0) / counts.sum()
    rows = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], overall)
    return (rows / rows.sum(dim=1, keepdim=True)).float()


def translate(targets: torch.Tensor, relationship: torch.Tensor) -> torch.Tensor:
    """Source-class distributions for target labels (``[B]`` indices) or soft targets (``[B, classes]``)."""
    if targets.dim() == 1:
        return relationship[targets]
    return targets.float() @ relationship


class CoTuning(Extension):
    """The source-head loss; owns the source head (trained, as its own optimizer group) and the relationship.

    Args:
        head: the pretrained classifier as a linear layer on the pre-logits.
        relationship: ``p(y_s | y_t)`` (rows sum to 1), or None until loaded from a checkpoint.
        strength: ``cotuning_reg``.
    """

    def __init__(self, head: nn.Linear, relationship: torch.Tensor | None, strength: float) -> None:
        self.head = head
        self.relationship = relationship
        self.strength = float(strength)

    def parameters(self):
        return self.head.parameters()

    def loss(self, batch: TrainBatch) -> torch.Tensor:
        if self.relationship is None:
            raise RuntimeError("cotuning_reg: the class relationship was neither learnt nor loaded")
        logits = self.head(batch.pre_logits()).float()
        soft = translate(batch.targets, self.relationship)
        return self.strength * torch.sum(-soft * F.log_softmax(logits, dim=1), dim=1).mean()

    def to(self, device: torch.device) -> CoTuning:
        self.head.to(device)
        if self.relationship is not None:
            self.relationship = self.relationship.to(device)
        return self

    def state_dict(self) -> dict:
        return {"relationship": self.relationship.detach().cpu(),
                "head": {k: v.detach().cpu() for k, v in self.head.state_dict().items()}}

    def load_state_dict(self, state: dict) -> None:
        device = self.head.weight.device
        self.head.load_state_dict(state["head"])  # copies in place: the optimizer keeps the same tensors
        self.relationship = state["relationship"].to(device)


NO_SOURCE_HEAD = ("cotuning_reg={value}: {model} has no pretrained source-task classifier here ({why}); "
                  "trained without the Co-Tuning term")


@register_extension("cotuning_reg")
def _build(context: ExtensionContext) -> CoTuning | None:
    value = context.config.cotuning_reg
    if value <= 0:
        return None
    source, why = context.source_model()
    head = source_head(source) if source is not None else None
    if source is not None and head is None:
        why = f"its classifier {type(source.get_classifier()).__name__} is not a linear map of the pre-logits"
    if head is None:
        context.note(NO_SOURCE_HEAD.format(value=value, model=context.config.model, why=why))
        return None
    relationship = None
    if not context.resumed:  # a continued step loads the relationship learnt when the pipeline started
        relationship = learn_relationship(source, context.train_loader(), context.num_classes, context.device)
    return CoTuning(head, relationship, value)
