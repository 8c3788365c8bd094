"""Building hub models with the requested initial weights, and the preprocessing their weights expect."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._weights import Weights, WeightsUnavailableError, find_checkpoint

if TYPE_CHECKING:
    from torch import nn

__all__ = ["Preprocessing", "create_model", "preprocessing_for"]


def create_model(name: str, num_classes: int, weights: Weights, drop_rate: float = 0.0) -> nn.Module:
    """A timm model with a fresh ``num_classes`` head on top of the requested weights.

    For ``Weights("dir", ...)`` the checkpoint file found by ``find_checkpoint`` is handed to timm through
    ``pretrained_cfg_overlay=dict(file=...)``, so timm applies the same key filtering and head replacement as
    for its own downloads. timm 1.0 reads such files with safetensors or ``torch.load(weights_only=True)``,
    never with unrestricted unpickling (tests/test_hub.py checks that a code-carrying pickle is refused).
    """
    import timm

    kwargs: dict[str, Any] = {"num_classes": num_classes, "drop_rate": drop_rate}
    if weights.kind == "random":
        return timm.create_model(name, pretrained=False, **kwargs)
    if weights.kind == "pretrained":
        return timm.create_model(name, pretrained=True, **kwargs)
    assert weights.directory is not None
    path = find_checkpoint(weights.directory, name)
    if path is None:
        raise WeightsUnavailableError(
            f"no checkpoint file for {name} in {str(weights.directory)!r} "
            f"(expected {name}.safetensors, .pth or .bin)"
        )
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is not None and cfg.custom_load:
        # timm would hand the file to the model's own loader, which need not be weights-only.
        raise WeightsUnavailableError(
            f"{name} uses a custom checkpoint loader; local checkpoint files are not supported for it"
        )
    # source=None: a cfg whose source is "hf-hub" would otherwise ignore the file and download.
    overlay = {"file": str(path), "source": None}
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)


@dataclass(frozen=True)
class Preprocessing:
    """How images must be prepared for a model: the statistics its pretrained weights were trained with.

    Stored with every trained pipeline (``to_dict`` is JSON-able), so that prediction and export reproduce the
    training-time input exactly.
    """

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"
    crop_pct: float = 0.875

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_size", int(self.input_size))
        object.__setattr__(self, "mean", tuple(float(x) for x in self.mean))
        object.__setattr__(self, "std", tuple(float(x) for x in self.std))
        object.__setattr__(self, "crop_pct", float(self.crop_pct))
        if self.input_size < 1:
            raise ValueError(f"input_size must be >= 1, got {self.input_size}")
        if len(self.mean) != len(self.std) or any(s <= 0 for s in self.std):
            raise ValueError(f"mean/std must have equal length and std > 0, got {self.mean}, {self.std}")
        # above 1 is legitimate: timm's VOLO configs use 1.15 (resize below the input size, pad the centre crop)
        if not 0.0 < self.crop_pct < math.inf:
            raise ValueError(f"crop_pct must be a positive number, got {self.crop_pct}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_size": self.input_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "crop_pct": self.crop_pct,
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Preprocessing:
        known = ("input_size", "mean", "std", "interpolation", "crop_pct")
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown preprocessing field(s): {', '.join(unknown)}")
        return cls(**{k: values[k] for k in known if k in values})


def preprocessing_for(model: nn.Module, max_input_size: int | None) -> Preprocessing:
    """The preprocessing of ``model``'s pretrained config, with a square input of at most ``max_input_size``.

    The side is the larger side of the config's input (timm models here are square); models whose config says
    ``fixed_input_size`` cannot be capped and keep theirs.
    """
    from timm.data import resolve_model_data_config

    fixed = bool(getattr(model, "pretrained_cfg", {}).get("fixed_input_size", False))
    return preprocessing_of_config(resolve_model_data_config(model), fixed, max_input_size)


def preprocessing_of_config(cfg: Mapping[str, Any], fixed: bool, max_input_size: int | None) -> Preprocessing:
    """``preprocessing_for`` from timm's data config of a model (no model needed: a hub can be checked cheaply)."""
    side = int(max(cfg["input_size"][-2:]))
    if max_input_size is not None and not fixed:
        if max_input_size < 1:
            raise ValueError(f"max_input_size must be >= 1, got {max_input_size}")
        side = min(side, int(max_input_size))
    return Preprocessing(
        input_size=side,
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        interpolation=str(cfg.get("interpolation", "bilinear")),
        crop_pct=float(cfg.get("crop_pct", 0.875)),
    )
