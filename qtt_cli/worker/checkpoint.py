"""Checkpoint files of a pipeline and their retention.

Layout: ``<root>/<pipeline_id>/epoch-<e:04d>.pt`` (full training state after e epochs) and
``best.safetensors`` + ``best.json`` (weights and metadata of the best validation epoch so far).

Epoch checkpoints are written with ``torch.save`` of plain dicts of tensors and primitives and read back with
``weights_only=True``: never pickled objects, so a checkpoint can be opened without trusting it. Every file is
written to a temporary name and moved into place with ``os.replace``, so a crash leaves the previous file,
never a half-written one. The best weights are a safetensors file (what export and users load); ``best.json``
is written after it and is the marker that the pair is complete.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from qtt_cli.store.files import atomic_write

FORMAT_VERSION = 1
_EPOCH_FILE = re.compile(r"^epoch-(\d{4,})\.pt$")
_PIPELINE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def check_pipeline_id(pipeline_id: str) -> None:
    """Pipeline ids become directory names: refuse anything that could escape the checkpoint root."""
    if not isinstance(pipeline_id, str) or not _PIPELINE_ID.match(pipeline_id) or pipeline_id in (".", ".."):
        raise ValueError(f"pipeline_id must be a plain name ([A-Za-z0-9._-], not starting with . or -), "
                         f"got {pipeline_id!r}")


def pipeline_dir(root: Path, pipeline_id: str) -> Path:
    check_pipeline_id(pipeline_id)
    return Path(root) / pipeline_id


def epoch_path(root: Path, pipeline_id: str, epoch: int) -> Path:
    return pipeline_dir(root, pipeline_id) / f"epoch-{epoch:04d}.pt"


def best_paths(root: Path, pipeline_id: str) -> tuple[Path, Path]:
    d = pipeline_dir(root, pipeline_id)
    return d / "best.safetensors", d / "best.json"


def epochs_on_disk(root: Path, pipeline_id: str) -> list[int]:
    d = pipeline_dir(root, pipeline_id)
    if not d.is_dir():
        return []
    return sorted(int(m.group(1)) for f in d.iterdir() if (m := _EPOCH_FILE.match(f.name)))


def _atomic_write(path: Path, write) -> None:
    """Temporary file + ``os.replace``; a full disk raises ``DiskFullError`` and leaves the old file."""
    atomic_write(path, write)


def save_epoch(path: Path, state: dict) -> None:
    """Write a training state (dict of tensors/primitives) atomically."""
    _atomic_write(path, lambda tmp: torch.save({"format": FORMAT_VERSION, **state}, tmp))


def load_epoch(path: Path) -> dict:
    """Read a training state written by :func:`save_epoch` (``weights_only=True``, on CPU)."""
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint to continue from: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path} has checkpoint format {state.get('format')!r}, expected {FORMAT_VERSION}")
    return state


def save_best(root: Path, pipeline_id: str, model_state: dict[str, torch.Tensor], meta: dict) -> None:
    """Write ``best.safetensors`` (weights only, every tensor its own contiguous copy) then ``best.json``."""
    weights, info = best_paths(root, pipeline_id)
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model_state.items()}
    _atomic_write(weights, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    text = json.dumps(meta, indent=2, sort_keys=True)
    _atomic_write(info, lambda tmp: Path(tmp).write_text(text + "\n", encoding="utf-8"))


def prune_checkpoints(root: Path, pipeline_id: str, keep_epoch: int | None) -> list[int]:
    """Delete the epoch checkpoints of a pipeline except ``keep_epoch``; return the epochs deleted."""
    removed = []
    for e in epochs_on_disk(root, pipeline_id):
        if e != keep_epoch:
            epoch_path(root, pipeline_id, e).unlink(missing_ok=True)
            removed.append(e)
    return removed


def remove_pipeline(root: Path, pipeline_id: str, keep_best: bool) -> None:
    """Delete every epoch checkpoint of a pipeline, and its best weights unless ``keep_best``."""
    d = pipeline_dir(root, pipeline_id)
    if not d.is_dir():
        return
    if not keep_best:
        shutil.rmtree(d)
        return
    prune_checkpoints(root, pipeline_id, None)
    for leftover in d.glob(".*.tmp"):
        leftover.unlink(missing_ok=True)
