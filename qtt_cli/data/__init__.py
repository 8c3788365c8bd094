"""Image-folder datasets: discovery and validation, the decode-once cache, meta-features, transforms."""

from .cache import (
    CachedImages,
    ImageCache,
    build_cache,
    cache_is_current,
    dataset_fingerprint,
    decode_image,
    open_cache,
)
from .discovery import IMAGE_EXTENSIONS, DatasetError, DatasetSplits, Sample, discover
from .identity import DatasetIdentity
from .loader import make_loader
from .meta import MetaFeatures, meta_features
from .transforms import eval_transform, train_transform

__all__ = [
    "IMAGE_EXTENSIONS",
    "CachedImages",
    "DatasetError",
    "DatasetIdentity",
    "DatasetSplits",
    "ImageCache",
    "MetaFeatures",
    "Sample",
    "build_cache",
    "cache_is_current",
    "dataset_fingerprint",
    "decode_image",
    "discover",
    "eval_transform",
    "make_loader",
    "meta_features",
    "open_cache",
    "train_transform",
]
