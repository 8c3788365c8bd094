"""What the worker tests share: a worker on the digits cache at 32 px with random weights, on the CPU.

The cache itself is the session fixture ``digits_cache`` in conftest.py.
"""

from __future__ import annotations

from pathlib import Path

import torch

from qtt_cli.hub import parse_weights
from qtt_cli.worker import FinetuneWorker, epoch_path

MODEL = "mobilenetv3_small_050.lamb_in1k"
SIDE = 32


def make_worker(cache, root: Path, **kwargs) -> FinetuneWorker:
    kwargs.setdefault("max_epochs", 4)
    return FinetuneWorker(cache, parse_weights("random"), root, max_input_size=SIDE, device="cpu", **kwargs)


def assert_same_state(root_a: Path, root_b: Path, pid: str, epoch: int, other_pid: str | None = None) -> None:
    """The epoch checkpoints of ``pid`` under two checkpoint roots (``other_pid`` under the second, if given)
    hold the same training state: weights, optimizer, schedule, best value and history (all but the timings),
    tensor for tensor."""
    a = torch.load(epoch_path(root_a, pid, epoch), map_location="cpu", weights_only=True)
    b = torch.load(epoch_path(root_b, other_pid or pid, epoch), map_location="cpu", weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for i, s in a["optimizer"]["state"].items():
        for k, v in s.items():
            assert torch.equal(v, b["optimizer"]["state"][i][k]), (i, k)
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
    assert a["scheduler"] == b["scheduler"] and a["best"] == b["best"]
    untimed = [[{k: v for k, v in h.items() if k != "cost_s"} for h in s["history"]] for s in (a, b)]
    assert untimed[0] == untimed[1]
