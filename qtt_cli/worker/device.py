"""Which torch device a worker trains on, checked before the budget starts.

A device that does not exist (``--device cuda`` on a machine without a GPU, ``cuda:3`` on a two-GPU box, a
typo such as ``tpu9``) would otherwise fail every pipeline one by one while the budget burns.
"""

from __future__ import annotations

import torch

_KNOWN = ("cpu", "cuda", "mps")


class DeviceError(ValueError):
    """The requested device is unknown or not available on this machine."""


def resolve_device(text: str | None) -> torch.device:
    """The device for ``--device`` (default: CUDA when available, else CPU), or DeviceError saying why not."""
    if text is None or str(text).strip() in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    value = str(text).strip().lower()
    try:
        device = torch.device(value)
    except (RuntimeError, ValueError):
        raise DeviceError(f"unknown device {text!r}; use cpu, cuda, cuda:N or mps") from None
    if device.type not in _KNOWN:
        raise DeviceError(f"device {text!r} is not supported; use cpu, cuda, cuda:N or mps")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {text!r} was asked for, but this machine has no usable CUDA GPU "
                              "(torch.cuda.is_available() is False); use --device cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DeviceError(f"device {text!r} does not exist: this machine has {count} CUDA GPU(s), "
                              f"cuda:0 to cuda:{count - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"device {text!r} is not available on this machine; use --device cpu")
    return device
