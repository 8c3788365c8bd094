"""Several augmented views of one cached image, for training methods that choose among views (HVP).

Hard-view training draws N random augmentations of each image and trains on the one the model finds hardest.
The views must come from the same decoded image, so :class:`MultiView` applies the random training transform
N times to the one cached uint8 array the dataset hands it: the image is read (from the memory-mapped cache)
once per sample, never decoded again, and each view draws its own crop, flip and augmentation from the global
RNGs exactly as N consecutive single-view samples would.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch


class MultiView:
    """``views`` independent draws of ``transform`` on one image, stacked as ``[views, C, H, W]``.

    A batch of such samples is ``[B, views, C, H, W]`` (the default collate stacks them).
    """

    def __init__(self, transform: Callable[[np.ndarray], torch.Tensor], views: int) -> None:
        if views < 1:
            raise ValueError(f"views must be >= 1, got {views}")
        self.transform = transform
        self.views = views

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        return torch.stack([self.transform(image) for _ in range(self.views)])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(views={self.views}, transform={self.transform!r})"
