"""The whole tool through its CLI: tune on real digit images, leaderboard, export, predict.

One short search (session fixture) feeds several tests; each checks a user-visible promise.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from qtt_cli.cli.app import app
from qtt_cli.export import load_export, load_pipeline
from qtt_cli.store import RunDir

pytestmark = pytest.mark.slow
runner = CliRunner()

FAST_MODELS = ("mobilenetv3_small_050.lamb_in1k", "lcnet_050.ra2_in1k")


@pytest.fixture(scope="session")
def fast_hub(tmp_path_factory) -> Path:
    """Two of the tiny hub's fastest models, so a search step takes about a second on 2 CPU cores."""
    path = tmp_path_factory.mktemp("hub") / "fast.yaml"
    path.write_text("name: fast\nmodels:\n" + "".join(f"  - name: {m}\n    input_size: 32\n" for m in FAST_MODELS))
    return path


def tune_args(dataset: Path, out: Path, hub: Path, *extra: str) -> list[str]:
    return [
        "tune", str(dataset), "--out", str(out), "--hub", str(hub), "--weights", "random",
        "--max-input-size", "32", "--max-epochs", "2", "--budget", "60m", "--quiet", "--optimizer", "random", *extra,
    ]


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, digits_split_dir, fast_hub) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("runs") / "digits"
    result = runner.invoke(app, tune_args(digits_split_dir, out, fast_hub, "--max-steps", "5", "--json"))
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


def test_tune_records_every_epoch_and_summarises(finished_run):
    out, summary = finished_run
    history = RunDir(out).store.load()
    assert summary["steps"] == 5 and summary["reason"] == "max_steps"
    # random search trains each pipeline to max_epochs=2 one epoch per step: p0001 e1,e2; p0002 e1,e2; p0003 e1
    ok = history[history["status"] == "ok"]
    assert list(zip(ok["pipeline_id"], ok["epoch"], strict=True)) == [
        ("p0001", 1), ("p0001", 2), ("p0002", 1), ("p0002", 2), ("p0003", 1)
    ]
    assert history["val_top1"].between(0, 100).all() and (history["cost_s"] > 0).all()
    assert set(history["model"]) <= set(FAST_MODELS)
    best = history.loc[history["val_top1"].idxmax()]
    assert summary["best_pipeline"] == best["pipeline_id"]
    assert summary["best_val_top1"] == pytest.approx(best["val_top1"])
    run = json.loads((out / "run.json").read_text())
    assert run["classes"] == [str(i) for i in range(10)]
    assert run["meta_features"]["num_classes"] == 10


def test_finished_pipelines_keep_only_best_weights(finished_run):
    out, _ = finished_run
    ckpt = out / "checkpoints"
    # p0001 and p0002 reached max_epochs: no epoch checkpoint left; p0003 may still be continued.
    assert not list((ckpt / "p0001").glob("epoch-*.pt"))
    assert [p.name for p in (ckpt / "p0003").glob("epoch-*.pt")] == ["epoch-0001.pt"]
    assert (ckpt / "p0001" / "best.safetensors").exists()


def test_leaderboard_json_is_ranked(finished_run):
    out, summary = finished_run
    result = runner.invoke(app, ["leaderboard", str(out), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    scores = [r["best_val_top1"] for r in rows]
    assert scores == sorted(scores, reverse=True)
    assert rows[0]["pipeline_id"] == summary["best_pipeline"] and [r["rank"] for r in rows] == [1, 2, 3]


def test_leaderboard_csv_and_test_folder(finished_run, digits_split_dir):
    out, summary = finished_run
    test_dir = str(digits_split_dir / "test")
    result = runner.invoke(app, ["leaderboard", str(out), "--csv", "--top", "2", "--test", test_dir])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(pd.io.common.StringIO(result.stdout))
    assert len(table) == 2 and table["test_top1"].between(0, 100).all()


def test_export_then_load_gives_the_run_checkpoint_logits(finished_run, tmp_path, digits_split_dir):
    out, summary = finished_run
    export_dir = tmp_path / "export"
    result = runner.invoke(app, ["export-best", str(out), "--out", str(export_dir), "--json"])
    assert result.exit_code == 0, result.output
    meta = json.loads(result.stdout)
    assert meta["pipeline_id"] == summary["best_pipeline"] and meta["classes"] == [str(i) for i in range(10)]
    assert {"input_size", "mean", "std", "interpolation", "decode_side"} <= set(meta["preprocessing"])
    assert (export_dir / "README.md").exists() and not list(export_dir.glob("*.pkl"))

    images = sorted((digits_split_dir / "test" / "7").glob("*.png"))[:3]
    exported = load_export(export_dir).logits(images)
    in_run = load_pipeline(out, summary["best_pipeline"]).logits(images)
    torch.testing.assert_close(exported, in_run, rtol=0, atol=0)

    predicted = runner.invoke(app, ["predict", str(export_dir), *map(str, images), "--json"])
    assert predicted.exit_code == 0, predicted.output
    items = json.loads(predicted.stdout)
    probs = torch.tensor([list(i["probabilities"].values()) for i in items])
    torch.testing.assert_close(probs, exported.softmax(1), atol=1e-6, rtol=0)
    # the label is the most probable class (argmax of the probabilities: logits 1 ulp apart can tie after softmax)
    assert [i["label"] for i in items] == [str(int(k)) for k in exported.softmax(1).argmax(1)]


def test_export_refuses_to_clobber_an_unrelated_folder(finished_run, tmp_path):
    out, _ = finished_run
    (tmp_path / "notes.txt").write_text("mine")
    result = runner.invoke(app, ["export-best", str(out), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "not a qtt export" in result.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_torchscript_export_matches(finished_run, tmp_path, digits_split_dir):
    out, _ = finished_run
    result = runner.invoke(app, ["export-best", str(out), "--out", str(tmp_path / "ts"), "--format", "torchscript"])
    assert result.exit_code == 0, result.output
    scripted = torch.jit.load(str(tmp_path / "ts" / "model.torchscript.pt"))
    trained = load_export(tmp_path / "ts")
    image = sorted((digits_split_dir / "test" / "1").glob("*.png"))[0]
    x = trained.preprocess(image)[None]
    torch.testing.assert_close(scripted(x), trained.model(x), atol=1e-5, rtol=1e-5)


def test_rerun_of_a_finished_command_adds_nothing(finished_run, digits_split_dir, fast_hub):
    out, summary = finished_run
    before = RunDir(out).store.load()
    result = runner.invoke(app, tune_args(digits_split_dir, out, fast_hub, "--max-steps", "5", "--json"))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["steps"] == 5
    pd.testing.assert_frame_equal(RunDir(out).store.load(), before)


def test_asha_with_a_checkpoint_cap_keeps_one_checkpoint_and_continues_only_from_it(
    tmp_path, digits_split_dir, fast_hub
):
    out = tmp_path / "asha"
    args = [*tune_args(digits_split_dir, out, fast_hub, "--max-steps", "5", "--max-checkpoints", "1", "--json")]
    args[args.index("--optimizer") + 1] = "asha"
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    history = RunDir(out).store.load()
    assert (history["status"] == "ok").all()  # nobody was continued from a checkpoint that was given up
    assert history["pipeline_id"].nunique() >= 3
    assert len(list((out / "checkpoints").glob("*/epoch-*.pt"))) <= 1
    # every continued pipeline was the best at the moment it was continued (the one that kept its checkpoint)
    for pid, rows in history.groupby("pipeline_id"):
        if rows["epoch"].max() > 1:
            before = history[history["step"] < rows.loc[rows["epoch"] == 2, "step"].iloc[0]]
            assert before.loc[before["val_top1"].idxmax(), "pipeline_id"] == pid


def test_a_stop_request_ends_the_run_after_the_step_in_flight(tmp_path, digits_split_dir, fast_hub):
    """The backstop behind Ctrl-C/SIGTERM: even if the KeyboardInterrupt is lost, the flag the signal
    handler sets stops the loop at the next step boundary, and what finished is kept."""
    from qtt_cli.tuner import SilentReporter, TuneSettings, tune
    from qtt_cli.tuner.tuner import request_stop

    class StopDuringTheFirstStep(SilentReporter):
        def step_started(self, *args) -> None:
            request_stop()

    settings = TuneSettings(
        dataset=digits_split_dir, out=tmp_path / "run", budget_s=3600, hub=str(fast_hub), weights="random",
        max_input_size=32, max_epochs=2, optimizer="random",
    )  # fmt: skip
    summary = tune(settings, reporter=StopDuringTheFirstStep())
    assert summary.reason == "interrupted" and summary.steps == 1
    assert RunDir(tmp_path / "run").store.load()["status"].tolist() == ["ok"]
    resumed = tune(dataclasses.replace(settings, max_steps=3))  # the flag does not leak into the next search
    assert resumed.reason == "max_steps" and resumed.steps == 3
