"""DELTA regularisation (Li et al., "DELTA: DEep Learning Transfer using Feature Map with Attention for
Convolutional Networks", ICLR 2019): ``delta_reg``.

L2-SP keeps the *weights* near the pretrained ones; DELTA keeps the *behaviour* near: the distance between the
feature maps the finetuned model and the pretrained model compute for the same batch, weighted per channel by
how much the channel matters for the target task:

    Omega = delta_reg * 1/2 * mean_batch sum_j C * a_j * mean_spatial (FM_j(w, x) - FM_j(w0, x))^2

``FM`` is the final feature map (``forward_features``: what the head pools), ``C`` its number of channels
(``num_features``; found at dim 1 of ``[B, C, H, W]`` or last in token and channels-last maps), and
``a`` the channel attention (softmax, sums to 1, so ``C * a_j`` averages 1). Averaging over the batch and the
spatial positions keeps the scale independent of batch size and resolution. The paper regularises the outer
layers' maps; qtt uses the final one, the representation every timm model exposes (``[B, C, H, W]``,
``[B, tokens, C]`` or ``[B, H, W, C]``), at the price of one extra no-grad forward of the reference per batch.

Attention, as the paper's supervised attention (and its reference implementation): once, when the pipeline
starts, a linear classifier for the target classes is fitted on the pretrained model's pre-logits of up to
``ATTENTION_IMAGES`` training images (L-BFGS, the backbone fixed); for each channel ``j`` the loss increase
when channel ``j`` of the feature map is zeroed is measured; these increases, standardised, give
``a = softmax(z / 5)``. The attention is kept in the checkpoint.

The reference model runs without gradient and, module by module, in the same train/eval mode as the finetuned
model (its BatchNorm layers use the batch statistics where the finetuned model does, with momentum 0 so its
running statistics never move): the penalty measures how far the weights have moved the features, it is
exactly 0 when the finetuned model equals the pretrained one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..extensions import Extension, ExtensionContext, TrainBatch, register_extension

ATTENTION_IMAGES = 256  # training images used to estimate the channel attention
ATTENTION_TEMPERATURE = 5.0  # softmax temperature on the standardised loss increases (DELTA's code)
PROBE_ITERATIONS = 100  # L-BFGS iterations of the linear classifier fitted for the attention
PROBE_L2 = 1e-4


def channel_axis(features: torch.Tensor, channels: int) -> int:
    """Where the ``channels`` of a timm feature map are: dim 1 (``[B, C, ...]``) or the last dim (token maps
    ``[B, N, C]``, channels-last ``[B, H, W, C]``)."""
    last = features.dim() - 1
    if features.dim() == 3 and features.shape[last] == channels:  # tokens: channels last even if N == C
        return last
    if features.shape[1] == channels:
        return 1
    if features.shape[last] == channels:
        return last
    raise ValueError(f"delta_reg: no dimension of size {channels} (the model's num_features) in the feature map "
                     f"of shape {tuple(features.shape)}")


def channel_distances(features: torch.Tensor, reference: torch.Tensor, channels: int) -> torch.Tensor:
    """``[B, C]``: per sample and channel, the mean squared difference over the other (spatial) positions."""
    squared = (features.float() - reference.float()).pow(2).movedim(channel_axis(features, channels), 1)
    return squared if squared.dim() == 2 else squared.flatten(2).mean(dim=2)


def delta_penalty(features: torch.Tensor, reference: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    """``1/2 * mean_batch sum_j C * a_j * d_j`` (unscaled by ``delta_reg``); ``reference`` carries no gradient."""
    distances = channel_distances(features, reference.detach(), attention.numel())
    weights = attention.to(distances.device, distances.dtype) * attention.numel()
    return 0.5 * (distances * weights).sum(dim=1).mean()


@torch.no_grad()
def channel_attention(reference: nn.Module, loader, num_classes: int, device: torch.device,
                      max_images: int = ATTENTION_IMAGES) -> torch.Tensor:
    """DELTA's supervised channel attention of ``reference``'s final feature map (see the module docstring)."""
    reference.eval()
    features, labels = [], []
    seen = 0
    for x, y in loader:
        take = min(len(x), max_images - seen)
        features.append(reference.forward_features(x[:take].to(device)).float())
        labels.append(y[:take].to(device))
        seen += take
        if seen >= max_images:
            break
    if not features:
        raise RuntimeError("delta_reg: the training split gave no images to estimate the channel attention")
    features, labels = torch.cat(features), torch.cat(labels)
    probe = _fit_probe(reference.forward_head(features, pre_logits=True).float(), labels, num_classes)
    axis = channel_axis(features, reference.num_features)

    def loss_of(maps: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(probe(reference.forward_head(maps, pre_logits=True).float()), labels)

    base = loss_of(features)
    increases = torch.empty(features.shape[axis], dtype=torch.float64)
    for j in range(len(increases)):
        ablated = features.clone()
        ablated.select(axis, j).zero_()
        increases[j] = float(loss_of(ablated) - base)
    spread = increases.std()
    standard = (increases - increases.mean()) / spread if spread > 0 else torch.zeros_like(increases)
    return torch.softmax(standard / ATTENTION_TEMPERATURE, dim=0).float()


def _fit_probe(pre_logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> nn.Linear:
    """A linear classifier on fixed features, fitted by full-batch L-BFGS (deterministic)."""
    probe = nn.Linear(pre_logits.shape[1], num_classes).to(pre_logits.device)
    nn.init.zeros_(probe.weight)
    nn.init.zeros_(probe.bias)
    optimizer = torch.optim.LBFGS(probe.parameters(), max_iter=PROBE_ITERATIONS, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(probe(pre_logits), labels) + PROBE_L2 * probe.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    probe.requires_grad_(False)
    return probe


class DeltaRegularization(Extension):
    """The DELTA term for a model whose initial state is ``reference`` (frozen; used without gradient).

    Args:
        reference: the pretrained model (same architecture as the finetuned one).
        attention: ``[C]`` channel attention (sums to 1), or None until loaded from a checkpoint.
        strength: ``delta_reg``.
    """

    def __init__(self, reference: nn.Module, attention: torch.Tensor | None, strength: float) -> None:
        self.reference = reference.requires_grad_(False)
        for module in self.reference.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = 0.0  # batch statistics when mirrored into train mode, running ones unchanged
        self.attention = attention
        self.strength = float(strength)

    def reference_features(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        """The reference's final feature map of ``inputs``, each module in ``model``'s train/eval mode."""
        modes = {name: m.training for name, m in model.named_modules()}
        for name, module in self.reference.named_modules():
            module.training = modes.get(name, False)
        with torch.no_grad():
            return self.reference.forward_features(inputs)

    def loss(self, batch: TrainBatch) -> torch.Tensor:
        if self.attention is None:
            raise RuntimeError("delta_reg: the channel attention was neither computed nor loaded")
        target = self.reference_features(batch.model, batch.inputs)
        return self.strength * delta_penalty(batch.features, target, self.attention)

    def to(self, device: torch.device) -> DeltaRegularization:
        self.reference.to(device)
        if self.attention is not None:
            self.attention = self.attention.to(device)
        return self

    def state_dict(self) -> dict:
        return {"attention": self.attention.detach().cpu()}

    def load_state_dict(self, state: dict) -> None:
        device = next(self.reference.parameters()).device
        self.attention = state["attention"].to(device)


@register_extension("delta_reg")
def _build(context: ExtensionContext) -> DeltaRegularization | None:
    if context.config.delta_reg <= 0:
        return None
    reference = context.reference_model()
    attention = None
    if not context.resumed:  # a continued step loads the attention computed when the pipeline started
        attention = channel_attention(reference, context.train_loader(), context.num_classes, context.device)
    return DeltaRegularization(reference, attention, context.config.delta_reg)
