"""`qtt hub list` and `qtt space show`: what a search would choose from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from qtt_cli.cli.errors import user_errors

hub_app = typer.Typer(help="Model hubs: the pretrained models a search chooses from.", no_args_is_help=True)
space_app = typer.Typer(help="The search space of finetuning hyperparameters.", no_args_is_help=True)


@hub_app.command("list")
def hub_list(
    hub: Annotated[str, typer.Option(help="quicktune, tiny or a YAML file.")] = "quicktune",
    json_output: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
) -> None:
    """Show the models of a hub with their size and input resolution."""
    from qtt_cli.hub import describe_hub, load_hub

    with user_errors():
        rows = describe_hub(load_hub(hub))
    _show(rows, json_output, title=f"hub {hub}")


@space_app.command("show")
def space_show(
    space: Annotated[Path | None, typer.Option(help="YAML file restricting or extending the space.")] = None,
    hub: Annotated[str, typer.Option(help="Hub whose models are the values of `model`.")] = "quicktune",
    json_output: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
) -> None:
    """Show every hyperparameter with its values, default and condition."""
    from qtt_cli.hub import load_hub
    from qtt_cli.space import build_space, describe_space, load_space

    with user_errors():
        names = load_hub(hub).names
        rows = describe_space(load_space(space, names) if space else build_space(names))
    _show(rows, json_output, title="search space")


def _show(rows: list[dict], json_output: bool, *, title: str) -> None:
    if json_output:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    table = Table(title=title, header_style="bold")
    columns = list(rows[0]) if rows else []
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(row[c]) for c in columns))
    Console(width=None if Console().is_terminal else 160).print(table)


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)
