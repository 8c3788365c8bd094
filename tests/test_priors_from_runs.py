"""`qtt tune --priors DIR`: priors meta-trained with a team's finished runs (`qtt meta-train --run RUNDIR`)
change what the next search decides first (issue 10, "Learn from the user's own runs")."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest
from test_surrogate import _synthetic
from typer.testing import CliRunner

from qtt_cli.cli.app import app
from qtt_cli.hub import load_hub
from qtt_cli.metadataset import write_meta_dataset
from qtt_cli.optimizer import PipelineState
from qtt_cli.space import build_space, sample_configs
from qtt_cli.store import ResultsStore, make_rows
from qtt_cli.tuner import TuneSettings
from qtt_cli.tuner.tuner import make_optimizer

TINY = load_hub("tiny")
GOOD = "mobilenetv3_small_050.lamb_in1k"  # the model the finished run found far better than the others
META_FEATURES = {"num_samples": 1500, "num_classes": 10, "resolution": 32, "channels": 3}


def _final(model: str) -> float:
    return 85.0 if model == GOOD else 15.0


def _finished_run(root: Path) -> Path:
    """A finished `qtt tune` run on the tiny hub: 36 pipelines of 4 epochs (9 of GOOD); GOOD reaches ~85 %, the
    rest ~15 %."""
    run = root / "team-run"
    run.mkdir()
    models = [m.name for m in TINY.models]
    (run / "run.json").write_text(json.dumps({
        "settings": {"max_epochs": 4, "hub": "tiny"}, "hub": "tiny", "models": models,
        "meta_features": META_FEATURES,
    }))  # fmt: skip
    store = ResultsStore(run)
    configs = sample_configs(build_space(TINY.names), 36, seed=5)
    now = pd.Timestamp.now(tz="UTC")
    for i, config in enumerate(configs):
        final = _final(config.model)
        epochs = [type("E", (), {"epoch": k, "val_top1": final * (1 - 0.5**k), "val_loss": 1.0, "train_loss": 1.0,
                                 "cost_s": 2.0})() for k in range(1, 5)]  # fmt: skip
        store.append(make_rows(f"p{i:04d}", config, epochs, step=i, status="ok", error=None, wall_time=now))
    return run


def _settings(priors: Path | None) -> TuneSettings:
    return TuneSettings(dataset=Path("data"), out=Path("runs/next"), budget_s=60, hub="tiny", optimizer="quicktune",
                        max_epochs=4, priors=priors)  # fmt: skip


def _first_decisions(priors: Path | None, steps: int = 4) -> list[str]:
    """The models a new search on a dataset like the run's proposes after its (random) first pipeline; each
    proposal is observed as that dataset would score its first epoch (GOOD 42.5 %, the others 7.5 %)."""
    optimizer = make_optimizer(_settings(priors), build_space(TINY.names), hub=TINY,
                               meta_features=list(META_FEATURES.values()))  # fmt: skip
    pipelines: dict[str, PipelineState] = {}
    models = []
    for _ in range(steps + 1):
        s = optimizer.ask(pipelines)
        models.append(s.config.model)
        first_epoch = _final(s.config.model) / 2
        curve = (*pipelines[s.pipeline_id].curve, first_epoch) if s.pipeline_id in pipelines else (first_epoch,)
        pipelines[s.pipeline_id] = PipelineState(s.pipeline_id, s.config, curve, (2.0,) * len(curve), "ok", None, 0)
    return models[1:]


@pytest.fixture(scope="module")
def priors_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("priors")
    write_meta_dataset([_synthetic(f"m{i}", 40, seed=i) for i in range(3)], root / "meta")
    run = _finished_run(root)
    dirs = {}
    for name, extra in (("without", []), ("with", ["--run", str(run)])):
        args = ["meta-train", "--meta-dataset", str(root / "meta"), *extra, "--out", str(root / name),
                "--iterations", "150", "--eval-every", "50", "--val-datasets", "1", "--seed", "0"]  # fmt: skip
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        dirs[name] = root / name
    return dirs


def test_a_runs_own_history_changes_the_next_runs_first_decisions(priors_dirs):
    """Same seed, same pool, same observations: only the priors differ, and the decisions after the random
    first pipeline change. (With nothing observed the GP predicts its constant prior mean for every
    configuration, so the learnt knowledge acts through the kernel once the run has observations.)"""
    without = _first_decisions(priors_dirs["without"])
    with_run = _first_decisions(priors_dirs["with"])
    assert with_run != without
    assert with_run.count(GOOD) >= 2  # both soon continue the model that wins on this kind of data
    report = json.loads((priors_dirs["with"] / "meta-train.json").read_text())
    assert "team-run" in report["train_datasets"]


def test_tune_uses_the_priors_it_is_given_and_refuses_a_directory_without_priors(priors_dirs, tmp_path):
    from qtt_cli.surrogate import Surrogate, SurrogateFileError

    optimizer = make_optimizer(_settings(priors_dirs["with"]), build_space(TINY.names), hub=TINY,
                               meta_features=list(META_FEATURES.values()))  # fmt: skip
    given = Surrogate.load(priors_dirs["with"])
    assert optimizer._start.info["meta_training"]["sources"] == given.info["meta_training"]["sources"]
    with pytest.raises(SurrogateFileError):
        make_optimizer(_settings(tmp_path), build_space(TINY.names), hub=TINY,
                       meta_features=list(META_FEATURES.values()))  # fmt: skip
    assert dataclasses.replace(_settings(tmp_path)).to_json()["priors"] == str(tmp_path.resolve())
