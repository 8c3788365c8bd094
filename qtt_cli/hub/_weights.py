"""Where the pretrained weights of hub models come from, checked before the time budget starts.

qtt never downloads a whole hub up front: a model's weights are fetched (by timm, from the Hugging Face hub)
when it is first trained. What must be settled before the clock runs is that they *can* be obtained, so that a
machine without internet fails at once with a useful message instead of losing every trial to a network error.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from ._registry import Hub

__all__ = [
    "CHECKPOINT_SUFFIXES",
    "Weights",
    "WeightsUnavailableError",
    "ensure_weights_available",
    "checkpoint_problem",
    "find_checkpoint",
    "parse_weights",
]

# Preferred first: safetensors cannot execute code; .pth/.bin are read with torch.load(weights_only=True).
CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".bin")
_HF_FILENAMES = ("model.safetensors", "pytorch_model.bin")
_ALTERNATIVES = (
    "Alternatives: `--weights random` (train from scratch, no download), or `--weights DIR` with a folder of "
    "local checkpoint files named after the models (e.g. DIR/{example}.safetensors; .pth/.bin also accepted)."
)


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights for some hub models cannot be obtained."""


@dataclass(frozen=True)
class Weights:
    """Which initial weights the models get.

    Args:
        kind: ``"pretrained"`` (timm's weights, from the Hugging Face hub or its cache), ``"random"`` (no
            pretraining) or ``"dir"`` (checkpoint files in ``directory``).
        directory: the folder of checkpoint files when ``kind == "dir"``.
    """

    kind: Literal["pretrained", "random", "dir"] = "pretrained"
    directory: Path | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("pretrained", "random", "dir"):
            raise ValueError(f"weights kind must be pretrained, random or dir, got {self.kind!r}")
        if (self.kind == "dir") != (self.directory is not None):
            raise ValueError("a directory is given exactly when kind is 'dir'")
        if self.directory is not None:
            object.__setattr__(self, "directory", Path(self.directory))

    @classmethod
    def from_dir(cls, directory: str | Path) -> Weights:
        return cls("dir", Path(directory))

    @property
    def pretrained(self) -> bool:
        """Whether models start from pretrained weights (from the hub or from files)."""
        return self.kind != "random"

    def __str__(self) -> str:
        """The ``--weights`` text that gives these weights back through ``parse_weights``."""
        return str(self.directory) if self.kind == "dir" else self.kind


def parse_weights(text: str | Path) -> Weights:
    """Parse ``--weights``: ``pretrained``, ``random`` or an existing directory of checkpoint files."""
    value = str(text).strip()
    if value in ("pretrained", "random"):
        return Weights(value)  # type: ignore[arg-type]
    path = Path(value).expanduser()
    if path.is_dir():
        return Weights.from_dir(path)
    if path.exists():
        raise ValueError(f"--weights {value!r} is a file; give the folder that holds the checkpoint files")
    raise ValueError(f"--weights must be 'pretrained', 'random' or an existing directory, got {value!r}")


def find_checkpoint(directory: Path, name: str) -> Path | None:
    """The checkpoint file of model ``name`` in ``directory``, or ``None``.

    Looked for, in order: ``<name><suffix>``, then the bare architecture ``<arch><suffix>`` (so both
    ``dla46x_c.in1k.safetensors`` and ``dla46x_c.safetensors`` work), for the suffixes in
    ``CHECKPOINT_SUFFIXES``; then the Hugging Face layout ``<name>/model.safetensors``.
    """
    arch = name.split(".", 1)[0]
    stems = [name] if arch == name else [name, arch]
    for stem in stems:
        for suffix in CHECKPOINT_SUFFIXES:
            candidate = directory / f"{stem}{suffix}"
            if candidate.is_file():
                return candidate
    for stem in stems:
        for filename in _HF_FILENAMES:
            candidate = directory / stem / filename
            if candidate.is_file():
                return candidate
    return None


def checkpoint_problem(path: Path) -> str | None:
    """Why ``path`` is not a readable checkpoint (a truncated or garbage file), or ``None``.

    Reads the safetensors header, or maps a torch file with ``weights_only=True``: no weights are copied, so
    checking every model of a hub before the budget starts costs little.
    """
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                if not list(f.keys()):
                    return f"{path}: holds no tensors"
            return None
        import torch

        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:  # a legacy (non-zip) torch file cannot be mapped: read it
            if "mmap can only be used" not in str(exc):
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or not state:
            return f"{path}: not a state dict"
        return None
    except Exception as exc:  # noqa: BLE001 -- any reader error means the file is unusable
        first = (str(exc).splitlines() or ["unreadable"])[0].split(". ")[0]  # torch's advice to unpickle: no
        return f"{path}: {type(exc).__name__}: {first}"


def ensure_weights_available(hub: Hub, weights: Weights, *, timeout_s: float = 5.0) -> None:
    """Fail now, naming the models, if some hub model's initial weights cannot be obtained.

    ``random`` always works. ``dir`` needs a checkpoint file for every model. ``pretrained`` is fine for
    models already in the Hugging Face cache; for the others the hub must be reachable (one short request,
    skipped when ``HF_HUB_OFFLINE`` is set). Nothing is downloaded here.
    """
    if weights.kind == "random":
        return
    if weights.kind == "dir":
        assert weights.directory is not None
        if not weights.directory.is_dir():
            raise WeightsUnavailableError(
                f"weights directory {str(weights.directory)!r} does not exist. "
                + _ALTERNATIVES.format(example=hub.names[0])
            )
        missing = [name for name in hub.names if find_checkpoint(weights.directory, name) is None]
        if missing:
            raise WeightsUnavailableError(
                f"no checkpoint file in {str(weights.directory)!r} for: {', '.join(missing)}. "
                + _ALTERNATIVES.format(example=missing[0])
            )
        unreadable = [problem for name in hub.names
                      if (problem := checkpoint_problem(find_checkpoint(weights.directory, name)))]
        if unreadable:
            raise WeightsUnavailableError(
                "cannot read these checkpoint files: " + "; ".join(unreadable)
                + ". Replace them (examples/prepare_*.py writes valid ones) or use `--weights random`."
            )
        return
    missing = [name for name in hub.names if not is_cached(name)]
    if not missing:
        return
    if hub_offline():
        reason = "HF_HUB_OFFLINE is set"
    elif not hub_reachable(timeout_s):
        reason = f"the Hugging Face hub ({_endpoint()}) cannot be reached"
    else:
        return
    raise WeightsUnavailableError(
        f"pretrained weights are not in the local cache and {reason}; missing: {', '.join(missing)}. "
        + _ALTERNATIVES.format(example=missing[0])
    )


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, resolved from the environment at call time (tests may change it)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface"
    )
    return Path(home).expanduser() / "hub"


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def hub_reachable(timeout_s: float = 5.0) -> bool:
    """Whether the Hugging Face hub answers at all (any HTTP status counts as reachable)."""
    request = urllib.request.Request(_endpoint() + "/api/models/timm/resnet18.a1_in1k", method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s):  # noqa: S310 - fixed https endpoint
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError, ValueError):
        return False


def hf_repo(name: str) -> tuple[str, Sequence[str]] | None:
    """The Hugging Face repository and candidate file names timm downloads ``name``'s weights from."""
    import timm

    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except Exception:  # noqa: BLE001 - unknown names: no repository
        return None
    if cfg is None or not cfg.hf_hub_id:
        return None
    filenames = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else _HF_FILENAMES
    return cfg.hf_hub_id, filenames


def is_cached(name: str) -> bool:
    """Whether timm would find ``name``'s pretrained weights in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    repo = hf_repo(name)
    if repo is None:
        return False
    repo_id, filenames = repo
    cache_dir = hf_cache_dir()
    for filename in filenames:
        found = try_to_load_from_cache(repo_id, filename, cache_dir=str(cache_dir))
        if isinstance(found, str):
            return True
    return False
