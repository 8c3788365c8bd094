"""Bad input never shows a traceback: one clear message on stderr and a documented exit code."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qtt_cli.cli.app import app

runner = CliRunner()


def tune(dataset: Path, out: Path, *extra: str):
    return runner.invoke(
        app,
        ["tune", str(dataset), "--out", str(out), "--hub", "tiny", "--weights", "random", "--quiet",
         "--budget", "30s", *extra],
    )


def assert_user_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def test_missing_dataset(tmp_path):
    assert_user_error(tune(tmp_path / "nope", tmp_path / "run"), "nope", "does not exist")
    assert not (tmp_path / "run").exists()  # nothing written before the input is valid


def test_no_class_folders(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.png").write_bytes(b"")
    assert_user_error(tune(tmp_path / "data", tmp_path / "run"), "class")


def test_single_class(tmp_path, digits_dir):
    data = tmp_path / "data"
    shutil.copytree(digits_dir / "3", data / "3")
    assert_user_error(tune(data, tmp_path / "run"), "class")


def test_empty_class(tmp_path, digits_dir):
    data = tmp_path / "data"
    shutil.copytree(digits_dir, data)
    for f in (data / "4").iterdir():
        f.unlink()
    assert_user_error(tune(data, tmp_path / "run"), "4")


def test_train_val_class_sets_differ(tmp_path, digits_split_dir):
    data = tmp_path / "data"
    shutil.copytree(digits_split_dir, data)
    shutil.rmtree(data / "val" / "9")
    assert_user_error(tune(data, tmp_path / "run"), "9")


def test_no_readable_image(tmp_path):
    data = tmp_path / "data"
    for c in ("a", "b"):
        (data / c).mkdir(parents=True)
        for i in range(5):
            (data / c / f"{i}.png").write_bytes(b"not an image")
    assert_user_error(tune(data, tmp_path / "run"), "readable")


@pytest.mark.parametrize(
    ("option", "value", "fragment"),
    [
        ("--budget", "soon", "budget"),
        ("--budget", "-5m", "budget"),
        ("--delta-t", "0", "--delta-t"),
        ("--val-fraction", "1.5", "--val-fraction"),
        ("--hub", "nohub", "nohub"),
        ("--weights", "/no/such/folder", "/no/such/folder"),
        ("--optimizer", "grid", "--optimizer"),
        ("--space", "/no/such/space.yaml", "space.yaml"),
    ],
)
def test_bad_options(tmp_path, digits_dir, option, value, fragment):
    assert_user_error(tune(digits_dir, tmp_path / "run", option, value), fragment)


def test_out_is_an_unrelated_folder(tmp_path, digits_dir):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    result = tune(digits_dir, out, "--overwrite")
    assert_user_error(result, "not a qtt run directory")
    assert (out / "thesis.tex").read_text() == "precious"


def test_leaderboard_of_a_folder_that_is_no_run(tmp_path):
    assert_user_error(runner.invoke(app, ["leaderboard", str(tmp_path)]), "not a qtt run directory")


def test_predict_with_a_folder_that_is_no_export(tmp_path):
    image = tmp_path / "x.png"
    image.write_bytes(b"")
    assert_user_error(runner.invoke(app, ["predict", str(tmp_path), str(image)]), "not a qtt export")


def test_offline_pretrained_weights_fail_before_the_budget(tmp_path, digits_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    result = runner.invoke(
        app, ["tune", str(digits_dir), "--out", str(tmp_path / "run"), "--hub", "tiny", "--quiet", "--budget", "1h"]
    )
    assert_user_error(result, "--weights random", "--weights DIR")
    assert not (tmp_path / "run" / "results.parquet").exists()


def test_cli_starts_without_importing_torch():
    """`qtt --help` and `qtt --version` stay instant: torch/timm are imported by the commands that train."""
    import subprocess
    import sys

    code = "import sys, qtt_cli.cli.app; print(sorted(m for m in ('torch', 'timm') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.startswith("qtt ")
