"""Sequential Policy Gradient (SPG, Li et al. 2025) as a training-only extension.

SPG appends T temporary Task-Replica-Prediction (TRP) modules to the model's pooled representation. Module t
drops out the previous module's output and adds a dimension-preserving Linear: ``h_t = d + Linear(d)`` with
``d = Dropout(h_{t-1}; p)``, the Linear zero-initialised, so that at the start every replica is the model
itself on ever more dropped-out features (effective rates ``1 - (1 - p)^t``: 0.2, 0.36, 0.488 for p = 0.2).
The model's own classifier is the shared head that turns every ``h_t`` into logits.

Loss: the base loss (the worker's) plus ``sum_t lambda_t * CE_t``, where ``CE_t`` is the per-sample
cross-entropy of replica t averaged over the samples that the base head *and every earlier replica*
classified correctly (the "positional mask", a running product of ``argmax == label`` computed without
gradient): a correct prediction under stronger dropout only counts when it held under every weaker one.
``lambda = (0.4, 0.2, 0.1)``. Soft targets (mixup/cutmix) use their argmax class for the mask; the replica
losses use the same targets and label smoothing as the base loss, in float32 even under AMP.

Two bugs of the released code are deliberately not reproduced: its Linear is followed by a ReLU, which with
zero initialisation gives the Linear zero gradient for ever; and its loss rescaling is a no-op (in-place add
on shared storage), so none is done here either -- the weights above are the whole loss.

The modules are training-only: they live in this extension (trained, saved in the pipeline's freeze-thaw
checkpoints), never in the model, so evaluation, ``best.safetensors``, ``export-best`` and ``predict`` see
the base architecture with its exact parameter count.

Optimizer cold start (``spg_cold_start`` epochs at learning rate 0 before the first epoch) is requested
through ``Extension.cold_start_epochs``; the worker runs it (see ``FinetuneWorker._cold_start`` for how it is
counted against epochs, schedule and freeze-thaw steps).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..extensions import Extension, ExtensionContext, TrainBatch, register_extension

# Loss weight of replica t (t = 1..3), as in the paper's experiments.
REPLICA_WEIGHTS: tuple[float, ...] = (0.4, 0.2, 0.1)

# Wide heads get low-rank replicas. A full D x D Linear per replica costs T * D^2 parameters with their
# optimizer updates: for EfficientNet-Lite0 (D = 1280) three of them hold 4.9 M parameters, more than the
# 3.4 M of the backbone, and made SPG 1.29x slower than plain training on a 1024-wide head. Above
# ``LOW_RANK_WIDTH`` each replica's Linear is factored as ``up(down(d))`` with rank ``REPLICA_RANK``; ``up``
# is zero-initialised, so every replica still starts as the model itself on dropped-out features (the
# method's starting point) and learns a correction, of rank at most ``REPLICA_RANK`` (measured in
# benchmarks/bench_spg_hvp.py). ``REPLICA_RANK = None`` restores the full Linear for every width.
LOW_RANK_WIDTH = 512
REPLICA_RANK: int | None = 64


def replica_rank(width: int) -> int | None:
    """The rank of the replicas' Linear for a head of ``width`` (None = full rank)."""
    if REPLICA_RANK is None or width <= LOW_RANK_WIDTH or width <= REPLICA_RANK:
        return None
    return REPLICA_RANK


class ReplicaModule(nn.Module):
    """One TRP module: ``d + Linear(d)`` with ``d = Dropout(h; p)`` and the Linear zero-initialised (no
    activation: an activation after a zero Linear would block its gradient). With ``rank``, the Linear is
    ``up(down(d))``: ``down`` [rank x D] keeps its random initialisation, ``up`` [D x rank] starts at zero."""

    def __init__(self, width: int, drop: float, rank: int | None = None) -> None:
        super().__init__()
        self.dropout = nn.Dropout(drop)
        self.down = nn.Linear(width, rank, bias=False) if rank is not None else None
        self.linear = nn.Linear(rank if rank is not None else width, width)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        d = self.dropout(h)
        return d + self.linear(self.down(d) if self.down is not None else d)


def shared_head(model: nn.Module) -> nn.Module:
    """The model's classifier (timm ``get_classifier()``), which every replica shares."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if isinstance(head, (tuple, list)):
        raise ValueError(f"SPG needs a single classifier head; {type(model).__name__} has {len(head)} "
                         "(a distillation head?)")
    if not isinstance(head, nn.Module) or isinstance(head, nn.Identity):
        raise ValueError(f"SPG needs the model's classifier (get_classifier()); {type(model).__name__} has none")
    return head


def head_width(head: nn.Module, model: nn.Module) -> int:
    """Width of the representation the classifier reads (taken from the model, never hard-coded)."""
    if isinstance(head, nn.Linear):
        return head.in_features
    if isinstance(head, nn.Conv2d):  # e.g. DLA's 1x1-conv classifier
        return head.in_channels
    width = getattr(model, "head_hidden_size", None) or getattr(model, "num_features", None)
    if not width:
        raise ValueError(f"cannot tell the width of {type(model).__name__}'s pre-logits for SPG")
    return int(width)


def apply_head(head: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """Logits of pooled features ``h`` [B, D]; a 1x1-conv classifier gets them as [B, D, 1, 1]."""
    if isinstance(head, nn.Conv2d):
        return head(h[:, :, None, None]).flatten(1)
    return head(h)


def replica_logits(modules: Sequence[nn.Module], head: nn.Module, h0: torch.Tensor) -> list[torch.Tensor]:
    """Logits of every replica: module t reads module t-1's output (module 1 reads ``h0``)."""
    logits, h = [], h0
    for module in modules:
        h = module(h)
        logits.append(apply_head(head, h))
    return logits


def hard_targets(targets: torch.Tensor) -> torch.Tensor:
    """Class indices: hard labels as they are, soft targets (mixup/cutmix/smoothing) by their argmax."""
    return targets.argmax(dim=1) if targets.ndim == 2 else targets


@torch.no_grad()
def positional_masks(base_logits: torch.Tensor, logits: Sequence[torch.Tensor],
                     labels: torch.Tensor) -> list[torch.Tensor]:
    """Mask of each replica t: 1 where the base output and replicas 1..t-1 all predict ``labels``
    (running product of correctness), as float32 [B]."""
    mask = (base_logits.argmax(dim=1) == labels).float()
    masks = []
    for z in logits:
        masks.append(mask)
        mask = mask * (z.argmax(dim=1) == labels).float()
    return masks


def per_sample_loss(logits: torch.Tensor, targets: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """Per-sample cross-entropy in float32, as the worker's base loss defines it: soft targets (mixup/cutmix,
    smoothing already inside) as ``sum(-t * log_softmax)``, hard targets with timm's label smoothing."""
    logp = F.log_softmax(logits.float(), dim=1)
    if targets.ndim == 2:
        return -(targets.float() * logp).sum(dim=1)
    nll = -logp.gather(1, targets[:, None]).squeeze(1)
    if smoothing > 0:
        return (1.0 - smoothing) * nll - smoothing * logp.mean(dim=1)
    return nll


def spg_loss(base_logits: torch.Tensor, logits: Sequence[torch.Tensor], targets: torch.Tensor,
             weights: Sequence[float] = REPLICA_WEIGHTS, smoothing: float = 0.0) -> torch.Tensor:
    """The replicas' term of the SPG loss (the base loss is added by the worker):
    ``sum_t weights[t] * mean over mask_t of CE(logits[t], targets)``; a replica whose mask is empty adds 0."""
    if len(logits) > len(weights):
        raise ValueError(f"{len(logits)} replicas but only {len(weights)} loss weights")
    masks = positional_masks(base_logits, logits, hard_targets(targets))
    total = base_logits.new_zeros((), dtype=torch.float32)
    for weight, z, mask in zip(weights, logits, masks, strict=False):
        ce = per_sample_loss(z, targets, smoothing)
        total = total + weight * (ce * mask).sum() / mask.sum().clamp(min=1.0)
    return total


class SequentialPolicyGradient(Extension):
    """SPG's replica modules and loss term for one pipeline (see the module docstring)."""

    def __init__(self, model: nn.Module, modules: int, drop: float, *, smoothing: float = 0.0,
                 cold_start_epochs: int = 0, weights: Sequence[float] = REPLICA_WEIGHTS) -> None:
        if not 1 <= modules <= len(weights):
            raise ValueError(f"SPG supports 1..{len(weights)} modules, got {modules}")
        self.head = shared_head(model)
        self.width = head_width(self.head, model)
        self.rank = replica_rank(self.width)
        self.replicas = nn.ModuleList(ReplicaModule(self.width, drop, self.rank) for _ in range(modules))
        self.weights = tuple(weights[:modules])
        self.smoothing = smoothing
        self.cold_start_epochs = cold_start_epochs

    def parameters(self) -> Iterable[nn.Parameter]:
        return self.replicas.parameters()

    def to(self, device: torch.device) -> SequentialPolicyGradient:
        self.replicas.to(device)
        return self

    def loss(self, batch: TrainBatch) -> torch.Tensor:
        h0 = batch.pre_logits()
        if h0.ndim != 2 or h0.shape[1] != self.width:
            raise ValueError(f"SPG needs pooled pre-logits of shape [B, {self.width}], got {tuple(h0.shape)} "
                             f"from {type(batch.model).__name__}")
        logits = replica_logits(self.replicas, self.head, h0)
        return spg_loss(batch.logits, logits, batch.targets, self.weights, self.smoothing)

    def state_dict(self) -> dict[str, Any]:
        return {"replicas": {k: v.detach().cpu() for k, v in self.replicas.state_dict().items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = {k: tuple(v.shape) for k, v in state["replicas"].items()}
        mine = {k: tuple(v.shape) for k, v in self.replicas.state_dict().items()}
        if saved != mine:
            raise ValueError("the checkpoint's SPG replicas have another shape (saved with another replica rank, "
                             "e.g. by an older qtt); this pipeline cannot be continued from it")
        self.replicas.load_state_dict(state["replicas"])


@register_extension("spg")
def _spg(context: ExtensionContext) -> SequentialPolicyGradient | None:
    config = context.config
    if not config.spg:
        return None
    return SequentialPolicyGradient(
        context.model, config.spg_modules, config.spg_drop,
        # with mixup the targets are soft and already smoothed; otherwise the base loss smooths hard labels
        smoothing=config.smoothing, cold_start_epochs=config.spg_cold_start)
