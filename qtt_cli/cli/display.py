"""How a running search looks: a rich live view on a terminal, plain log lines otherwise.

Both are :class:`qtt_cli.tuner.Reporter` implementations; the tuner never knows which it has.
Human-facing output goes to stderr so that stdout stays clean for ``--json``.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from qtt_cli.tuner import StepEvent, TuneSummary, format_duration


def _fmt_score(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}%"


class PlainReporter:
    """One line per event, for logs and CI (no terminal control characters)."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stderr

    def _print(self, text: str) -> None:
        print(f"[qtt {time.strftime('%H:%M:%S')}] {text}", file=self.stream, flush=True)

    def message(self, text: str) -> None:
        self._print(text)

    def prepared(self, info: dict[str, Any]) -> None:
        s, mf = info["settings"], info["meta_features"]
        self._print(
            f"run {s['out']}: {mf['num_samples']} images, {mf['num_classes']} classes, hub {info['hub']} "
            f"({len(info['models'])} models), optimizer {s['optimizer']}, budget "
            f"{format_duration(s['budget_s'])} ({format_duration(info['used_s'])} used before)"
        )
        if info.get("skipped_files"):
            self._print(f"skipped {info['skipped_files']} unreadable file(s); see {s['out']}/cache/skipped.csv")

    def step_started(self, step: int, pipeline_id: str, model: str, start: int, end: int) -> None:
        epochs = f"epoch {end}" if end == start + 1 else f"epochs {start + 1}-{end}"
        self._print(f"step {step}: {pipeline_id} {model} {epochs}")

    def step_finished(self, event: StepEvent) -> None:
        detail = f"val top-1 {_fmt_score(event.val_top1)}" if event.val_top1 is not None else ""
        if event.status != "ok":
            detail = f"{event.status} {event.error or ''} {detail}".strip()
        self._print(
            f"step {event.step}: {event.pipeline_id} -> {detail} ({event.cost_s:.1f}s); best "
            f"{event.best_pipeline or '-'} {_fmt_score(event.best_val_top1)}; "
            f"budget {format_duration(event.used_s)}/{format_duration(event.budget_s)}"
        )

    def finished(self, summary: TuneSummary) -> None:
        self._print(
            f"done ({summary.reason}): {summary.steps} steps, {summary.pipelines} pipelines "
            f"({summary.failed_pipelines} failed), best {summary.best_pipeline or '-'} "
            f"{summary.best_model or ''} {_fmt_score(summary.best_val_top1)}"
        )


class RichReporter:
    """Live view: budget bar, step count, best so far, the pipeline in training, recent steps."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]budget"), BarColumn(), TextColumn("{task.description}"), console=self.console
        )
        self.task = self.progress.add_task("", total=1.0)
        self.recent: list[StepEvent] = []
        self.current = "preparing"
        self.best = "-"
        self.budget_s = 1.0
        self.used_s = 0.0
        self.steps = 0
        self.live: Live | None = None
        self._session_start = time.monotonic()

    def _render(self) -> Group:
        used = self.used_s + (time.monotonic() - self._session_start)
        self.progress.update(
            self.task,
            completed=min(used / self.budget_s, 1.0),
            description=f"{format_duration(used)} / {format_duration(self.budget_s)}",
        )
        table = Table(box=None, show_header=True, header_style="bold")
        for column in ("step", "pipeline", "model", "epochs", "status", "val top-1", "cost"):
            table.add_column(column)
        for e in self.recent[-8:]:
            table.add_row(
                str(e.step), e.pipeline_id, e.model, f"{e.start_epoch + 1}-{e.end_epoch}",
                e.status if e.status == "ok" else f"[red]{e.status}[/]", _fmt_score(e.val_top1),
                f"{e.cost_s:.1f}s",
            )
        head = f"[bold]steps[/] {self.steps}   [bold]best[/] {self.best}   [bold]now[/] {self.current}"
        return Group(self.progress, head, table)

    def message(self, text: str) -> None:
        self.console.print(text)

    def prepared(self, info: dict[str, Any]) -> None:
        s, mf = info["settings"], info["meta_features"]
        self.budget_s = s["budget_s"]
        self.used_s = info["used_s"]
        self.steps = info["steps"]
        self._session_start = time.monotonic()
        self.console.print(
            f"[bold]qtt[/] {mf['num_samples']} images, {mf['num_classes']} classes; hub {info['hub']} "
            f"({len(info['models'])} models); optimizer {s['optimizer']}; run dir {s['out']}"
        )
        self.live = Live(self._render(), console=self.console, refresh_per_second=2, get_renderable=self._render)
        self.live.start()

    def step_started(self, step: int, pipeline_id: str, model: str, start: int, end: int) -> None:
        self.current = f"{pipeline_id} {model} epochs {start + 1}-{end}"

    def step_finished(self, event: StepEvent) -> None:
        self.recent.append(event)
        self.steps = event.step
        self.best = f"{event.best_pipeline} {_fmt_score(event.best_val_top1)}" if event.best_pipeline else "-"

    def finished(self, summary: TuneSummary) -> None:
        if self.live is not None:
            self.current = f"done ({summary.reason})"
            self.live.stop()
        self.console.print(
            f"[bold]done[/] ({summary.reason}): {summary.steps} steps, {summary.pipelines} pipelines, best "
            f"{summary.best_pipeline or '-'} {summary.best_model or ''} {_fmt_score(summary.best_val_top1)}"
        )


def make_reporter(quiet: bool = False):
    from qtt_cli.tuner import SilentReporter

    if quiet:
        return SilentReporter()
    return RichReporter() if sys.stderr.isatty() else PlainReporter()
