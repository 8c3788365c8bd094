"""The tuner's time between steps: one store write per step, and only the trained pipeline regrouped.

Before, every step rewrote the store and then regrouped the whole store into pipeline states twice, so the
time between two steps grew with the run (about 1 s per step at 67 pipelines on a loaded 2-core machine).
These tests fail if either comes back; they check the mechanism, not the machine's speed.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import qtt_cli.tuner.history as history_module
from qtt_cli.execution import InProcessExecutor
from qtt_cli.optimizer import pipeline_states
from qtt_cli.space.config import PipelineConfig
from qtt_cli.store import COLUMNS, ResultsStore, make_rows
from qtt_cli.tuner import SilentReporter, TuneSettings
from qtt_cli.tuner.history import History, recorded_steps
from qtt_cli.tuner.tuner import prepare, search
from qtt_cli.worker import EpochResult, StepResult

NOW = pd.Timestamp("2026-01-01", tz="UTC")
CONFIGS = [
    PipelineConfig(model="m1", opt="momentum", momentum=0.9, opt_betas=None, clip_grad=10.0),
    PipelineConfig(model="m2", opt="adam", sched="plateau", patience_epochs=2, linear_probing=True),
]


def epoch(e: int, top1: float) -> EpochResult:
    return EpochResult(e, top1, 1.0 / e, 2.0 / e, 0.5 * e)


def test_appended_rows_come_back_typed_as_a_fresh_reader_sees_them(tmp_path):
    """The rows ``append`` returns (which History keeps) are what a reload of the file gives, column for column:
    otherwise incremental states would drift from the store's."""
    rows = make_rows("p0001", CONFIGS[0], [epoch(1, 10.0), epoch(2, 20.0)], step=0, status="ok", error=None,
                     wall_time=NOW, overhead_s=0.25)
    rows += make_rows("p0002", CONFIGS[1], [], step=1, status="failed", error="OOM", wall_time=NOW, failed_epoch=1)
    rows[1]["pred_val_top1"] = 21.5
    rows[0]["batch_size"] = np.int64(32)  # numpy scalars, as results computed with numpy can carry
    stored = ResultsStore(tmp_path).append(rows)
    assert stored == ResultsStore(tmp_path).records()
    assert list(stored[0]) == list(COLUMNS) and stored[0]["batch_size"] == 32 and stored[2]["val_top1"] is None
    assert stored[1]["pred_val_top1"] == 21.5 and stored[0]["overhead_s"] == 0.25 and stored[1]["overhead_s"] == 0.0
    frame = ResultsStore(tmp_path).load()
    assert str(frame["batch_size"].dtype) == "Int64" and str(frame["error"].dtype) == "string"
    assert str(frame["wall_time"].dtype) == "datetime64[ns, UTC]" and frame["wall_time"].tolist()[0] == NOW


def test_incremental_states_equal_a_full_regroup_after_every_record(tmp_path):
    store = ResultsStore(tmp_path)
    store.append(make_rows("p0001", CONFIGS[0], [epoch(1, 5.0)], step=0, status="ok", error=None, wall_time=NOW))
    history = History(store)
    rng = random.Random(0)
    done: dict[str, int] = {"p0001": 1}
    for step in range(1, 40):
        pid = rng.choice([*done, f"p{len(done) + 1:04d}"])
        start = done.get(pid, 0)
        n = rng.choice([0, 1, 2])
        status = rng.choice(["ok", "ok", "failed", "diverged", "interrupted"]) if n < 2 else "ok"
        epochs = [epoch(start + i + 1, rng.uniform(0, 100)) for i in range(n)]
        rows = make_rows(pid, CONFIGS[len(done) % 2] if pid not in done else CONFIGS[0], epochs, step=step,
                         status=status, error=None if status == "ok" else "why", wall_time=NOW,
                         failed_epoch=start + 1, overhead_s=0.1 * n)
        if not rows:
            continue
        history.record(rows)
        done[pid] = start + n
        stored = ResultsStore(tmp_path).load()  # from disk, regrouped whole
        assert history.states() == pipeline_states(stored)
        assert list(history.states()) == list(pipeline_states(stored))  # first-seen order, which optimizers rely on
        assert history.steps == recorded_steps(stored)


class InstantWorker:
    """Trains nothing: each step "completes" its epochs at once and leaves the checkpoint the tuner's
    retention looks for. The tuner's own work between steps is then all there is."""

    def __init__(self, real) -> None:
        self.real = real

    def __getattr__(self, name):
        return getattr(self.real, name)

    def step(self, pid, config, start, end, deadline=None) -> StepResult:
        path = self.real.checkpoint_path(pid, end)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
        self.real.prune_checkpoints(pid, keep_epoch=end)
        return StepResult(pid, [epoch(e + 1, 10.0 + e + int(pid[1:])) for e in range(start, end)], "ok")


def test_a_step_writes_the_store_once_and_regroups_only_its_pipeline(tmp_path, digits_dir, monkeypatch, one_hub):
    writes: list[Path] = []
    real_write = history_module.ResultsStore.append

    def counting_append(self, rows):
        writes.append(self.path)
        return real_write(self, rows)

    grouped: list[str] = []
    real_group = history_module.pipeline_state

    def counting_group(pid, rows):
        grouped.append(pid)
        return real_group(pid, rows)

    monkeypatch.setattr(history_module.ResultsStore, "append", counting_append)
    monkeypatch.setattr(history_module, "pipeline_state", counting_group)
    settings = TuneSettings(dataset=digits_dir, out=tmp_path / "run", budget_s=3600, hub=str(one_hub),
                            weights="random", optimizer="random", max_input_size=32, max_epochs=3, seed=0,
                            max_steps=24)
    run = prepare(settings)
    run.worker = InstantWorker(run.worker)
    run.executor = InProcessExecutor(run.worker)
    try:
        summary = search(run, SilentReporter())
    finally:
        run.close()
    assert summary.steps == 24 and summary.pipelines >= 8
    assert len(writes) == 24  # one write of results.parquet per step, nothing else appended
    assert len(grouped) == 24  # one pipeline regrouped per step (the store was empty at the start)
    stored = ResultsStore(tmp_path / "run").load()
    assert pipeline_states(stored) == History(ResultsStore(tmp_path / "run")).states()
    assert not stored.duplicated(["pipeline_id", "epoch"]).any()


def test_a_failed_store_write_changes_neither_the_file_nor_the_history(tmp_path, monkeypatch):
    store = ResultsStore(tmp_path)
    store.append(make_rows("p0001", CONFIGS[0], [epoch(1, 5.0)], step=0, status="ok", error=None, wall_time=NOW))
    history = History(store)
    before = history.states()

    def crash(*args, **kwargs):
        raise OSError("write failed")

    monkeypatch.setattr(pq, "write_table", crash)
    rows = make_rows("p0001", CONFIGS[0], [epoch(2, 6.0)], step=1, status="ok", error=None, wall_time=NOW)
    with pytest.raises(OSError):
        history.record(rows)
    monkeypatch.undo()
    assert history.states() == before
    assert ResultsStore(tmp_path).load()["epoch"].tolist() == [1]
    assert [p.name for p in tmp_path.iterdir()] == ["results.parquet"]  # no temporary file left behind
    history.record(rows)  # the store object is still usable and consistent with the file
    assert ResultsStore(tmp_path).load()["epoch"].tolist() == [1, 2] == store.load()["epoch"].tolist()
