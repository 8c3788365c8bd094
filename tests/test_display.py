"""What a user sees while a search runs: plain lines for logs/CI, a live view on a terminal."""

from __future__ import annotations

import io
import re
from pathlib import Path

from rich.console import Console

from qtt_cli.cli.display import PlainReporter, RichReporter
from qtt_cli.tuner import StepEvent, TuneSummary

INFO = {
    "settings": {"out": "runs/x", "optimizer": "random", "budget_s": 600.0},
    "meta_features": {"num_samples": 200, "num_classes": 10},
    "hub": "tiny", "models": ["a", "b"], "used_s": 30.0, "steps": 3, "skipped_files": 2,
}
EVENT = StepEvent(step=4, pipeline_id="p0002", model="a", start_epoch=1, end_epoch=2, status="diverged",
                  val_top1=None, cost_s=1.5, error="loss is nan", best_pipeline="p0001", best_val_top1=42.5,
                  used_s=45.0, budget_s=600.0)
SUMMARY = TuneSummary(run_dir=Path("runs/x"), reason="budget", steps=4, pipelines=2, failed_pipelines=1,
                      used_s=600.0, budget_s=600.0, best_pipeline="p0001", best_model="a", best_val_top1=42.5,
                      best_epoch=2)


def test_plain_reporter_writes_one_line_per_event_without_control_characters():
    stream = io.StringIO()
    reporter = PlainReporter(stream)
    reporter.prepared(INFO)
    reporter.step_started(4, "p0002", "a", 1, 2)
    reporter.step_finished(EVENT)
    reporter.finished(SUMMARY)
    lines = stream.getvalue().splitlines()
    assert "\x1b" not in stream.getvalue()
    assert "200 images, 10 classes" in lines[0] and "10m00s" in lines[0]
    assert "skipped 2 unreadable" in lines[1]
    assert lines[2].endswith("step 4: p0002 a epoch 2")
    assert "diverged loss is nan" in lines[3] and "best p0001 42.50%" in lines[3]
    assert "done (budget): 4 steps, 2 pipelines (1 failed)" in lines[4]


def test_rich_reporter_shows_budget_best_and_recent_steps():
    buffer = io.StringIO()
    reporter = RichReporter(Console(file=buffer, force_terminal=True, width=120))
    reporter.prepared(INFO)
    reporter.step_started(4, "p0002", "a", 1, 2)
    reporter.step_finished(EVENT)
    rendered = Console(file=io.StringIO(), width=120, record=True)
    rendered.print(reporter._render())
    text = rendered.export_text()
    assert "budget" in text and "p0001 42.50%" in text and "diverged" in text and "2-2" in text
    reporter.finished(SUMMARY)
    plain = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", buffer.getvalue())
    assert "done (budget): 4 steps, 2 pipelines" in plain
