"""Randomness that does not depend on how the epochs were split into steps.

Freeze-thaw training runs a pipeline for a few epochs, pauses it, and continues it later, possibly after other
pipelines have used the same process. For a continued run to be exactly the run that was never paused, every
source of randomness (torch, numpy -- used by timm's Mixup --, Python's ``random`` -- used by some
augmentations -- and the data loader's shuffling generator) is reseeded at the start of every epoch from
(seed, configuration, epoch). The seed is derived with SHA-256, because Python's ``hash`` of a string is salted
per process.

The stream is named by the configuration (:func:`config_stream`), not by the pipeline id the optimizer gave
it: ids are numbered in the order the optimizer started pipelines, so seeding by id would make a
configuration's training noise depend on which pipelines were started before it. Keyed by configuration, one
configuration trains to the same curve in every run of the same seed, whatever optimizer picked it and when --
the common random numbers that make two searches (or two optimizers) comparable pipeline by pipeline.

The generator states at the end of an epoch are also stored in the checkpoint (``capture``/``restore``), so
that a checkpoint holds the complete training state even for code that reads randomness outside the epoch
loop.
"""

from __future__ import annotations

import hashlib
import json
import random

import numpy as np
import torch


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from the string forms of ``parts``, identical in every process and Python version."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") >> 1


def config_stream(config) -> str:
    """The name of a configuration's random stream: a digest of its hyperparameters, sorted by name, so that it
    is the same when the configuration is rebuilt from the results store or a checkpoint.

    The batch size is left out: the worker halves it when a batch does not fit in memory, and a pipeline must
    keep one stream through that (its initial model, which DELTA and L2-SP compare against, included), so that
    a halved pipeline trains exactly as if the smaller size had been asked for."""
    hyperparameters = {k: v for k, v in config.to_dict().items() if k != "batch_size"}
    text = json.dumps(hyperparameters, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


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
