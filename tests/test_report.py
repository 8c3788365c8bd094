"""`qtt report`: the numbers behind the figures, the page, the CLI, the hook in `qtt tune`, and the page as a
real browser renders it (headless Chromium)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from qtt_cli.cli.app import app
from qtt_cli.report.run_data import load_run, pareto_front, steps_table, strategies, time_per
from qtt_cli.space.config import PipelineConfig
from qtt_cli.store import RunDir, make_rows
from qtt_cli.store.rundir import RunState

runner = CliRunner()
NOW = pd.Timestamp("2026-01-01", tz="UTC")


class _Epoch:
    def __init__(self, epoch: int, top1: float, cost: float) -> None:
        self.epoch, self.val_top1, self.val_loss, self.train_loss, self.cost_s = epoch, top1, 1.0, 1.0, cost


A = PipelineConfig(model="model_a", lr=0.01)
B = PipelineConfig(model="model_b", lr=0.001, spg=True, spg_modules=3, spg_drop=0.2, spg_cold_start=1)
C = PipelineConfig(model="model_a", lr=0.1, hvp_views=2, linear_probing=True)

# (pipeline, config, [(epoch, val top-1, seconds)], prediction (mean, std, cost) of the step or None)
STEPS = [
    ("p0001", A, [(1, 40.0, 10.0)], None),
    ("p0002", B, [(1, 55.0, 20.0)], (50.0, 5.0, 15.0)),
    ("p0001", A, [(2, 60.0, 10.0)], (58.0, 4.0, 12.0)),
    ("p0003", C, [(1, 30.0, 5.0)], (45.0, 8.0, 6.0)),
    ("p0002", B, [(2, 70.0, 20.0), (3, 72.0, 20.0)], (71.0, 3.0, 35.0)),
]


def make_run(root: Path, *, predictions: bool = True, optimizer: str = "quicktune") -> Path:
    """A run directory written through the store's own API, with known numbers (no training)."""
    rd = RunDir(root)
    rd.prepare()
    rd.write_run({"settings": {"dataset": "/data/x", "budget_s": 120.0, "optimizer": optimizer, "hub": "tiny",
                               "weights": "random"},
                  "classes": ["a", "b", "c"], "splits": {"train": 30, "val": 9, "test": 0}})
    rd.write_state(RunState(used_s=100.0, steps=len(STEPS), sessions=1))
    for step, (pid, config, epochs, predicted) in enumerate(STEPS):
        rows = make_rows(pid, config, [_Epoch(*e) for e in epochs], step=step, status="ok", error=None,
                         wall_time=NOW)
        if predictions and predicted is not None:
            rows[-1].update(pred_val_top1=predicted[0], pred_val_std=predicted[1], pred_cost_s=predicted[2])
        rd.store.append(rows)
    rd.store.append(make_rows("p0004", A, [], step=len(STEPS), status="failed", error="OOM", wall_time=NOW,
                              failed_epoch=1))
    return root


def test_steps_table_accumulates_time_and_best_so_far(tmp_path):
    steps = steps_table(load_run(make_run(tmp_path / "run")).history)
    assert list(steps["pipeline_id"]) == ["p0001", "p0002", "p0001", "p0003", "p0002", "p0004"]
    assert list(steps["cost_s"]) == [10.0, 20.0, 10.0, 5.0, 40.0, 0.0]
    assert list(steps["time_s"]) == [10.0, 30.0, 40.0, 45.0, 85.0, 85.0]
    assert list(steps["best_so_far"]) == [40.0, 55.0, 60.0, 60.0, 72.0, 72.0]
    # the prediction of a two-epoch step sits on its last epoch, and is compared with that epoch
    assert steps.loc[4, "pred_val_top1"] == 71.0 and steps.loc[4, "val_top1"] == 72.0
    assert np.isnan(steps.loc[0, "pred_val_top1"])


def test_pareto_front_keeps_only_pipelines_nobody_beats():
    cost = np.array([20.0, 60.0, 5.0, 30.0, 40.0])
    accuracy = np.array([60.0, 72.0, 30.0, 50.0, 72.0])
    assert list(pareto_front(cost, accuracy)) == [2, 0, 4]  # 30 % for 5 s, 60 % for 20 s, 72 % for 40 s


def test_strategies_name_each_method_and_default_to_full_finetuning():
    assert strategies(A.to_dict()) == ["full finetuning"]
    assert strategies(B.to_dict()) == ["SPG"]
    assert strategies(C.to_dict()) == ["linear probing", "HVP"]


def test_time_per_model_and_strategy(tmp_path):
    per_model, per_strategy = time_per(load_run(make_run(tmp_path / "run")).history)
    assert per_model.to_dict() == {"model_b": 60.0, "model_a": 25.0}
    assert per_strategy.to_dict() == {"SPG": 60.0, "full finetuning": 20.0, "linear probing": 5.0, "HVP": 5.0}


def test_report_page_is_self_contained_with_one_row_per_pipeline(tmp_path):
    from qtt_cli.report import write_report

    run = make_run(tmp_path / "run")
    path = write_report(run, tmp_path / "out")
    assert path == tmp_path / "out" / "index.html" and sorted(p.name for p in path.parent.iterdir()) == ["index.html"]
    page = path.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page), "the page must need no network"
    images = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,', page)
    assert len(images) == 5  # progress, curves, accuracy vs cost, time, predictions
    rows = re.findall(r'<tr data-pipeline="(p\d+)"', page)
    assert rows == ["p0002", "p0001", "p0003", "p0004"]  # ranked, the failed pipeline last
    assert '<tr data-pipeline="p0002" class="best">' in page
    assert '<span id="best-model">model_b</span>' in page
    p0004 = page[page.index('<tr data-pipeline="p0004"'):]
    assert p0004.startswith('<tr data-pipeline="p0004"><td>4</td>')  # integers stay integers beside a NaN
    assert "<td>72.00</td><td>3</td><td>3</td><td>60.00</td>" in page  # p0002: 72 % at epoch 3 of 3, 60 s
    recipe = page[page.index('<table id="recipe">'):]
    assert "<th>spg_modules</th><td class=\"text\">3</td>" in recipe and "momentum" not in recipe
    assert "Mean absolute error of the accuracy prediction: 5.8 percentage points" in page  # (5+2+15+1)/4


def test_report_without_predictions_has_no_predictor_figure(tmp_path):
    from qtt_cli.report import write_report

    page = write_report(make_run(tmp_path / "run", predictions=False, optimizer="asha")).read_text()
    assert page.count("<img ") == 4 and "predictors did" not in page


def test_report_command_default_folder_and_bad_run(tmp_path):
    run = make_run(tmp_path / "run")
    result = runner.invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    assert (run / "report" / "index.html").is_file() and "index.html" in result.stdout
    bad = runner.invoke(app, ["report", str(tmp_path / "nothing")])
    assert bad.exit_code == 2 and "not a qtt run directory" in bad.output


def test_a_failing_report_is_only_a_warning(tmp_path, monkeypatch, capsys):
    from qtt_cli.cli.report import report_after_run

    def broken(run_dir, out=None):
        raise RuntimeError("disk full")

    monkeypatch.setattr("qtt_cli.report.html_report.write_report", broken)
    assert report_after_run(make_run(tmp_path / "run")) is None
    assert "could not write the report (RuntimeError: disk full)" in capsys.readouterr().err


@pytest.mark.slow
def test_tune_writes_the_report_unless_told_not_to(tmp_path, digits_split_dir, monkeypatch):
    hub = tmp_path / "hub.yaml"
    hub.write_text("name: one\nmodels:\n  - name: lcnet_050.ra2_in1k\n    input_size: 32\n")
    args = ["tune", str(digits_split_dir), "--hub", str(hub), "--weights", "random", "--max-input-size", "32",
            "--max-epochs", "1", "--max-steps", "1", "--budget", "60m", "--quiet", "--optimizer", "random"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "with")])
    assert result.exit_code == 0, result.output
    assert "lcnet_050.ra2_in1k" in (tmp_path / "with" / "report" / "index.html").read_text()
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "without"), "--no-report"])
    assert result.exit_code == 0 and not (tmp_path / "without" / "report").exists()

    def broken(run_dir, out=None):
        raise RuntimeError("no fonts")

    monkeypatch.setattr("qtt_cli.report.html_report.write_report", broken)
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "broken")])
    assert result.exit_code == 0 and "could not write the report" in result.output
    assert RunDir(tmp_path / "broken").store.load()["val_top1"].notna().all()


# ---------------------------------------------------------------- the page in a real browser

def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if found := shutil.which(name):
            return found
    return None


def _run_chromium(binary: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"
    profile.mkdir(exist_ok=True)
    command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", "--virtual-time-budget=5000", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


# Appended to a copy of the page: once everything loaded, write what the browser sees into the DOM.
_PROBE = """<script>
window.addEventListener("load", () => {
  const images = [...document.images].map(i => [i.naturalWidth, i.naturalHeight]);
  const rows = [...document.querySelectorAll("#leaderboard tbody tr")].map(r => r.dataset.pipeline);
  const best = document.getElementById("best-model");
  const facts = {images, rows, best: best ? best.textContent : null,
                 bestRow: (document.querySelector("#leaderboard tr.best") || {}).dataset?.pipeline};
  const out = document.createElement("pre"); out.id = "probe"; out.textContent = JSON.stringify(facts);
  document.body.appendChild(out);
});
</script>"""


def test_report_renders_in_headless_chromium(tmp_path):
    binary = _chromium()
    if binary is None:
        pytest.skip("no Chromium found (Debian: apt-get install -y chromium; .ci/run installs it)")
    from qtt_cli.report import write_report

    page = write_report(make_run(tmp_path / "run"), tmp_path / "out")
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text().replace("</body>", _PROBE + "</body>"))
    dom = _run_chromium(binary, tmp_path, "--dump-dom", probe.as_uri())
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom.stdout)
    assert found, f"Chromium did not run the probe: {dom.stderr[-2000:]}"
    facts = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert len(facts["images"]) == 5 and all(w > 0 and h > 0 for w, h in facts["images"])
    assert facts["rows"] == ["p0002", "p0001", "p0003", "p0004"]
    assert facts["best"] == "model_b" and facts["bestRow"] == "p0002"

    shot = tmp_path / "shot.png"
    _run_chromium(binary, tmp_path, "--window-size=1100,1400", f"--screenshot={shot}", page.as_uri())
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (1100, 1400)
        gray = np.asarray(image.convert("L"), dtype=float)
    assert gray.std() > 10, "the screenshot is blank"


def test_the_tuner_records_a_prediction_on_the_epoch_it_predicted(tmp_path):
    from qtt_cli.optimizer import Suggestion
    from qtt_cli.tuner.history import History
    from qtt_cli.tuner.tuner import _record
    from qtt_cli.worker.results import EpochResult, StepResult

    store = RunDir(tmp_path).store
    history = History(store)
    ask = Suggestion("p0001", A, 0, 2, predicted_val_top1=61.0, predicted_val_std=2.0, predicted_cost_s=9.0)
    assert ask == Suggestion("p0001", A, 0, 2)  # the prediction is not part of the step's identity
    epochs = [EpochResult(1, 50.0, 1.0, 1.0, 4.0), EpochResult(2, 60.0, 1.0, 1.0, 4.0)]
    _record(history, ask, StepResult("p0001", epochs, "ok"), 0)
    cut = Suggestion("p0002", A, 0, 2, predicted_val_top1=70.0, predicted_val_std=1.0, predicted_cost_s=9.0)
    _record(history, cut, StepResult("p0002", epochs[:1], "interrupted"), 1)  # cut before the predicted epoch
    history = store.load()
    assert history["pred_val_top1"].tolist()[:2] == [pytest.approx(np.nan, nan_ok=True), 61.0]
    assert history.loc[1, "pred_cost_s"] == 9.0 and history["pred_val_top1"].iloc[2:].isna().all()


def test_time_counts_the_step_overheads_when_the_run_recorded_them(tmp_path):
    run = make_run(tmp_path / "run")
    history = load_run(run).history
    history["overhead_s"] = 0.0
    history.loc[history["pipeline_id"] == "p0003", "overhead_s"] = 7.0  # e.g. the model build of its step
    steps = steps_table(history)
    assert steps.loc[3, "cost_s"] == 12.0 and steps["time_s"].iloc[-1] == 92.0
    assert time_per(history)[0].to_dict() == {"model_b": 60.0, "model_a": 32.0}
