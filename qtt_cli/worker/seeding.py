"""Randomness that does not depend on how the epochs were split into steps.

Freeze-thaw training runs a pipeline for a few epochs, pauses it, and continues it later, possibly after other
pipelines have used the same process. For a continued run to be exactly the run that was never paused, every
source of randomness (torch, numpy -- used by timm's Mixup --, Python's ``random`` -- used by some
augmentations -- and the data loader's shuffling generator) is reseeded at the start of every epoch from
(seed, pipeline id, epoch). The seed is derived with SHA-256, because Python's ``hash`` of a string is salted
per process.

The generator states at the end of an epoch are also stored in the checkpoint (``capture``/``restore``), so
that a checkpoint holds the complete training state even for code that reads randomness outside the epoch
loop.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from the string forms of ``parts``, identical in every process and Python version."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") >> 1


def reseed(seed: int, generator: torch.Generator | None = None) -> None:
    """Seed torch (CPU and CUDA), numpy, Python ``random`` and ``generator`` from one integer."""
    torch.manual_seed(seed)  # also seeds every CUDA device
    np.random.seed(seed % 2**32)
    random.seed(seed)
    if generator is not None:
        generator.manual_seed(seed)


def capture(generator: torch.Generator | None = None) -> dict:
    """The current generator states as tensors and primitives only (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
    }
    if generator is not None:
        state["loader"] = generator.get_state()
    return state


def restore(state: dict, generator: torch.Generator | None = None) -> None:
    """Inverse of :func:`capture`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and "loader" in state:
        generator.set_state(state["loader"])
