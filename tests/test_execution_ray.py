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


_LISTENING_SOCKETS = r'''
import os, sys
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from test_execution import descendants, settings
from qtt_cli.tuner.tuner import prepare

def socket_inodes(pid):
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes

run = prepare(settings(Path(sys.argv[1]), Path(sys.argv[2]), workers=1, executor="ray"))
try:
    run.executor.start()
    inodes = set()
    for pid in {os.getpid(), *descendants(os.getpid())}:
        try:
            inodes |= socket_inodes(pid)
        except OSError:
            pass
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                print(fields[1].split(":")[0])
finally:
    run.close()
'''
_LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}  # /proc/net hex


@pytest.mark.slow
def test_the_local_ray_instance_listens_on_the_loopback_address_only(tmp_path, digits_dir):
    """`--executor ray` without --address starts Ray on this machine: none of its servers (GCS, raylet, workers,
    the driver) may accept connections from other machines. Read from /proc, for every process of the run."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}  # as a user runs it
    here = str(Path(__file__).parent)
    args = [sys.executable, "-c", _LISTENING_SOCKETS, str(digits_dir), str(tmp_path / "run"), here]
    out = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr
    addresses = out.stdout.split()
    assert len(addresses) >= 3, out.stdout  # at least the GCS, a raylet and a worker: the sockets were found
    assert set(addresses) <= _LOOPBACK, addresses


@pytest.mark.slow
def test_a_full_disk_met_by_a_ray_actor_stops_the_run_and_the_rerun_resumes(small_disk, digits_dir, one_hub, ray_head):
    """As with local worker processes (tests/test_disk_full.py): the actor sends the full disk back, the tuner
    stops the run with exit 2 and records nothing; once space is freed the same command resumes."""
    from test_disk_full import fill, tune_args

    out = small_disk / "run"

    def tune(steps: int) -> subprocess.CompletedProcess:
        args = [QTT, *tune_args(digits_dir, out, one_hub, steps), "--workers", "2", "--executor", "ray",
                "--address", ray_head]  # fmt: skip
        return subprocess.run(args, capture_output=True, text=True, timeout=900)

    first = tune(2)
    assert first.returncode == 0, first.stderr
    before = pd.read_parquet(out / "results.parquet")
    filler = fill(small_disk, leave_bytes=200_000)
    full = tune(6)
    assert full.returncode == 2, full.stderr
    assert "no space left" in full.stderr and "Traceback" not in full.stderr
    assert pd.read_parquet(out / "results.parquet").equals(before)
    filler.unlink()
    resumed = tune(4)
    assert resumed.returncode == 0, resumed.stderr
    assert pd.read_parquet(out / "results.parquet")["step"].nunique() == 4
