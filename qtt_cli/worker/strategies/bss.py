"""BSS, batch spectral shrinkage (Chen et al., "Catastrophic Forgetting Meets Negative Transfer: Batch Spectral
Shrinkage for Safe Transfer Learning", NeurIPS 2019): ``bss_reg``.

The paper finds that the directions of the feature space with the smallest singular values are the ones that
carry untransferable, noisy pretrained knowledge, and that penalising them in each batch reduces negative
transfer:

    L_bss = bss_reg * sum_{i=1..k} sigma_{-i}^2(F)

with ``F`` the batch's feature matrix (batch x features: the pre-logits the classifier reads, after mixup if
any) and ``sigma_{-i}`` its i-th smallest singular value; ``k = 1`` as in the paper. The SVD runs in float32
(outside autocast) and is differentiated by torch. The term needs no state, so it continues across
freeze-thaw steps by construction.
"""

from __future__ import annotations

import torch

from ..extensions import Extension, ExtensionContext, TrainBatch, register_extension

K_SMALLEST = 1  # the BSS paper's k


def bss_penalty(features: torch.Tensor, k: int = K_SMALLEST) -> torch.Tensor:
    """Sum of the ``k`` smallest squared singular values of ``features`` (``[batch, dims]``; more dims are
    flattened). Uses all singular values when there are fewer than ``k``."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    matrix = features.reshape(len(features), -1).float()
    with torch.autocast(matrix.device.type, enabled=False):
        singular = torch.linalg.svdvals(matrix)  # descending
    return singular[-k:].pow(2).sum()


class BatchSpectralShrinkage(Extension):
    def __init__(self, strength: float, k: int = K_SMALLEST) -> None:
        self.strength = float(strength)
        self.k = k

    def loss(self, batch: TrainBatch) -> torch.Tensor:
        return self.strength * bss_penalty(batch.pre_logits(), self.k)


@register_extension("bss_reg")
def _build(context: ExtensionContext) -> BatchSpectralShrinkage | None:
    if context.config.bss_reg <= 0:
        return None
    return BatchSpectralShrinkage(context.config.bss_reg)
