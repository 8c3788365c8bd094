"""A user's folders are never deleted, a half-made run is never a dead end, a changed dataset never resumes,
and a crash loses neither an epoch that was trained nor the time it took (issue 11, items 1-5)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tune_helpers import tune_args
from typer.testing import CliRunner

from qtt_cli.cli.app import app
from qtt_cli.store import RunDir
from qtt_cli.store.rundir import MARKER_FILE

runner = CliRunner()


def cli(*args: str):
    return runner.invoke(app, list(args))


# ---------------------------------------------------------------- 1. --overwrite never deletes a foreign folder


def test_overwrite_refuses_a_folder_with_a_foreign_run_json(tmp_path, digits_dir, one_hub):
    out = tmp_path / "thesis"
    (out / "sub").mkdir(parents=True)
    (out / "run.json").write_text(json.dumps({"experiment": "x"}))
    (out / "thesis.tex").write_text("\\section{Results}")
    (out / "sub" / "data.csv").write_text("a,b\n")
    result = cli(*tune_args(digits_dir, out, one_hub, "--overwrite", "--max-steps", "1"))
    assert result.exit_code == 2, result.output
    assert "qtt did not write" in result.stderr and "refusing to overwrite" in result.stderr
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "run.json", "sub", "sub/data.csv", "thesis.tex"]
    assert json.loads((out / "run.json").read_text()) == {"experiment": "x"}


def test_leaderboard_and_export_refuse_a_foreign_run_json(tmp_path):
    out = tmp_path / "other"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"experiment": "x"}))
    for args in (["leaderboard", str(out)], ["export-best", str(out), "--out", str(tmp_path / "e")]):
        result = cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert "run.json" in result.stderr and "Traceback" not in result.output


def test_a_foreign_run_json_is_refused_by_resume_and_by_tune(tmp_path, digits_dir, one_hub):
    """The two commands that raised KeyError: 'settings' on a folder whose run.json is someone else's."""
    out = tmp_path / "other"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"experiment": "x"}))
    (out / "thesis.tex").write_text("\\section{Results}")
    for args in (["resume", str(out)], tune_args(digits_dir, out, one_hub, "--max-steps", "1")):
        result = cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert "run.json" in result.stderr and "Traceback" not in result.output
    assert sorted(p.name for p in out.iterdir()) == ["run.json", "thesis.tex"]


def test_overwrite_never_deletes_an_unmarked_folder_even_if_it_looks_like_an_old_run(
    tmp_path, digits_dir, one_hub
):
    """A run.json with qtt's keys and a cache/ folder can be resumed as a run from before the marker, but
    only qtt's marker proves the folder is qtt's alone: --overwrite refuses it and deletes nothing."""
    out = tmp_path / "old"
    (out / "cache").mkdir(parents=True)
    (out / "run.json").write_text(json.dumps({"qtt_version": "0.1", "settings": {}, "classes": ["a"]}))
    (out / "thesis.tex").write_text("\\section{Results}")
    result = cli(*tune_args(digits_dir, out, one_hub, "--overwrite", "--max-steps", "1"))
    assert result.exit_code == 2, result.output
    assert "marker" in result.stderr and "Traceback" not in result.output
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["cache", "run.json", "thesis.tex"]


def test_overwrite_of_a_qtt_run_starts_over(tmp_path, digits_dir, one_hub):
    out = tmp_path / "run"
    assert cli(*tune_args(digits_dir, out, one_hub, "--max-steps", "2")).exit_code == 0
    assert len(RunDir(out).store.load()) == 2
    again = cli(*tune_args(digits_dir, out, one_hub, "--max-steps", "1", "--overwrite"))
    assert again.exit_code == 0, again.output
    assert len(RunDir(out).store.load()) == 1 and (out / MARKER_FILE).is_file()


def test_a_run_made_by_a_newer_qtt_is_refused_not_misread(tmp_path, digits_dir, one_hub):
    out = tmp_path / "run"
    assert cli(*tune_args(digits_dir, out, one_hub, "--max-steps", "1")).exit_code == 0
    marker = json.loads((out / MARKER_FILE).read_text())
    (out / MARKER_FILE).write_text(json.dumps({**marker, "format_version": marker["format_version"] + 1,
                                               "qtt_version": "99.0"}))  # fmt: skip
    rows = len(RunDir(out).store.load())
    for args in (["resume", str(out)], ["leaderboard", str(out)], ["export-best", str(out), "--out",
                 str(tmp_path / "e")], tune_args(digits_dir, out, one_hub, "--max-steps", "2")):  # fmt: skip
        result = cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert "newer qtt (99.0" in result.stderr and "Traceback" not in result.output
    assert len(RunDir(out).store.load()) == rows and not (tmp_path / "e").exists()


# ---------------------------------------------------------------- 2. a half-made first run is resumable


def _noise_dataset(root: Path, classes: int = 3, per_class: int = 500, side: int = 96) -> Path:
    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / f"c{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_a_first_run_killed_while_decoding_completes_on_rerun(tmp_path, tmp_path_factory, sig):
    data = _noise_dataset(tmp_path_factory.mktemp("noise") / "noise")
    hub = tmp_path / "hub.yaml"
    hub.write_text("models:\n  - name: mobilenetv3_small_050.lamb_in1k\n    input_size: 160\n")
    out = tmp_path / "run"
    args = [sys.executable, "-m", "qtt_cli", *tune_args(data, out, hub, "--max-steps", "1")]
    args[args.index("--max-input-size") + 1] = "160"  # a large cache: decoding takes long enough to be caught
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    caught = False
    end = time.monotonic() + 120
    while time.monotonic() < end and proc.poll() is None:
        if any(p.name.endswith(".tmp.npy") for p in (out / "cache").glob(".*")):
            caught = True
            break
        time.sleep(0.005)
    proc.send_signal(sig)
    code = proc.wait(timeout=120)
    assert caught, "the decoding finished before it could be interrupted"
    if sig == signal.SIGINT:  # Ctrl-C: said, not a traceback; the half-made run stays qtt's to complete
        stderr = proc.stderr.read().decode()
        assert code == 130 and "Traceback" not in stderr, stderr
    assert not (out / "run.json").exists() and (out / MARKER_FILE).is_file()

    result = cli("leaderboard", str(out))
    assert result.exit_code == 2 and "never finished" in result.stderr
    args[args.index("--max-input-size") + 1] = "32"  # the rerun may as well be quick; the settings are new
    rerun = subprocess.run(args + ["--json"], capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout)["steps"] == 1
    assert not [p for p in (out / "cache").iterdir() if ".tmp" in p.name]  # the killed writer's file is gone


def test_a_dataset_error_during_the_first_decoding_leaves_a_run_that_completes(tmp_path, digits_dir, one_hub):
    data = tmp_path / "data"
    shutil.copytree(digits_dir, data)
    saved = tmp_path / "class-4"
    shutil.copytree(data / "4", saved)
    for image in (data / "4").iterdir():
        image.write_bytes(b"not an image")  # every image of a class unreadable: found while decoding
    out = tmp_path / "run"
    failed = cli(*tune_args(data, out, one_hub, "--max-steps", "1"))
    assert failed.exit_code == 2 and "4" in failed.stderr, failed.output
    assert out.is_dir() and (out / MARKER_FILE).is_file()
    shutil.rmtree(data / "4")
    shutil.copytree(saved, data / "4")
    fixed = cli(*tune_args(data, out, one_hub, "--max-steps", "1"))
    assert fixed.exit_code == 0, fixed.output
    assert RunDir(out).read_state().steps == 1


# ---------------------------------------------------------------- 3. a changed dataset never resumes


@pytest.mark.parametrize("change", ["class added", "images removed", "images added"])
def test_a_changed_dataset_is_not_resumed(change, tmp_path, digits_dir, one_hub):
    data = tmp_path / "data"
    shutil.copytree(digits_dir, data)
    out = tmp_path / "run"
    assert cli(*tune_args(data, out, one_hub, "--max-steps", "1")).exit_code == 0
    rows = len(RunDir(out).store.load())
    if change == "class added":
        shutil.copytree(data / "3", data / "new")
    elif change == "images removed":
        for image in sorted((data / "5").iterdir())[:3]:
            image.unlink()
    else:
        shutil.copy(next((data / "5").iterdir()), data / "5" / "extra.png")
    result = cli(*tune_args(data, out, one_hub, "--max-steps", "2"))
    assert result.exit_code == 2, result.output
    assert "changed since the run" in result.stderr and "--overwrite" in result.stderr
    if change == "class added":
        assert "new" in result.stderr
    assert len(RunDir(out).store.load()) == rows  # nothing was trained on the changed data
    assert cli(*tune_args(data, out, one_hub, "--max-steps", "1", "--overwrite")).exit_code == 0


def test_a_copied_dataset_resumes(tmp_path, digits_dir, one_hub):
    """Same files, new modification times (cp without -p): the same dataset."""
    data = tmp_path / "data"
    shutil.copytree(digits_dir, data)
    out = tmp_path / "run"
    assert cli(*tune_args(data, out, one_hub, "--max-steps", "1")).exit_code == 0
    for image in data.rglob("*.png"):
        os.utime(image, (time.time() + 100, time.time() + 100))
    assert cli(*tune_args(data, out, one_hub, "--max-steps", "2")).exit_code == 0
    assert RunDir(out).read_state().steps == 2


# ---------------------------------------------------------------- 4. a checkpoint newer than the store


def test_a_checkpoint_newer_than_the_store_is_recorded_not_stopped(tmp_path, digits_dir, one_hub):
    """What a kill between the worker's checkpoint write and the tuner's append leaves: the store stops at
    epoch 1 of p0001, its only checkpoint is epoch 2 (the worker replaced epoch 1's)."""
    out = tmp_path / "run"
    assert cli(*tune_args(digits_dir, out, one_hub, "--max-steps", "2")).exit_code == 0
    store = RunDir(out).store
    full = store.load()
    assert list(zip(full["pipeline_id"], full["epoch"], strict=True)) == [("p0001", 1), ("p0001", 2)]
    full.iloc[:1].to_parquet(store.path, index=False)  # the rows of step 2 never made it
    assert sorted(p.name for p in (out / "checkpoints" / "p0001").glob("epoch-*")) == ["epoch-0002.pt"]

    resumed = cli(*tune_args(digits_dir, out, one_hub, "--max-steps", "3"))
    assert resumed.exit_code == 0, resumed.output
    after = RunDir(out).store.load()
    assert list(zip(after["pipeline_id"], after["epoch"], strict=True)) == [
        ("p0001", 1), ("p0001", 2), ("p0001", 3)]  # recorded from the checkpoint, then continued
    assert after["val_top1"].iloc[1] == pytest.approx(full["val_top1"].iloc[1])
    board = cli("leaderboard", str(out), "--json")
    assert json.loads(board.stdout)[0]["status"] != "stopped"


def test_a_checkpoint_of_another_pipeline_is_discarded(tmp_path, digits_dir, one_hub):
    out = tmp_path / "run"
    assert cli(*tune_args(digits_dir, out, one_hub, "--max-steps", "1")).exit_code == 0
    ckpt = out / "checkpoints" / "p0001" / "epoch-0001.pt"
    stray = out / "checkpoints" / "p0009"
    stray.mkdir()
    shutil.copy(ckpt, stray / "epoch-0002.pt")  # epoch 2 of a pipeline whose history lacks epoch 1 -> unusable
    resumed = cli(*tune_args(digits_dir, out, one_hub, "--max-steps", "2"))
    assert resumed.exit_code == 0, resumed.output
    assert not stray.exists()
    assert "p0009" not in set(RunDir(out).store.load()["pipeline_id"])


# ---------------------------------------------------------------- 5. a crash is charged


@pytest.mark.slow
def test_the_time_of_a_step_killed_mid_way_is_charged(tmp_path, digits_dir, one_hub):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "qtt_cli", *tune_args(digits_dir, out, one_hub)]
    args[args.index("--max-epochs") + 1] = "200"
    args += ["--delta-t", "100"]  # one long step: no step boundary writes state.json while it runs
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    state = out / "state.json"
    end = time.monotonic() + 120
    while not state.exists() and time.monotonic() < end:
        time.sleep(0.05)
    started = time.monotonic()
    time.sleep(4.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    elapsed = time.monotonic() - started
    assert RunDir(out).read_state().steps == 0 and RunDir(out).store.load().empty  # still in its first step
    # charged up to the last heartbeat (every second); without it, 0 s would be on record
    assert RunDir(out).read_state().used_s >= elapsed - 2.0


def test_heartbeat_persists_the_budget_between_steps(tmp_path):
    from qtt_cli.tuner.budget import BudgetClock, Heartbeat

    ticks = iter(range(1000))
    clock = BudgetClock(10.0, now=lambda: float(next(ticks)))
    saved: list[float] = []
    with Heartbeat(lambda: saved.append(clock.used()), interval_s=0.01):
        deadline = time.monotonic() + 30
        while len(saved) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert len(saved) >= 3 and saved == sorted(saved) and saved[0] > 10.0




@pytest.mark.slow
def test_two_runs_started_at_once_on_one_out_are_told_the_truth(tmp_path, digits_dir, one_hub):
    """Either they happen to run one after the other (both succeed: the second resumes), or one is refused
    because the other is using the folder; never "not a qtt run directory" for a run being created."""
    out = tmp_path / "run"
    args = [sys.executable, "-m", "qtt_cli", *tune_args(digits_dir, out, one_hub, "--max-steps", "1")]
    procs = [subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    for code, stderr in results:
        assert code in (0, 2), stderr
        if code == 2:
            assert "another qtt process is using" in stderr, stderr
    assert any(code == 0 for code, _ in results)


def test_a_killed_writers_checkpoint_temporaries_are_removed_when_the_run_is_reopened(tmp_path):
    """A worker killed while writing a checkpoint leaves a temporary file of a checkpoint's size; every kill of a
    long parallel run would leave one more. Reopening the run (with its lock, as `qtt tune`/`resume` do) removes
    them and nothing else."""
    run = RunDir(tmp_path / "run")
    run.prepare()
    folder = run.checkpoints / "p0001"
    folder.mkdir()
    stale = folder / ".epoch-0002.pt.k3x9q1.tmp"
    stale.write_bytes(b"half a checkpoint")
    kept = [folder / "epoch-0001.pt", folder / "best.safetensors", folder / "best.json"]
    for path in kept:
        path.write_bytes(b"x")
    run.prepare()
    assert not stale.exists() and all(path.exists() for path in kept)
