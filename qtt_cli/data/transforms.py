"""Training and evaluation transforms that start from a cached uint8 image instead of a file.

The pipelines are timm's (``create_transform``), so that a configuration means here what it meant in the
Quick-Tune meta-dataset, whose curves were recorded with timm's training script: ``data_augmentation ==
"None"`` is timm's default training transform (RandomResizedCrop, horizontal flip, colour jitter 0.4),
``"random_augment"`` is ``rand-m{ra_magnitude}-n{ra_num_ops}``, ``"auto_augment"`` is the ``v0`` or
``original`` policy. timm 1.0 has no TrivialAugment, so ``"trivial_augment"`` puts torchvision's
``TrivialAugmentWide`` where timm puts its auto-augment (after the flip, replacing colour jitter).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image
from timm.data import create_transform
from timm.data.auto_augment import posterize as _timm_posterize
from timm.data.transforms import str_to_interp_mode
from torchvision import transforms as T

from ..space.config import PipelineConfig

# timm train script default (--train-interpolation): bilinear or bicubic, drawn per image
TRAIN_INTERPOLATION = "random"

Transform = Callable[[np.ndarray], torch.Tensor]


class PreprocessingLike(Protocol):
    """What the transforms read from :class:`qtt_cli.hub.Preprocessing` (a model's expected input)."""

    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str
    crop_pct: float


class ArrayToPIL:
    """uint8 HWC array -> PIL image. Wraps the array's memory layout; no decoding involved."""

    def __call__(self, array: np.ndarray) -> Image.Image:
        if isinstance(array, Image.Image):
            return array
        return Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8))  # HWC uint8 -> "RGB"

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def auto_augment_string(cfg: PipelineConfig) -> str | None:
    """timm's ``auto_augment`` argument for ``cfg``, or ``None`` (no timm auto-augment)."""
    if cfg.data_augmentation == "random_augment":
        return f"rand-m{cfg.ra_magnitude}-n{cfg.ra_num_ops}"
    if cfg.data_augmentation == "auto_augment":
        return str(cfg.auto_augment)
    return None


def train_transform(
    pre: PreprocessingLike, cfg: PipelineConfig, *, interpolation: str = TRAIN_INTERPOLATION
) -> T.Compose:
    """The training transform of ``cfg``'s augmentation for a model that expects ``pre``.

    Args:
        pre: The model's preprocessing (input size, normalisation).
        cfg: The pipeline; only ``data_augmentation``, ``auto_augment``, ``ra_*`` are read here
            (mixup/cutmix act on batches, in the worker).
        interpolation: Interpolation of the random resized crop; timm's training default is ``"random"``.

    Returns:
        A ``Compose`` mapping a uint8 HWC array to a normalised float CHW tensor.
    """
    common: dict[str, Any] = dict(
        input_size=int(pre.input_size),
        is_training=True,
        interpolation=interpolation,
        mean=tuple(pre.mean),
        std=tuple(pre.std),
    )
    if cfg.data_augmentation == "trivial_augment":
        primary, _, final = create_transform(**common, color_jitter=None, separate=True)
        tail = T.TrivialAugmentWide(interpolation=_aug_interp(interpolation))
        ops = [*primary.transforms, tail, *final.transforms]
    else:
        ops = list(create_transform(**common, auto_augment=auto_augment_string(cfg)).transforms)
        for op in ops:
            _zero_bit_posterize_as_black(op)
    return T.Compose([ArrayToPIL(), *ops])


def _posterize(img: Image.Image, bits_to_keep: int, **kwargs: Any) -> Image.Image:
    """timm's posterize, keeping "0 bits" meaning a black image (as in TF's AutoAugment, which the v0 policy
    copies): Pillow >= 11 refuses ``bits=0``, which made about 4 % of v0 images fail."""
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return _timm_posterize(img, bits_to_keep, **kwargs)


def _zero_bit_posterize_as_black(transform: Any) -> None:
    """Swap the posterize op inside a timm AutoAugment/RandAugment for :func:`_posterize`."""
    policy = getattr(transform, "policy", None) or [getattr(transform, "ops", [])]
    for sub_policy in policy:
        for op in sub_policy:
            if getattr(op, "aug_fn", None) is _timm_posterize:
                op.aug_fn = _posterize


def eval_transform(pre: PreprocessingLike) -> T.Compose:
    """timm's eval transform for ``pre``: resize to ``input_size / crop_pct``, center crop, normalise."""
    tf = create_transform(
        input_size=int(pre.input_size),
        is_training=False,
        interpolation=pre.interpolation,
        mean=tuple(pre.mean),
        std=tuple(pre.std),
        crop_pct=pre.crop_pct,
    )
    return T.Compose([ArrayToPIL(), *tf.transforms])


def _aug_interp(interpolation: str) -> T.InterpolationMode:
    return T.InterpolationMode.BILINEAR if interpolation == "random" else str_to_interp_mode(interpolation)
