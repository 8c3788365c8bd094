"""A step's recorded cost is what the budget charges, and running out of memory anywhere in a step only
halves the batch size (issue 10, defects 3 and 5)."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
import torch
from worker_helpers import MODEL, make_worker

from qtt_cli.optimizer import pipeline_states
from qtt_cli.space.config import PipelineConfig
from qtt_cli.store import ResultsStore, make_rows
from qtt_cli.worker import worker as worker_module
from qtt_cli.worker.strategies import delta as delta_module

SPG = dict(spg=True, spg_modules=2, spg_drop=0.2)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models train faster on one thread than on several fighting over shared cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def cfg(**kwargs) -> PipelineConfig:
    return PipelineConfig(**{"model": MODEL, "batch_size": 32, **kwargs})


@pytest.mark.parametrize("config", [cfg(), cfg(**SPG, spg_cold_start=1), cfg(delta_reg=0.1)],
                         ids=["plain", "spg-cold-start", "delta"])  # fmt: skip
def test_recorded_costs_of_a_step_sum_to_its_wall_time(digits_cache, tmp_path, config):
    """cost_s of each epoch + the step's overhead_s = the seconds the step took (which the budget charges):
    model build, checkpoint restore and writes, the SPG cold start and DELTA's attention all count."""
    worker = make_worker(digits_cache, tmp_path)
    for start, end in ((0, 1), (1, 2)):  # a fresh step and a continued one (restore from a checkpoint)
        t0 = time.perf_counter()
        result = worker.step("p", config, start, end)
        wall = time.perf_counter() - t0
        assert result.status == "ok", result
        recorded = sum(e.cost_s for e in result.epochs) + result.overhead_s
        assert result.overhead_s > 0
        assert recorded == pytest.approx(wall, abs=0.02 + 0.01 * wall)


def test_the_store_puts_the_overhead_on_the_steps_first_row_and_the_cost_predictor_sees_it(tmp_path):
    epoch = type("E", (), {"val_loss": 1.0, "train_loss": 2.0})
    epochs = [type("E", (epoch,), {"epoch": k, "val_top1": 10.0 * k, "cost_s": 1.0})() for k in (1, 2)]
    store = ResultsStore(tmp_path)
    now = pd.Timestamp.now(tz="UTC")
    store.append(make_rows("p1", cfg(), epochs, step=0, status="ok", error=None, wall_time=now, overhead_s=0.5))
    frame = store.load()
    assert frame["overhead_s"].tolist() == [0.5, 0.0]
    assert (frame["cost_s"] + frame["overhead_s"]).sum() == pytest.approx(2.5)
    assert pipeline_states(frame)["p1"].costs == (1.5, 1.0)


def _oom_above(limit: int):
    def check(batch_size: int) -> None:
        if batch_size > limit:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    return check


def test_out_of_memory_in_the_spg_cold_start_halves_the_batch_size(digits_cache, tmp_path, monkeypatch):
    """The cold start trains at learning rate 0 before epoch 1; an SPG pipeline whose batch does not fit used to
    fail there, outside the batch-halving handler."""
    original = worker_module.FinetuneWorker._cold_start
    check = _oom_above(16)

    def cold_start(self, run, config, deadline, notes):
        check(run.batch_size)
        return original(self, run, config, deadline, notes)

    monkeypatch.setattr(worker_module.FinetuneWorker, "_cold_start", cold_start)
    result = make_worker(digits_cache, tmp_path).step("s", cfg(**SPG, spg_cold_start=1, batch_size=64), 0, 1)
    assert result.status == "ok", result
    assert any("halved to 16" in n for n in result.notes)


def test_out_of_memory_in_deltas_attention_halves_the_batch_size(digits_cache, tmp_path, monkeypatch):
    """DELTA's channel attention runs over the training images while the run is built, before any epoch."""
    original = delta_module.channel_attention
    tried = []

    def attention(reference, loader, num_classes, device):
        tried.append(loader.batch_size)
        _oom_above(16)(loader.batch_size)
        return original(reference, loader, num_classes, device)

    monkeypatch.setattr(delta_module, "channel_attention", attention)
    worker = make_worker(digits_cache, tmp_path)
    result = worker.step("d", cfg(delta_reg=0.1, batch_size=64), 0, 1)
    assert result.status == "ok", result
    assert tried == [64, 32, 16]
    assert sum("does not fit" in n for n in result.notes) == 2
    assert np.isfinite(result.epochs[0].val_top1)
