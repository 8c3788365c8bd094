"""A full disk stops the run with a clear message and exit 2, leaves nothing half-written, and the rerun
resumes once space is freed (issue 11, item 8). On a real (small) tmpfs: needs root, as CI has."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tune_helpers as helpers
from typer.testing import CliRunner

from qtt_cli.cli.app import app
from qtt_cli.store import RunDir

runner = CliRunner()


def fill(disk: Path, leave_bytes: int) -> Path:
    filler = disk / "filler.bin"
    free = shutil.disk_usage(disk).free
    with open(filler, "wb") as fh:
        os.posix_fallocate(fh.fileno(), 0, max(free - leave_bytes, 1))
    return filler


def tune_args(dataset: Path, out: Path, hub: Path, steps: int) -> list[str]:
    return helpers.tune_args(dataset, out, hub, "--max-steps", str(steps))


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if ".tmp" in p.name]


def test_disk_full_during_a_step_stops_the_run_and_the_rerun_resumes(small_disk, digits_dir, one_hub):
    out = small_disk / "run"
    assert runner.invoke(app, tune_args(digits_dir, out, one_hub, 1)).exit_code == 0
    before = RunDir(out).store.load()
    checkpoint = out / "checkpoints" / "p0001" / "epoch-0001.pt"
    saved = checkpoint.read_bytes()

    filler = fill(small_disk, leave_bytes=200_000)  # room for the small JSON files, not for a checkpoint
    result = runner.invoke(app, tune_args(digits_dir, out, one_hub, 3))
    assert result.exit_code == 2, result.output
    assert "no space left" in result.stderr and "Traceback" not in result.output
    assert RunDir(out).store.load().equals(before)  # the store is intact, no failed pipeline recorded
    assert checkpoint.read_bytes() == saved  # so is the checkpoint the pipeline continues from
    assert leftovers(out) == []

    filler.unlink()
    resumed = runner.invoke(app, tune_args(digits_dir, out, one_hub, 3))
    assert resumed.exit_code == 0, resumed.output
    history = RunDir(out).store.load()
    assert list(history["epoch"]) == [1, 2, 3] and (history["status"] == "ok").all()


def test_a_full_disk_before_the_first_step_is_bad_input(small_disk, digits_dir, one_hub):
    out = small_disk / "run"
    filler = fill(small_disk, leave_bytes=0)
    result = runner.invoke(app, tune_args(digits_dir, out, one_hub, 1))
    assert result.exit_code == 2, result.output
    assert "no space left" in result.stderr and "Traceback" not in result.output
    assert leftovers(small_disk) == []
    filler.unlink()
    assert runner.invoke(app, tune_args(digits_dir, out, one_hub, 1)).exit_code == 0


@pytest.mark.slow
def test_disk_full_in_a_worker_process_stops_the_run_and_the_rerun_resumes(small_disk, digits_dir, one_hub):
    """With --workers 2 the checkpoint is written in a worker process: a full disk there must stop the run as it
    does in-process (exit 2, nothing recorded lost), not kill the worker, be retried as "worker died" and burn
    the budget on the next pipelines."""
    out = small_disk / "run"

    def tune(steps: int) -> subprocess.CompletedProcess:
        args = [sys.executable, "-m", "qtt_cli", *tune_args(digits_dir, out, one_hub, steps), "--workers", "2"]
        return subprocess.run(args, capture_output=True, text=True, timeout=900)

    first = tune(2)
    assert first.returncode == 0, first.stderr
    before = RunDir(out).store.load()
    filler = fill(small_disk, leave_bytes=200_000)
    full = tune(6)
    assert full.returncode == 2, full.stderr
    assert "no space left" in full.stderr and "Traceback" not in full.stderr
    after = RunDir(out).store.load()
    assert after.equals(before), after[["pipeline_id", "epoch", "status", "error"]]  # no "worker died" rows
    filler.unlink()
    resumed = tune(4)
    assert resumed.returncode == 0, resumed.stderr
    assert RunDir(out).store.load()["step"].nunique() == 4
    assert leftovers(out) == []
