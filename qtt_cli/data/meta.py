"""Dataset meta-features: what the meta-learned predictors of Quick-Tune know about a dataset.

Quick-Tune conditions its performance and cost predictors on four numbers per dataset (number of
images, number of classes, image resolution, number of channels). They describe the *original*
images, not the cached ``side`` x ``side`` copies, so the cache keeps each original's size and mode.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from .cache import GRAYSCALE_MODES, ImageCache
from .discovery import DatasetError, DatasetSplits


@dataclass(frozen=True)
class MetaFeatures:
    """``num_samples``: train + val images; ``resolution``: median of max(width, height) of the originals;
    ``channels``: 1 when every original is grayscale, else 3."""

    num_samples: int
    num_classes: int
    resolution: int
    channels: int

    def as_list(self) -> list[int]:
        """In the order of the Quick-Tune meta-feature vector."""
        return [self.num_samples, self.num_classes, self.resolution, self.channels]

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def meta_features(data: ImageCache | DatasetSplits) -> MetaFeatures:
    """Meta-features of a dataset, from its cache (free) or from its files (reads image headers only).

    The cache counts only readable images; the files variant counts every listed file.
    """
    if isinstance(data, ImageCache):
        sizes = data.train.sizes + data.val.sizes
        modes = data.train.modes + data.val.modes
    elif isinstance(data, DatasetSplits):
        sizes, modes = _headers(s.path for s in [*data.train, *data.val])
    else:
        raise TypeError(f"meta_features needs an ImageCache or DatasetSplits, got {type(data).__name__}")
    if not sizes:
        raise DatasetError("cannot compute meta-features of a dataset without train or val images")
    resolution = int(round(float(np.median([max(w, h) for w, h in sizes]))))
    channels = 1 if all(m in GRAYSCALE_MODES for m in modes) else 3
    return MetaFeatures(
        num_samples=len(sizes), num_classes=len(data.classes), resolution=resolution, channels=channels
    )


def _headers(paths: Iterable) -> tuple[list[tuple[int, int]], list[str]]:
    sizes, modes = [], []
    for path in paths:
        try:
            with Image.open(path) as img:  # lazy: parses the header, decodes no pixels
                sizes.append(img.size)
                modes.append(img.mode)
        except Exception:  # noqa: BLE001 -- unreadable files are not counted, as in the cache
            continue
    return sizes, modes
