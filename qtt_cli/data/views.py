"""Several augmented views of one cached image, for training methods that choose among views (HVP).

Hard-view training draws N random augmentations of each image and trains on the one the model finds hardest.
The views must come from the same decoded image, so :class:`MultiView` applies the random training transform
N times to the one cached uint8 array the dataset hands it: the image is read (from the memory-mapped cache)
once per sample, never decoded again, and each view draws its own crop, flip and augmentation from the global
RNGs exactly as N consecutive single-view samples would.

Minimum crop scale of hard views. timm's training crop keeps 8 % to 100 % of the image area. The HVP paper
selects among the views of large photos, where even a small crop shows part of an object; on the small,
centred images qtt often finetunes on (a 28 px garment or digit upscaled), the hardest of N crops is mostly
the one that lost the object -- a patch of background whose label the model cannot know. Training on those
is training on noise, and the more views, the surer the selection finds one. So the views HVP chooses among
are drawn with at least ``HARD_VIEW_MIN_SCALE`` of the image area (``benchmarks/bench_spg_hvp.py`` measured
the effect; see the README). The single-view training transform is unchanged.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch

# Smallest share of the image area a hard-view candidate may keep (None: the transform's own range).
HARD_VIEW_MIN_SCALE: float | None = 0.35

_DEFAULT = object()


def with_min_crop_scale(transform: Callable, min_scale: float | None) -> Callable:
    """A copy of ``transform`` whose random resized crop keeps at least ``min_scale`` of the image area.

    Works on a torchvision ``Compose`` holding a timm or torchvision random resized crop (anything with a
    ``scale`` range); other transforms, and ``min_scale=None``, are returned unchanged. The original is never
    modified.
    """
    ops = getattr(transform, "transforms", None)
    if min_scale is None or ops is None:
        return transform
    if not 0.0 < min_scale <= 1.0:
        raise ValueError(f"min_scale must be in (0, 1], got {min_scale}")
    new_ops = []
    for op in ops:
        scale = getattr(op, "scale", None)
        if isinstance(scale, tuple | list) and len(scale) == 2 and scale[0] < min_scale:
            op = copy.copy(op)
            op.scale = (float(min_scale), max(float(scale[1]), float(min_scale)))
        new_ops.append(op)
    clone = copy.copy(transform)
    clone.transforms = new_ops
    return clone


class MultiView:
    """``views`` independent draws of ``transform`` on one image, stacked as ``[views, C, H, W]``.

    A batch of such samples is ``[B, views, C, H, W]`` (the default collate stacks them). With more than one
    view, crops keep at least ``min_scale`` of the image (default ``HARD_VIEW_MIN_SCALE``, read when the
    object is built; ``None`` = the transform's own range).
    """

    def __init__(self, transform: Callable[[np.ndarray], torch.Tensor], views: int,
                 min_scale: float | None | object = _DEFAULT) -> None:
        if views < 1:
            raise ValueError(f"views must be >= 1, got {views}")
        self.min_scale = HARD_VIEW_MIN_SCALE if min_scale is _DEFAULT else min_scale
        self.transform = with_min_crop_scale(transform, self.min_scale) if views > 1 else transform
        self.views = views

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        return torch.stack([self.transform(image) for _ in range(self.views)])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(views={self.views}, min_scale={self.min_scale}, transform={self.transform!r})"
