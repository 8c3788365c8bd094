"""The CUDA paths, on a real GPU: mixed precision, out-of-memory halving with a real allocator, ``--device cuda``
and ``--devices auto`` workers, SPG and HVP under autocast, and a GPU-trained run exported and used on the CPU.

The CI machine has no GPU, so these are skipped there with the reason; run them where one is
(``pytest tests/test_cuda.py``). Nothing here is simulated: an out-of-memory error is the caching allocator's
own, forced by capping this process's share of the GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from worker_helpers import MODEL

from qtt_cli.hub import parse_weights
from qtt_cli.space.config import PipelineConfig
from qtt_cli.worker import FinetuneWorker, epoch_path

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")


def _worker(cache, root, side: int = 32, **kwargs) -> FinetuneWorker:
    kwargs.setdefault("max_epochs", 4)
    return FinetuneWorker(cache, parse_weights("random"), root, max_input_size=side, device="cuda", **kwargs)


def cfg(**kwargs) -> PipelineConfig:
    return PipelineConfig(**{"model": MODEL, "batch_size": 32, **kwargs})


@pytest.fixture(autouse=True)
def release_gpu_memory():
    yield
    torch.cuda.set_per_process_memory_fraction(1.0)
    torch.cuda.empty_cache()


def test_amp_trains_in_mixed_precision_and_continues_from_its_checkpoint(digits_cache, tmp_path):
    """amp=True on CUDA is used (no 'not used' note), the GradScaler's state goes into the checkpoint, and a
    continued step restores it on a fresh worker (no warm run to take)."""
    result = _worker(digits_cache, tmp_path).step("a", cfg(amp=True), 0, 1)
    assert result.status == "ok", result
    assert not any("amp requested but not used" in n for n in result.notes)
    state = torch.load(epoch_path(tmp_path, "a", 1), map_location="cpu", weights_only=True)
    assert state["scaler"] and state["scaler"]["scale"] > 0
    continued = _worker(digits_cache, tmp_path).step("a", cfg(amp=True), 1, 2)
    assert continued.status == "ok", continued
    assert [e.epoch for e in continued.epochs] == [2] and np.isfinite(continued.epochs[0].val_top1)


def _peak_bytes(cache, root, batch_size: int, side: int) -> int:
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    result = _worker(cache, root, side).step(f"b{batch_size}", cfg(batch_size=batch_size), 0, 1)
    assert result.status == "ok", result
    return torch.cuda.max_memory_allocated()


def test_a_real_out_of_memory_halves_the_batch_and_the_step_finishes(digits_cache, tmp_path):
    """Cap the allocator between what a batch of 8 and a batch of 128 need (224 px): the batch of 128 runs out
    of memory for real, is halved until it fits, and the step ends ok with the smaller batch noted."""
    side = 224
    small, large = _peak_bytes(digits_cache, tmp_path, 8, side), _peak_bytes(digits_cache, tmp_path, 128, side)
    assert large > 2 * small, (small, large)
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction((small + (large - small) / 4) / total)
    result = _worker(digits_cache, tmp_path / "capped", side).step("oom", cfg(batch_size=128), 0, 1)
    assert result.status == "ok", result
    halved = [n for n in result.notes if "halved to" in n]
    assert halved, result.notes
    assert np.isfinite(result.epochs[0].val_top1)


@pytest.mark.parametrize("extra", [dict(spg=True, spg_modules=2, spg_drop=0.2, spg_cold_start=1),
                                   dict(hvp_views=2, hvp_every=1)], ids=["spg", "hvp"])  # fmt: skip
def test_spg_and_hvp_train_under_autocast(digits_cache, tmp_path, extra):
    result = _worker(digits_cache, tmp_path).step("m", cfg(amp=True, **extra), 0, 2)
    assert result.status == "ok", result
    assert [e.epoch for e in result.epochs] == [1, 2]
    assert all(np.isfinite(e.val_top1) for e in result.epochs)


def _qtt(*args: str, env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qtt_cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)  # fmt: skip


def _tune(data, out, *extra: str) -> subprocess.CompletedProcess:
    return _qtt("tune", str(data), "--out", str(out), "--hub", "tiny", "--weights", "random", "--quiet",
                "--max-input-size", "32", "--max-epochs", "2", "--budget", "30m", "--max-steps", "4",
                "--no-report", "--json", *extra)  # fmt: skip


def test_tune_on_cuda_then_export_and_predict_on_the_cpu(digits_split_dir, tmp_path):
    out = tmp_path / "run"
    tuned = _tune(digits_split_dir, out, "--device", "cuda")
    assert tuned.returncode == 0, tuned.stderr
    rows = pd.read_parquet(out / "results.parquet")
    assert (rows["status"] == "ok").any(), rows[["pipeline_id", "status", "error"]]
    assert json.loads(tuned.stdout)["steps"] == 4
    exported = _qtt("export-best", str(out), "--out", str(tmp_path / "export"))
    assert exported.returncode == 0, exported.stderr
    image = next((digits_split_dir / "test" / "3").iterdir())
    cpu_only = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # the GPU-trained export, used where there is none
    predicted = _qtt("predict", str(tmp_path / "export"), str(image), "--json", env=cpu_only)
    assert predicted.returncode == 0, predicted.stderr
    assert json.loads(predicted.stdout)


def test_devices_auto_runs_a_pinned_worker_per_gpu(digits_split_dir, tmp_path):
    out = tmp_path / "run"
    tuned = _tune(digits_split_dir, out, "--devices", "auto")
    assert tuned.returncode == 0, tuned.stderr
    log = (out / "logs" / "tune.log").read_text()
    for index in range(torch.cuda.device_count()):
        assert f"worker gpu{index} " in log, log
    rows = pd.read_parquet(out / "results.parquet")
    assert (rows["status"] == "ok").any(), rows[["pipeline_id", "status", "error"]]
