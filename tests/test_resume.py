"""Crash safety: a killed or interrupted `qtt tune` loses at most the step in flight, and rerunning the
same command resumes without duplicating or losing a row."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qtt_cli.store import RunDir

pytestmark = pytest.mark.slow


def _command(dataset: Path, out: Path, hub: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "qtt_cli", "tune", str(dataset), "--out", str(out), "--hub", str(hub),
        "--weights", "random", "--max-input-size", "32", "--max-epochs", "3", "--budget", "10m",
        "--optimizer", "random", *extra,
    ]


def _wait_for_steps(out: Path, steps: int, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    state = out / "state.json"
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"qtt exited early: {proc.communicate()}")
        if state.exists() and json.loads(state.read_text())["steps"] >= steps:
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for steps")


@pytest.fixture(scope="module")
def slow_hub(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hub") / "one.yaml"
    path.write_text("models:\n  - name: mobilenetv3_small_050.lamb_in1k\n    input_size: 32\n")
    return path


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM])
def test_killed_run_resumes_without_losing_or_duplicating_rows(sig, tmp_path, digits_dir, slow_hub):
    out = tmp_path / "run"
    cmd = _command(digits_dir, out, slow_hub, "--max-steps", "5")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    _wait_for_steps(out, 2, proc)
    time.sleep(0.3)  # most likely inside step 3 now
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == (-signal.SIGKILL if sig == signal.SIGKILL else 130), stderr
    # Ctrl-C and SIGTERM still leave the run report of what was done (kill -9 cannot)
    report = out / "report" / "index.html"
    assert report.exists() == (sig != signal.SIGKILL), stderr

    before = RunDir(out).store.load()
    steps_before = RunDir(out).read_state().steps
    assert len(before) == steps_before >= 2  # one epoch per step here

    resumed = subprocess.run(cmd + ["--json"], capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    after = RunDir(out).store.load()
    assert json.loads(resumed.stdout)["steps"] == 5
    # every row recorded before the kill is still there, unchanged, and nothing is duplicated
    assert after.iloc[: len(before)]["pipeline_id"].tolist() == before["pipeline_id"].tolist()
    assert after.iloc[: len(before)]["val_top1"].tolist() == before["val_top1"].tolist()
    assert not after.duplicated(["pipeline_id", "epoch"]).any()
    # max_epochs=3, one epoch per step: p0001 1-3, then p0002 1-2
    assert list(zip(after["pipeline_id"], after["epoch"], strict=True)) == [
        ("p0001", 1), ("p0001", 2), ("p0001", 3), ("p0002", 1), ("p0002", 2)
    ]
    assert RunDir(out).read_state().sessions == 2


def test_budget_is_respected_and_charged_on_an_injected_clock(tmp_path, digits_dir, slow_hub, cheap_space):
    """The loop's mechanism, not the machine's speed: no step starts once the budget is used, and the time
    used is what the clock says (the cut inside an epoch is the worker's, tested in test_worker.py). The
    clock advances 0.5 s per reading whatever the machine does, so this holds on a loaded machine."""
    import itertools

    from qtt_cli.tuner import TuneSettings
    from qtt_cli.tuner.events import SilentReporter
    from qtt_cli.tuner.tuner import prepare, search

    ticks = itertools.count()
    readings: list[float] = []

    def clock() -> float:
        readings.append(0.5 * next(ticks))
        return readings[-1]

    started: list[float] = []

    class Recorder(SilentReporter):
        def step_started(self, *args) -> None:
            started.append(run_clock.used())

    settings = TuneSettings(dataset=digits_dir, out=tmp_path / "run", budget_s=6.0, hub=str(slow_hub),
                            weights="random", optimizer="random", max_input_size=32, max_epochs=50,
                            space_file=cheap_space)
    run = prepare(settings)
    try:
        from qtt_cli.tuner.budget import BudgetClock

        run_clock = BudgetClock(0.0, clock)  # the test's own view of the same ticking clock
        summary = search(run, Recorder(), now=clock)
    finally:
        run.close()
    assert summary.reason == "budget"
    assert started and all(t < settings.budget_s + 1.0 for t in started)
    state = RunDir(tmp_path / "run").read_state()
    assert settings.budget_s <= state.used_s <= settings.budget_s + 2.0  # charged by the clock, not wall time
    history = RunDir(tmp_path / "run").store.load()
    assert history["epoch"].is_monotonic_increasing
    assert (history["status"].isin(["ok", "interrupted"])).all()


def test_resume_command_uses_saved_settings(tmp_path, digits_dir, slow_hub):
    out = tmp_path / "run"
    first = subprocess.run(_command(digits_dir, out, slow_hub, "--max-steps", "1"), capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    resumed = subprocess.run(
        [sys.executable, "-m", "qtt_cli", "resume", str(out), "--max-steps", "2", "--json"],
        capture_output=True, text=True,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["steps"] == 2
    assert RunDir(out).store.load()["epoch"].tolist() == [1, 2]


def test_changed_settings_on_an_existing_run_are_refused(tmp_path, digits_dir, slow_hub):
    out = tmp_path / "run"
    first = subprocess.run(_command(digits_dir, out, slow_hub, "--max-steps", "1"), capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    changed = subprocess.run(_command(digits_dir, out, slow_hub, "--max-steps", "2", "--seed", "7"),
                             capture_output=True, text=True)
    assert changed.returncode == 2
    assert "other settings" in changed.stderr and "seed" in changed.stderr and "--overwrite" in changed.stderr
    assert "Traceback" not in changed.stderr
    fresh = subprocess.run(_command(digits_dir, out, slow_hub, "--max-steps", "1", "--seed", "7", "--overwrite"),
                           capture_output=True, text=True)
    assert fresh.returncode == 0, fresh.stderr
    assert RunDir(out).read_state().steps == 1
