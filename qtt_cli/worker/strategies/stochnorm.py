"""StochNorm: BatchNorm that, while training, normalises each channel with either the statistics of the batch or
the running statistics, chosen at random (Kou et al., "Stochastic Normalization", NeurIPS 2020).

Finetuning on a small target set with batch statistics alone overfits the normalisation to tiny batches;
always using the pretrained running statistics ignores the shift to the new data. StochNorm draws, per channel
and per forward pass, which of the two to use: the running statistics with probability ``p`` (0.5, the
paper's setting), the batch statistics otherwise. The running statistics are updated from every batch exactly
as in plain BatchNorm; in eval mode the layer *is* plain BatchNorm (running statistics).

The transformation switches each BatchNorm layer's class to a subclass whose only change is ``forward``: the
parameters, buffers, hooks, ``requires_grad`` flags and state_dict keys stay those of the original layer, so
checkpoints and exported weights load into the plain timm model. Supported: ``torch.nn.BatchNorm1d/2d/3d``
and timm's ``BatchNormAct2d`` (BatchNorm followed by its activation). The draws use the global torch
generator, which the worker reseeds every epoch, so continued runs repeat them exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import BatchNormAct2d
from torch import nn

P_RUNNING = 0.5  # probability of the running statistics per channel (StochNorm paper)


def stoch_batch_norm(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """Training-mode BatchNorm of ``x`` by ``bn`` (which tracks running statistics) with StochNorm's per-channel
    choice of statistics; updates the running statistics from the batch as plain BatchNorm does.

    Each channel of the result is bit-identical to the same channel of plain BatchNorm in train mode (batch
    statistics) or in eval mode (the running statistics from before this batch), as drawn.
    """
    # the running branch needs the statistics before the batch branch updates them in place
    running = F.batch_norm(x, bn.running_mean.clone(), bn.running_var.clone(), bn.weight, bn.bias, False, 0.0,
                           bn.eps)
    factor = 0.0 if bn.momentum is None else bn.momentum
    if bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:  # cumulative moving average, as in torch's BatchNorm
            factor = 1.0 / float(bn.num_batches_tracked)
    batch = F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, True, factor, bn.eps)
    use_running = torch.rand(x.shape[1], device=x.device) < bn.stoch_p
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return torch.where(use_running.view(shape), running, batch)


def _stochastic(bn: nn.modules.batchnorm._BatchNorm) -> bool:
    """Training with running statistics to choose from; otherwise the layer behaves as plain BatchNorm."""
    return bn.training and bn.track_running_stats and bn.running_mean is not None


class StochBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Mixin body for torch's BatchNorm classes (the class of a converted layer derives from both)."""

    stoch_p: float = P_RUNNING

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _stochastic(self):
            return nn.modules.batchnorm._BatchNorm.forward(self, x)
        self._check_input_dim(x)
        return stoch_batch_norm(self, x)


class StochBatchNormAct2d(BatchNormAct2d):
    """timm's BatchNorm + activation (+ drop) with StochNorm's normalisation."""

    stoch_p: float = P_RUNNING

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _stochastic(self):
            return BatchNormAct2d.forward(self, x)
        return self.act(self.drop(stoch_batch_norm(self, x)))


class StochBatchNorm1d(StochBatchNorm, nn.BatchNorm1d):
    pass


class StochBatchNorm2d(StochBatchNorm, nn.BatchNorm2d):
    pass


class StochBatchNorm3d(StochBatchNorm, nn.BatchNorm3d):
    pass


_CONVERSIONS: dict[type, type] = {
    nn.BatchNorm1d: StochBatchNorm1d,
    nn.BatchNorm2d: StochBatchNorm2d,
    nn.BatchNorm3d: StochBatchNorm3d,
    BatchNormAct2d: StochBatchNormAct2d,
}
_CONVERTED = tuple(_CONVERSIONS.values())


def apply_stoch_norm(model: nn.Module, p: float = P_RUNNING) -> tuple[int, list[str]]:
    """Turn every supported BatchNorm layer of ``model`` into StochNorm, in place.

    Returns:
        The number of converted layers, and the names of BatchNorm-type layers of other classes (left as they
        are; the caller reports them).
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    converted, skipped = 0, []
    for name, module in model.named_modules():
        target = _CONVERSIONS.get(type(module))
        if target is not None:
            module.__class__ = target  # same layout, only forward differs
            module.stoch_p = p
            converted += 1
        elif isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, _CONVERTED):
            skipped.append(name)
    return converted, skipped


def stoch_norm_notes(model: nn.Module, p: float = P_RUNNING) -> list[str]:
    """Apply StochNorm and return what a user should know (nothing when every BatchNorm layer was converted)."""
    converted, skipped = apply_stoch_norm(model, p)
    notes = []
    if converted == 0 and not skipped:
        notes.append(f"stoch_norm: {type(model).__name__} has no BatchNorm layers, so StochNorm changes nothing")
    if skipped:
        notes.append(f"stoch_norm: {len(skipped)} BatchNorm layer(s) of unsupported classes kept plain BatchNorm: "
                     + ", ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else ""))
    return notes
