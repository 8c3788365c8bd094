"""Batches of transformed cached images."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .cache import CachedImages
from .views import MultiView


class TransformedImages(Dataset):
    """``(transform(image), label)`` pairs of a :class:`CachedImages` split."""

    def __init__(self, images: CachedImages, transform: Callable[[np.ndarray], torch.Tensor]) -> None:
        self.images = images
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images.image(i)), int(self.images.labels[i])


def make_loader(
    images: CachedImages,
    transform: Callable[[np.ndarray], torch.Tensor],
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None,
    num_workers: int = 0,
    drop_last: bool = False,
    pin_memory: bool = False,
    views: int = 1,
) -> DataLoader:
    """A DataLoader of ``(images [B, C, H, W] float, labels [B] int64)`` batches.

    With ``views > 1`` every image comes as that many independently augmented views of the same cached
    image (``MultiView``): ``images`` is ``[B, views, C, H, W]``.

    Reproducibility: the order comes from ``generator``. The random augmentations draw from the global
    ``random``/``numpy``/``torch`` RNGs: in the main process (``num_workers=0``) those are whatever the
    caller seeded (the worker reseeds them at the start of every epoch); in worker processes PyTorch
    reseeds all three from a base seed drawn from ``generator`` every epoch. Either way, the same seeds
    give the same batches.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if views > 1:
        transform = MultiView(transform, views)
    return DataLoader(
        TransformedImages(images, transform),
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=num_workers,
        drop_last=drop_last,
        pin_memory=pin_memory,
        persistent_workers=False,
    )
