"""`qtt report`: the run's HTML page (figures, leaderboard, best recipe), and the hook `qtt tune` calls."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from qtt_cli.cli.errors import user_errors

log = logging.getLogger("qtt")


def report_command(
    run_dir: Annotated[Path, typer.Argument(help="Run directory of `qtt tune`.")],
    out: Annotated[
        Path | None, typer.Option(help="Folder for index.html. Default: RUNDIR/report.")
    ] = None,
    open_page: Annotated[bool, typer.Option("--open", help="Open the page in the default web browser.")] = False,
) -> None:
    """Write a static HTML report of a run: progress, learning curves, cost, leaderboard, best recipe."""
    from qtt_cli.report import write_report

    with user_errors():
        path = write_report(run_dir, out)
    typer.echo(str(path))
    if open_page:
        import webbrowser

        webbrowser.open(path.resolve().as_uri())


def report_after_run(run_dir: Path, *, quiet: bool = False) -> Path | None:
    """Write the run's report after `qtt tune`/`qtt resume`. It never fails the run: any error (or a second
    Ctrl-C while it is drawn) becomes a warning, and the run's exit code stays what the search made it."""
    from qtt_cli.report import write_report

    try:
        path = write_report(run_dir)
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 -- a report must not lose the run
        log.warning("could not write the run report: %s: %s", type(exc).__name__, exc)
        typer.echo(f"warning: could not write the report ({type(exc).__name__}: {exc}); "
                   f"`qtt report {run_dir}` retries", err=True)
        return None
    if not quiet:
        typer.echo(f"report: {path}", err=True)
    return path
