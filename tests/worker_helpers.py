"""What the worker tests share: a worker on the digits cache at 32 px with random weights, on the CPU.

The cache itself is the session fixture ``digits_cache`` in conftest.py.
"""

from __future__ import annotations

from pathlib import Path

from qtt_cli.hub import parse_weights
from qtt_cli.worker import FinetuneWorker

MODEL = "mobilenetv3_small_050.lamb_in1k"
SIDE = 32


def make_worker(cache, root: Path, **kwargs) -> FinetuneWorker:
    kwargs.setdefault("max_epochs", 4)
    return FinetuneWorker(cache, parse_weights("random"), root, max_input_size=SIDE, device="cpu", **kwargs)
