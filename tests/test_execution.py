"""Parallel execution for real: worker processes, real signals, the run directory checked afterwards.

No mocks: the local executor's worker processes train the tiny hub with random weights on 32 px digits, and
the faults are SIGKILLs sent to real processes (workers or the tuner itself).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from qtt_cli.execution import WORKER_DIED, InProcessExecutor, StepTask, WorkerSpec, result_from_dict, result_to_dict
from qtt_cli.execution.local import LocalProcessExecutor, cpu_slots
from qtt_cli.optimizer.base import PipelineState
from qtt_cli.space.config import PipelineConfig
from qtt_cli.tuner import TuneSettings
from qtt_cli.tuner.tuner import prepare, search
from qtt_cli.worker import EpochResult, StepResult

QTT = str(Path(sys.executable).parent / "qtt")
TINY = ["--hub", "tiny", "--weights", "random", "--max-input-size", "32", "--optimizer", "random", "--seed", "0"]


def settings(data: Path, out: Path, **kw) -> TuneSettings:
    base = dict(dataset=data, out=out, budget_s=3600, hub="tiny", weights="random", optimizer="random",
                max_input_size=32, max_epochs=3, seed=0)  # fmt: skip
    return TuneSettings(**{**base, **kw})


def completed_epochs_are_contiguous(run: Path) -> pd.DataFrame:
    """Every pipeline's completed epochs are 1..n, each recorded once; returns the completed rows."""
    path = run / "results.parquet"
    if not path.exists():
        return pd.DataFrame()
    rows = pd.read_parquet(path)
    done = rows[rows["val_top1"].notna()]
    for pid, group in done.groupby("pipeline_id"):
        epochs = sorted(int(e) for e in group["epoch"])
        assert epochs == list(range(1, len(epochs) + 1)), f"{pid}: completed epochs {epochs}"
    return done


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_gone(pids: set[int], timeout: float = 15.0) -> set[int]:
    end = time.monotonic() + timeout
    while time.monotonic() < end and any(alive(p) for p in pids):
        time.sleep(0.1)
    return {p for p in pids if alive(p)}


# ---------------------------------------------------------------------- the interface


def test_results_cross_process_boundaries_as_plain_values():
    result = StepResult("p0001", [EpochResult(1, 50.0, 1.2, 1.5, 0.7)], "interrupted", None, ["a note"])
    assert result_from_dict(result_to_dict(result)) == result
    import dataclasses
    import json

    every = {f.name: f"value of {f.name}" for f in dataclasses.fields(StepResult)}  # fields added later too
    every["epochs"] = []
    assert result_to_dict(result_from_dict(json.loads(json.dumps(every)))) == every
    task = StepTask("p0001", PipelineConfig(model="dla46x_c.in1k", lr=0.01), 1, 2, 30.0)
    assert StepTask.from_dict(task.to_dict()) == task


def test_a_worker_death_is_retried_once_then_the_pipeline_is_given_up():
    once = PipelineState("p1", None, (50.0,), (1.0,), "failed", f"{WORKER_DIED}: cpu0 (signal 9) mid-step", 1)
    twice = PipelineState("p1", None, (50.0,), (1.0,), "failed", f"{WORKER_DIED}: cpu1 (signal 9) mid-step", 2)
    assert once.retryable and not twice.retryable


def test_bad_executor_options_are_refused_before_anything_runs(tmp_path, digits_dir):
    with pytest.raises(ValueError, match="--workers"):
        settings(digits_dir, tmp_path / "a", workers=0)
    with pytest.raises(ValueError, match="--executor"):
        settings(digits_dir, tmp_path / "b", executor="slurm")
    with pytest.raises(ValueError, match="--address"):
        settings(digits_dir, tmp_path / "c", address="auto")
    out = subprocess.run([QTT, "tune", str(digits_dir), "--out", str(tmp_path / "d"), "--devices", "7", *TINY],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 2 and "--devices 7" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "d").exists()


def test_cpu_workers_split_the_cores():
    slots = cpu_slots(2, cpus=[0, 1, 2, 3])
    assert [s.cpus for s in slots] == [(0, 1), (2, 3)] and [s.threads for s in slots] == [2, 2]
    assert [s.threads for s in cpu_slots(4, cpus=[0, 1])] == [1, 1, 1, 1]


def test_one_worker_process_reproduces_the_in_process_step(tmp_path, digits_cache):
    """A step is a function of (seed, pipeline, epoch): run in a worker process it gives the same epochs as in
    the tuner's own process (the in-process executor is today's sequential path)."""
    import shutil

    from qtt_cli.hub import parse_weights
    from qtt_cli.worker import FinetuneWorker

    config = PipelineConfig(model="mobilenetv3_small_050.lamb_in1k", lr=0.01, batch_size=32)
    results = {}
    for name in ("inprocess", "local"):
        run = tmp_path / name
        shutil.copytree(digits_cache.train.array_path.parent, run / "cache")
        spec = WorkerSpec(str(run), "random", max_epochs=2, max_input_size=32, seed=0, threads=2)
        if name == "inprocess":
            from qtt_cli.data import open_cache

            worker = FinetuneWorker(open_cache(run / "cache"), parse_weights("random"), run / "checkpoints",
                                    max_epochs=2, max_input_size=32, seed=0)  # fmt: skip
            executor = InProcessExecutor(worker)
        else:
            executor = LocalProcessExecutor(spec, cpu_slots(1))
        with executor:
            for start in (0, 1):
                executor.submit(StepTask("p0001", config, start, start + 1, None))
                finished = []
                while not finished:
                    finished = executor.wait(timeout=120)
                results.setdefault(name, []).extend(e.val_top1 for e in finished[0].result.epochs)
    assert len(results["local"]) == 2
    assert results["local"] == pytest.approx(results["inprocess"], abs=1e-9)


# ---------------------------------------------------------------------- faults


def test_a_worker_killed_mid_step_is_recorded_replaced_and_its_pipeline_retried(tmp_path, digits_dir):
    """SIGKILL to the worker that trains a continued step (submitted, so in flight): the step is recorded as
    failed "worker died", the pipeline's last good checkpoint survives, the pipeline is retried from it, a new
    worker takes the slot, and the search goes on to its step limit."""
    run = prepare(settings(digits_dir, tmp_path / "run", workers=2, max_steps=9))
    executor = run.executor
    assert isinstance(executor, LocalProcessExecutor)
    submit, killed = executor.submit, {}

    def submit_and_kill(task: StepTask) -> None:
        submit(task)
        if not killed and task.start_epoch >= 1:
            worker = next(w for w in executor._workers if w.task is task)
            os.kill(worker.pid, signal.SIGKILL)
            killed.update(pid=worker.pid, task=task,
                          checkpoint=run.worker.checkpoint_path(task.pipeline_id, task.start_epoch))  # fmt: skip

    executor.submit = submit_and_kill
    try:
        summary = search(run, _silent())
    finally:
        run.close()
    assert killed, "no continued step was submitted"
    pid, task = killed["pid"], killed["task"]
    rows = pd.read_parquet(tmp_path / "run" / "results.parquet")
    mine = rows[rows["pipeline_id"] == task.pipeline_id]
    failed = mine[mine["status"] == "failed"]
    assert len(failed) == 1 and failed["error"].iloc[0].startswith(WORKER_DIED)
    assert int(failed["epoch"].iloc[0]) == task.start_epoch + 1
    # retried from its last good checkpoint: the epoch after it was completed by a later step
    retried = mine[(mine["epoch"] == task.start_epoch + 1) & mine["val_top1"].notna()]
    assert len(retried) == 1 and int(retried["step"].iloc[0]) > int(failed["step"].iloc[0])
    assert summary.reason == "max_steps" and rows["step"].nunique() == 9  # the search went on
    assert not alive(pid)
    completed_epochs_are_contiguous(tmp_path / "run")


def _silent():
    from qtt_cli.tuner import SilentReporter

    return SilentReporter()


def _tune(data: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([QTT, "tune", str(data), "--out", str(out), "--budget", "60m", "--max-epochs", "3",
                             "--workers", "2", "--quiet", *TINY, *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip


@pytest.mark.slow
def test_tuner_killed_at_random_moments_resumes_without_losing_or_duplicating_epochs(tmp_path, digits_dir):
    """kill -9 of the tuner with two workers, ten times at random moments, each time rerunning the same command:
    completed epochs stay contiguous from 1 per pipeline with none recorded twice, no worker outlives its tuner,
    and a last rerun finishes the search."""
    rng = random.Random(9)
    out = tmp_path / "run"
    every_worker: set[int] = set()
    kills_with_workers = kills_after_a_record = 0
    completed_before = 0
    log = out / "logs" / "tune.log"

    def workers_ready() -> int:
        return log.read_text().count(" ready in ") if log.exists() else 0

    def recorded() -> int:
        try:
            return len(pd.read_parquet(out / "results.parquet"))
        except (OSError, ValueError):
            return 0

    # The moments are random within three phases, each reached by waiting for an event (never for a fixed
    # time, which depends on the machine): from the launch on (start-up included), after both workers are
    # ready (steps in flight), and after this session recorded a step (recorded rows to lose or duplicate).
    for i in range(10):
        before, rows_before = workers_ready(), recorded()
        tuner = _tune(digits_dir, out)
        seen: set[int] = set()
        phase = i % 3
        event = {0: lambda: True, 1: lambda b=before: workers_ready() >= b + 2, 2: lambda r=rows_before: recorded() > r}
        started = time.monotonic()
        while not event[phase]() and tuner.poll() is None and time.monotonic() - started < 600:
            seen |= descendants(tuner.pid)
            time.sleep(0.05)
        end = time.monotonic() + rng.uniform(0.5, 8.0 if phase == 0 else 3.0)
        while time.monotonic() < end and tuner.poll() is None:
            seen |= descendants(tuner.pid)
            time.sleep(0.05)
        seen |= descendants(tuner.pid)
        assert tuner.poll() is None, tuner.stderr.read()
        os.kill(tuner.pid, signal.SIGKILL)
        tuner.wait(timeout=30)
        kills_with_workers += len(seen) >= 2
        kills_after_a_record += phase == 2
        every_worker |= seen
        assert wait_gone(seen) == set(), "worker processes outlived the killed tuner"
        done = completed_epochs_are_contiguous(out)
        assert len(done) >= completed_before  # nothing completed is ever lost
        completed_before = len(done)
    final = subprocess.run([QTT, "tune", str(digits_dir), "--out", str(out), "--budget", "60m", "--max-epochs", "3",
                            "--workers", "2", "--quiet", *TINY, "--max-steps", str(completed_before + 4)],
                           capture_output=True, text=True, timeout=1800)  # fmt: skip
    assert final.returncode == 0, final.stderr
    done = completed_epochs_are_contiguous(out)
    assert len(done) > completed_before
    print(f"10 kills: {kills_with_workers} with both workers running, {kills_after_a_record} just after a step was "
          f"recorded; {completed_before} epochs completed before the last rerun, {len(done)} after it; "
          f"{len(every_worker)} worker processes seen, none left")  # fmt: skip
    assert kills_with_workers >= 6 and kills_after_a_record == 3 and completed_before > 0
    assert wait_gone(every_worker) == set()


@pytest.mark.slow
def test_a_second_tuner_is_refused_while_the_first_runs_workers(tmp_path, digits_dir):
    out = tmp_path / "run"
    first = _tune(digits_dir, out)
    try:
        log = out / "logs" / "tune.log"
        end = time.monotonic() + 180
        while time.monotonic() < end and not (log.exists() and "ready" in log.read_text()):
            assert first.poll() is None, first.stderr.read()
            time.sleep(0.2)
        workers = descendants(first.pid)
        assert workers
        second = subprocess.run([QTT, "tune", str(digits_dir), "--out", str(out), "--budget", "60m",
                                 "--max-epochs", "3", "--workers", "2", "--quiet", *TINY],
                                capture_output=True, text=True, timeout=120)  # fmt: skip
        assert second.returncode == 2 and "another qtt process" in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)  # like Ctrl-C: the first stops cleanly and takes its workers along
        code = first.wait(timeout=60)
    assert code == 130
    assert wait_gone(workers) == set()
    completed_epochs_are_contiguous(out)
