"""Results store, run directory and budget parsing: the bookkeeping a resumed run relies on."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pyarrow.parquet as pq
import pytest

from qtt_cli.optimizer import pipeline_states
from qtt_cli.space.config import PipelineConfig
from qtt_cli.store import COLUMNS, ResultsStore, RunDir, RunDirError, make_rows
from qtt_cli.tuner import BudgetError, parse_budget

NOW = pd.Timestamp("2026-01-01", tz="UTC")
SGD = PipelineConfig(model="m1", opt="momentum", momentum=0.9, opt_betas=None, clip_grad=10.0)
ADAM = PipelineConfig(model="m2", opt="adam", sched="plateau", patience_epochs=2, linear_probing=True)


def epoch(e: int, top1: float):
    return SimpleNamespace(epoch=e, val_top1=top1, val_loss=1.0 / e, train_loss=2.0 / e, cost_s=0.5 * e)


def test_round_trip_keeps_types_and_inactive_values(tmp_path):
    store = ResultsStore(tmp_path)
    rows = make_rows("p0001", SGD, [epoch(1, 10.0), epoch(2, 20.0)], step=0, status="ok", error=None, wall_time=NOW)
    store.append(rows)
    store.append(make_rows("p0002", ADAM, [epoch(1, 30.0)], step=1, status="ok", error=None, wall_time=NOW))
    frame = ResultsStore(tmp_path).load()  # a fresh reader, from disk
    assert list(frame.columns) == list(COLUMNS)
    assert frame["momentum"].tolist()[0] == 0.9 and pd.isna(frame["momentum"].tolist()[2])
    assert frame["linear_probing"].tolist() == [False, False, True]
    assert str(frame["batch_size"].dtype) == "Int64" and str(frame["opt_betas"].dtype) == "string"
    states = pipeline_states(frame)
    assert states["p0001"].config == SGD and states["p0002"].config == ADAM
    assert states["p0001"].curve == (10.0, 20.0) and states["p0001"].costs == (0.5, 1.0)


def test_a_failed_step_is_recorded_with_its_error(tmp_path):
    store = ResultsStore(tmp_path)
    store.append(make_rows("p0001", SGD, [], step=0, status="failed", error="OOM", wall_time=NOW, failed_epoch=1))
    state = pipeline_states(store.load())["p0001"]
    assert state.status == "failed" and not state.alive and state.epochs == 0
    assert store.load()["error"].tolist() == ["OOM"]


def test_a_crash_while_writing_leaves_the_previous_file(tmp_path, monkeypatch):
    store = ResultsStore(tmp_path)
    store.append(make_rows("p0001", SGD, [epoch(1, 10.0)], step=0, status="ok", error=None, wall_time=NOW))

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", crash)
    with pytest.raises(OSError):
        store.append(make_rows("p0001", SGD, [epoch(2, 20.0)], step=1, status="ok", error=None, wall_time=NOW))
    monkeypatch.undo()
    assert ResultsStore(tmp_path).load()["epoch"].tolist() == [1]


def test_unknown_columns_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown result column"):
        ResultsStore(tmp_path).append([{"pipeline_id": "p", "accuracy": 1.0}])


def test_run_dir_refuses_foreign_content_and_a_second_writer(tmp_path):
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "file.txt").write_text("x")
    with pytest.raises(RunDirError, match="not a qtt run directory"):
        RunDir(tmp_path / "foreign").check_usable(overwrite=True)
    run = RunDir(tmp_path / "run")
    with run.lock(), pytest.raises(RunDirError, match="another qtt process"), run.lock():
        pass


@pytest.mark.parametrize(("text", "seconds"), [("4h", 14400), ("30m", 1800), ("90s", 90), ("1h30m", 5400),
                                               ("2.5h", 9000), ("600", 600), (" 1d ", 86400)])
def test_parse_budget(text, seconds):
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "4x", "h4", "-1", "0s", "4h junk"])
def test_parse_budget_rejects(text):
    with pytest.raises(BudgetError):
        parse_budget(text)


def test_a_store_from_before_a_new_hyperparameter_still_reads(tmp_path):
    """Runs written by an older qtt (no SPG/HVP columns) resume with those fields at their defaults."""
    store = ResultsStore(tmp_path)
    store.append(make_rows("p0001", SGD, [epoch(1, 10.0)], step=0, status="ok", error=None, wall_time=NOW))
    old = store.load().drop(columns=["spg", "spg_modules", "hvp_views", "hvp_every"])
    state = pipeline_states(old)["p0001"]
    assert state.config == SGD and state.config.hvp_views == 1 and state.config.spg is False


def test_a_store_file_from_before_new_columns_resumes_and_appends(tmp_path):
    """A results.parquet written by an older qtt (no SPG/HVP or overhead columns, written by pandas) is read with
    those hyperparameters at their defaults, and appending to it writes the current columns."""
    store = ResultsStore(tmp_path)
    store.append(make_rows("p0001", SGD, [epoch(1, 10.0)], step=0, status="ok", error=None, wall_time=NOW))
    old = store.load().drop(columns=["spg", "spg_modules", "hvp_views", "hvp_every", "overhead_s"])
    old.to_parquet(store.path, index=False)
    reopened = ResultsStore(tmp_path)
    assert pipeline_states(reopened.records())["p0001"].config == SGD
    reopened.append(make_rows("p0001", SGD, [epoch(2, 20.0)], step=1, status="ok", error=None, wall_time=NOW,
                              overhead_s=0.5))
    frame = ResultsStore(tmp_path).load()
    assert list(frame.columns) == list(COLUMNS) and frame["epoch"].tolist() == [1, 2]
    assert frame["hvp_views"].tolist() == [1, 1] and frame["overhead_s"].isna().tolist() == [True, False]
    assert pipeline_states(frame)["p0001"].costs == (0.5, 1.5)


def test_appends_keep_the_table_in_one_chunk(tmp_path):
    """Writing a table with a chunk per append grows the time of every write with the run; the store merges
    the new rows into one chunk per column."""
    store = ResultsStore(tmp_path)
    for step in range(5):
        store.append(make_rows("p0001", SGD, [epoch(step + 1, 10.0)], step=step, status="ok", error=None,
                               wall_time=NOW))
    assert {column.num_chunks for column in store._loaded().columns} == {1}
    assert ResultsStore(tmp_path).load()["epoch"].tolist() == [1, 2, 3, 4, 5]
