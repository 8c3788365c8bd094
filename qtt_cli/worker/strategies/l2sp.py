"""SP-regularisation (L2-SP; Li, Grandvalet and Davoine, "Explicit Inductive Bias for Transfer Learning with
Convolutional Networks", ICML 2018): ``sp_reg``.

Weight decay pulls every weight towards zero, which for a pretrained backbone means *away* from what
pretraining learnt. L2-SP pulls the backbone towards its starting point instead:

    Omega(w) = sp_reg / 2 * ||w_backbone - w0_backbone||^2  +  sp_reg / 2 * ||w_head||^2

with ``w0`` the pipeline's initial (pretrained) weights; the new classifier head has no starting point worth
keeping, so it gets plain L2 (the paper's beta; Quick-Tune has one coefficient, used for both). Only trainable
parameters are penalised (frozen ones equal ``w0``). The term is a loss term, so it acts through the optimizer
like the task loss (as in the paper), in addition to any configured ``weight_decay``.

Across freeze-thaw steps ``w0`` is *rebuilt*, not stored: ``reference_model()`` recreates the initial model
deterministically (the same pretrained file, or the same seeded random init), and a second copy of the
backbone in every epoch checkpoint would double its size. The checkpoint keeps a SHA-256 digest of ``w0``
instead; a continued step whose rebuilt ``w0`` differs (e.g. the weights file changed between steps) fails
with a message rather than regularising towards different weights.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import torch
from torch import nn

from ..extensions import Extension, ExtensionContext, TrainBatch, register_extension
from ..freezing import head_parameter_names


def weights_digest(tensors: Iterable[tuple[str, torch.Tensor]]) -> str:
    """SHA-256 over names, shapes, dtypes and bytes of ``tensors`` (in the given order)."""
    digest = hashlib.sha256()
    for name, tensor in tensors:
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}\n".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class SPRegularization(Extension):
    """``strength / 2 * (||w - w0||^2 over the backbone + ||w||^2 over the head)`` as a loss term.

    Args:
        model: the model being finetuned.
        reference: a model with the same parameter names holding ``w0`` (its head is not used).
        strength: ``sp_reg``.
    """

    def __init__(self, model: nn.Module, reference: nn.Module, strength: float) -> None:
        head = set(head_parameter_names(model))
        initial = dict(reference.named_parameters())
        backbone_names = [n for n, _ in model.named_parameters() if n not in head]
        missing = [n for n in backbone_names if n not in initial or initial[n].shape != model.get_parameter(n).shape]
        if missing:
            raise ValueError(f"sp_reg: the reference model does not match the finetuned model's backbone "
                             f"(first differing parameter: {missing[0]})")
        self.strength = float(strength)
        self.digest = weights_digest((n, initial[n]) for n in backbone_names)
        params = dict(model.named_parameters())
        self.pairs = [(params[n], initial[n].detach().clone()) for n in backbone_names if params[n].requires_grad]
        self.head = [params[n] for n in sorted(head) if params[n].requires_grad]

    def penalty(self) -> torch.Tensor | None:
        """``||w - w0||^2`` over the trainable backbone plus ``||w||^2`` over the trainable head (unscaled);
        None when nothing trains."""
        terms = [(w - w0).pow(2).sum() for w, w0 in self.pairs] + [w.pow(2).sum() for w in self.head]
        if not terms:
            return None
        return torch.stack([t.float() for t in terms]).sum()

    def loss(self, batch: TrainBatch) -> torch.Tensor | None:
        penalty = self.penalty()
        return None if penalty is None else 0.5 * self.strength * penalty

    def to(self, device: torch.device) -> SPRegularization:
        self.pairs = [(w, w0.to(device)) for w, w0 in self.pairs]
        return self

    def state_dict(self) -> dict:
        return {"reference_sha256": self.digest}

    def load_state_dict(self, state: dict) -> None:
        if state.get("reference_sha256") != self.digest:
            raise ValueError("sp_reg: the pretrained weights rebuilt for this step differ from those the pipeline "
                             "started from (was the weights file replaced?); continuing would regularise towards "
                             "other weights. Start the pipeline again.")


@register_extension("sp_reg")
def _build(context: ExtensionContext) -> SPRegularization | None:
    if context.config.sp_reg <= 0:
        return None
    return SPRegularization(context.model, context.reference_model(), context.config.sp_reg)
