"""Bad input found before the budget starts, and every file problem answered with the file's name and exit 2
(issue 11, items 6, 7, 9, 10, 11)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from tune_helpers import tune_args
from typer.testing import CliRunner

from qtt_cli.cli.app import app
from qtt_cli.store import RunDir

runner = CliRunner()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, digits_split_dir, one_hub) -> Path:
    """A run with one trained step and kept best weights. Tests copy it before changing anything."""
    out = tmp_path_factory.mktemp("finished") / "run"
    result = runner.invoke(app, tune_args(digits_split_dir, out, one_hub, "--max-steps", "1"))
    assert result.exit_code == 0, result.output
    return out


def copy_run(run: Path, tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(run, target)
    return target


def assert_bad_input(result, *fragments: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output and "internal error" not in result.output, result.output
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


# ---------------------------------------------------------------- 6. devices and weights before the budget


@pytest.mark.parametrize("device, fragment", [("tpu9", "unknown device 'tpu9'"), ("cuda:7", "cuda:7")])
def test_an_unusable_device_fails_before_anything_is_written(device, fragment, tmp_path, digits_dir, one_hub):
    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    result = runner.invoke(app, tune_args(digits_dir, tmp_path / "run", one_hub, "--device", device))
    assert_bad_input(result, fragment)
    assert not (tmp_path / "run").exists()


def test_corrupt_weights_files_fail_before_the_budget(tmp_path, digits_dir, one_hub):
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "mobilenetv3_small_050.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    args = tune_args(digits_dir, tmp_path / "run", one_hub)
    args[args.index("--weights") + 1] = str(weights)
    result = runner.invoke(app, args)
    assert_bad_input(result, "mobilenetv3_small_050.safetensors", "cannot read")
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- 7. numbers that are not numbers


@pytest.mark.parametrize("budget", ["nan", "inf", "1e400", "-inf"])
def test_non_finite_budgets_are_bad_input(budget, tmp_path, digits_dir, one_hub):
    args = tune_args(digits_dir, tmp_path / "run", one_hub)
    args[args.index("--budget") + 1] = budget
    assert_bad_input(runner.invoke(app, args), "budget")


@pytest.mark.parametrize("top", ["0", "-3"])
def test_top_must_be_positive(top, finished_run, tmp_path):
    assert_bad_input(runner.invoke(app, ["leaderboard", str(finished_run), "--top", top]), "--top")
    export = tmp_path / "export"
    assert runner.invoke(app, ["export-best", str(finished_run), "--out", str(export)]).exit_code == 0
    image = finished_run / "run.json"  # any file: --top is checked first
    assert_bad_input(runner.invoke(app, ["predict", str(export), str(image), "--top", top]), "--top")


# ---------------------------------------------------------------- 9. exports are all or nothing


def test_a_failed_export_leaves_no_partial_folder(finished_run, tmp_path, monkeypatch):
    from qtt_cli.export import export as export_module

    def no_onnx(*args, **kwargs):
        raise export_module.ExportError("ONNX export needs the onnx package: pip install 'qtt-cli[onnx]'")

    monkeypatch.setattr(export_module, "_onnx", no_onnx)
    out = tmp_path / "best"
    result = runner.invoke(app, ["export-best", str(finished_run), "--out", str(out), "--format", "onnx"])
    assert_bad_input(result, "onnx")
    assert not out.exists() and not list(tmp_path.glob(".*"))
    ok = runner.invoke(app, ["export-best", str(finished_run), "--out", str(out)])  # the retry works
    assert ok.exit_code == 0, ok.output
    first = sorted(p.name for p in out.iterdir())
    failed = runner.invoke(app, ["export-best", str(finished_run), "--out", str(out), "--format", "onnx",
                                 "--overwrite"])
    assert failed.exit_code == 2
    assert sorted(p.name for p in out.iterdir()) == first  # the previous export is intact


def test_exported_files_follow_the_umask(finished_run, tmp_path):
    out = tmp_path / "best"
    old = os.umask(0o022)
    try:
        assert runner.invoke(app, ["export-best", str(finished_run), "--out", str(out)]).exit_code == 0
    finally:
        os.umask(old)
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in out.iterdir()} == {
        name: "0o644" for name in ("model.safetensors", "qtt-model.json", "README.md")}
    assert oct(out.stat().st_mode & 0o777) == "0o755"


def test_export_to_a_file_is_bad_input(finished_run, tmp_path):
    target = tmp_path / "model.bin"
    target.write_text("mine")
    assert_bad_input(runner.invoke(app, ["export-best", str(finished_run), "--out", str(target)]), "is a file")
    assert target.read_text() == "mine"


# ---------------------------------------------------------------- 10. files that are not what qtt wrote


@pytest.mark.parametrize("content, fragment", [
    ("{not json", "not valid JSON"),
    (json.dumps({"used_s": "soon", "steps": 1}), "wrong type"),
    (json.dumps({"used_s": 1.0, "bogus": 2}), "unknown key"),
])
def test_a_corrupt_state_json_is_named(content, fragment, finished_run, tmp_path, digits_split_dir, one_hub):
    run = copy_run(finished_run, tmp_path)
    (run / "state.json").write_text(content)
    result = runner.invoke(app, tune_args(digits_split_dir, run, one_hub, "--max-steps", "1"))
    assert_bad_input(result, "state.json", fragment, "Delete it")


def test_a_corrupt_run_json_is_named(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path)
    (run / "run.json").write_text('{"settings": ')
    for args in (["leaderboard", str(run)], ["resume", str(run)], ["export-best", str(run), "--out",
                                                                    str(tmp_path / "e")]):
        assert_bad_input(runner.invoke(app, args), "run.json", "not valid JSON")


def test_a_run_json_with_wrong_settings_is_named(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path)
    info = json.loads((run / "run.json").read_text())
    info["settings"]["unknown_option"] = 1
    (run / "run.json").write_text(json.dumps(info))
    assert_bad_input(runner.invoke(app, ["resume", str(run)]), "run.json")


def test_garbage_export_weights_and_meta_are_named(finished_run, tmp_path, digits_split_dir):
    out = tmp_path / "best"
    assert runner.invoke(app, ["export-best", str(finished_run), "--out", str(out)]).exit_code == 0
    image = next((digits_split_dir / "test" / "3").iterdir())
    (out / "model.safetensors").write_bytes(b"garbage" * 20)
    assert_bad_input(runner.invoke(app, ["predict", str(out), str(image)]), "model.safetensors")
    (out / "qtt-model.json").write_text("{")
    assert_bad_input(runner.invoke(app, ["predict", str(out), str(image)]), "qtt-model.json", "not valid JSON")


def test_a_read_only_run_directory_is_bad_input(finished_run, tmp_path, digits_split_dir, one_hub):
    mount = tmp_path / "ro"
    mount.mkdir()
    if os.system(f"mount -t tmpfs -o size=64m tmpfs {mount} 2>/dev/null") != 0:
        pytest.skip("needs root to mount a read-only file system (CI runs as root)")
    try:
        run = mount / "run"
        shutil.copytree(finished_run, run)
        assert os.system(f"mount -o remount,ro {mount}") == 0
        result = runner.invoke(app, tune_args(digits_split_dir, run, one_hub, "--max-steps", "2"))
        assert_bad_input(result, str(run), "writable")
    finally:
        os.system(f"umount {mount}")


# ---------------------------------------------------------------- 11. the rest of the list


@pytest.mark.parametrize("name", ["valid", "validation"])
def test_valid_folder_is_the_validation_split(name, tmp_path, digits_split_dir, one_hub):
    data = tmp_path / "data"
    shutil.copytree(digits_split_dir, data)
    (data / "val").rename(data / name)
    out = tmp_path / "run"
    assert runner.invoke(app, tune_args(data, out, one_hub, "--max-steps", "1")).exit_code == 0
    info = RunDir(out).read_run()
    assert info["splits"]["val"] == len(list((data / name).rglob("*.png")))
    assert info["splits"]["train"] == len(list((data / "train").rglob("*.png")))


def test_two_validation_folders_are_bad_input(tmp_path, digits_split_dir, one_hub):
    data = tmp_path / "data"
    shutil.copytree(digits_split_dir, data)
    shutil.copytree(data / "val", data / "valid")
    result = runner.invoke(app, tune_args(data, tmp_path / "run", one_hub, "--max-steps", "1"))
    assert result.exit_code == 2 and "keep one" in result.stderr, result.output


def test_predict_reports_an_unreadable_image_and_classifies_the_rest(finished_run, tmp_path, digits_split_dir):
    out = tmp_path / "best"
    assert runner.invoke(app, ["export-best", str(finished_run), "--out", str(out)]).exit_code == 0
    good = sorted((digits_split_dir / "test" / "3").iterdir())[:2]
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    result = runner.invoke(app, ["predict", str(out), str(good[0]), str(bad), str(good[1]), "--json"])
    assert result.exit_code == 2
    items = json.loads(result.stdout)
    assert [("error" in item) for item in items] == [False, True, False]
    assert "broken.png" in result.stderr


def test_a_stopped_pipeline_is_shown_as_stopped(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path)
    for checkpoint in (run / "checkpoints").rglob("epoch-*.pt"):
        checkpoint.unlink()
    board = json.loads(runner.invoke(app, ["leaderboard", str(run), "--json"]).stdout)
    assert board[0]["status"] == "stopped"


def test_resume_accepts_a_device(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path)
    result = runner.invoke(app, ["resume", str(run), "--device", "tpu9", "--no-report"])
    assert_bad_input(result, "tpu9")
    assert runner.invoke(app, ["resume", str(run), "--device", "cpu", "--max-steps", "2", "--quiet",
                               "--no-report"]).exit_code == 0


def test_the_header_says_when_the_cache_is_reused(finished_run, tmp_path, digits_split_dir, one_hub):
    run = copy_run(finished_run, tmp_path)
    args = tune_args(digits_split_dir, run, one_hub, "--max-steps", "2")
    args.remove("--quiet")
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "reusing the decoded images" in result.output and "decoding" not in result.output


@pytest.mark.parametrize("given, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_the_cli_lets_idle_openmp_threads_sleep_unless_the_user_chose(given, expected):
    """Spinning OpenMP threads made a demo on a shared 2-core machine 6x slower (benchmarks/bench_threads.py)."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given:
        env["OMP_WAIT_POLICY"] = given
    out = subprocess.run([sys.executable, "-c", "import os, qtt_cli.cli; print(os.environ['OMP_WAIT_POLICY'])"],
                         env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected
