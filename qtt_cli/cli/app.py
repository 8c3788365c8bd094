"""The `qtt` command: a thin Typer layer over the importable qtt_cli API.

Exit codes: 0 success; 1 internal error (a bug); 2 bad input (dataset, space, hub, weights, options,
run directory); 3 the search ran but no pipeline produced a score; 130 interrupted (rerun to resume).
"""

from __future__ import annotations

from typing import Annotated

import typer

from qtt_cli import __version__
from qtt_cli.cli.inspect import hub_app, space_app
from qtt_cli.cli.results import export_best_command, leaderboard_command, predict_command
from qtt_cli.cli.tune import resume_command, tune_command

app = typer.Typer(
    name="qtt",
    help="Quick-Tune: find which pretrained model to finetune and how, within a time budget.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("tune")(tune_command)
app.command("resume")(resume_command)
app.command("leaderboard")(leaderboard_command)
app.command("export-best")(export_best_command)
app.command("predict")(predict_command)
app.command("meta-train")(__import__("qtt_cli.cli.meta", fromlist=["meta_train_command"]).meta_train_command)
app.command("bench")(__import__("qtt_cli.cli.bench", fromlist=["bench_command"]).bench_command)
app.command("report")(__import__("qtt_cli.cli.report", fromlist=["report_command"]).report_command)
app.add_typer(hub_app, name="hub")
app.add_typer(space_app, name="space")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"qtt {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Quick-Tune: find which pretrained model to finetune and how, within a time budget."""


def main() -> None:
    app()
