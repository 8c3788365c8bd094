"""``--executor ray`` for real: a Ray head on 127.0.0.1 started by the test, a 2-worker tune, the store checked,
an actor killed with SIGKILL mid-run; and the message when Ray is not installed. No mocks of Ray."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from test_execution import QTT, TINY, completed_epochs_are_contiguous, settings

from qtt_cli.execution import WORKER_DIED

# The tests' Ray lives on 127.0.0.1 only: a node, and this process as a driver, on the loopback address (read by
# Ray when it is imported, so before the import).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
# Ray >= 2.59 turns token authentication on for `ray start --head` whenever ~/.ray/auth_token exists (any earlier
# local `ray.init()` writes one), but a client joining with an address does not send it (ray-project/ray#64755,
# review): the test's tune then fails with InvalidAuthToken. The head and its clients here opt out together.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
ray = pytest.importorskip("ray")
RAY = str(Path(sys.executable).parent / "ray")


def test_executor_ray_without_ray_fails_before_the_budget_naming_the_extra(tmp_path, digits_dir):
    # Ray made unimportable in the child process (sys.modules entry None): the real ImportError path
    code = ("import sys; sys.modules['ray'] = None; from qtt_cli.cli.app import main; "
            f"sys.argv = ['qtt', 'tune', {str(digits_dir)!r}, '--out', {str(tmp_path / 'run')!r}, "
            f"'--executor', 'ray', *{TINY!r}]; main()")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "qtt-cli[ray]" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A Ray head on this machine, its node on 127.0.0.1, 2 CPUs; stopped afterwards."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # node IP = loopback, not the machine's
    temp = tmp_path_factory.mktemp("ray")
    started = subprocess.run([RAY, "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
                              "--disable-usage-stats", f"--temp-dir={temp}"],
                             capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert started.returncode == 0, started.stderr
    assert "127.0.0.1" in started.stdout + started.stderr
    yield f"127.0.0.1:{port}"
    subprocess.run([RAY, "stop", "--force"], capture_output=True, timeout=120, env=env)
    shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_a_two_worker_tune_on_a_ray_head_fills_the_store(tmp_path, digits_dir, ray_head):
    out = tmp_path / "run"
    done = subprocess.run([QTT, "tune", str(digits_dir), "--out", str(out), "--budget", "60m", "--max-epochs", "3",
                           "--max-steps", "6", "--workers", "2", "--executor", "ray", "--address", ray_head,
                           "--quiet", "--json", *TINY],
                          capture_output=True, text=True, timeout=1800)  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = completed_epochs_are_contiguous(out)
    assert pd.read_parquet(out / "results.parquet")["step"].nunique() == 6 and len(rows) >= 1
    assert "ray actor" in (out / "logs" / "tune.log").read_text()
    resumed = subprocess.run([QTT, "leaderboard", str(out)], capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0 and "p0001" in resumed.stdout


@pytest.mark.slow
def test_a_killed_ray_actor_is_recorded_as_worker_died_and_replaced(tmp_path, digits_dir, ray_head):
    from qtt_cli.execution.ray_executor import RayExecutor
    from qtt_cli.tuner import SilentReporter
    from qtt_cli.tuner.tuner import prepare, search

    run = prepare(settings(digits_dir, tmp_path / "run", workers=2, max_steps=7, executor="ray",
                           address=ray_head))  # fmt: skip
    executor = run.executor
    assert isinstance(executor, RayExecutor)
    submit, killed = executor.submit, {}

    def submit_and_kill(task):
        submit(task)
        if not killed and task.start_epoch >= 1:
            actor = next(a for a, t in executor.busy.items() if t is task)
            os.kill(executor.pids[actor], signal.SIGKILL)
            killed["task"] = task

    executor.submit = submit_and_kill
    try:
        search(run, SilentReporter())
    finally:
        run.close()
    assert killed
    rows = pd.read_parquet(tmp_path / "run" / "results.parquet")
    failed = rows[(rows["pipeline_id"] == killed["task"].pipeline_id) & (rows["status"] == "failed")]
    assert len(failed) == 1 and failed["error"].iloc[0].startswith(WORKER_DIED)
    assert rows["step"].nunique() == 7  # a new actor took the slot and the search went on
    completed_epochs_are_contiguous(tmp_path / "run")
