"""`qtt leaderboard`, `qtt export-best` and `qtt predict`: getting results out of a run."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from qtt_cli.cli.errors import EXIT_BAD_INPUT, fail, user_errors

RunDirArg = Annotated[Path, typer.Argument(help="Run directory of `qtt tune`.")]


def leaderboard_command(
    run_dir: RunDirArg,
    top: Annotated[int | None, typer.Option(help="Show only the N best pipelines.")] = None,
    test: Annotated[
        Path | None,
        typer.Option(help="Folder of labelled test images (DIR/<class>/*) to score the kept best weights on."),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="JSON records on stdout.")] = False,
    csv_output: Annotated[bool, typer.Option("--csv", help="CSV on stdout.")] = False,
) -> None:
    """Rank the pipelines of a run by their best validation top-1."""
    from qtt_cli.report import leaderboard
    from qtt_cli.store import RunDir

    with user_errors():
        if json_output and csv_output:
            fail("choose one of --json and --csv")
        if top is not None and top < 1:
            fail(f"--top must be >= 1, got {top}")
        RunDir(run_dir).read_run()
        table = leaderboard(run_dir, top=top)
        if test is not None:
            from qtt_cli.export import score_on_folder

            scores = score_on_folder(run_dir, test, list(table["pipeline_id"]))
            table["test_top1"] = table["pipeline_id"].map(scores)
    if json_output:
        typer.echo(table.to_json(orient="records", indent=2))
    elif csv_output:
        typer.echo(table.to_csv(index=False), nl=False)
    else:
        _print_table(table)


# The terminal view: the columns that tell pipelines apart; --json/--csv give every column.
_VIEW = (
    ("rank", "#"), ("pipeline_id", "pipeline"), ("model", "model"), ("best_val_top1", "val top-1"),
    ("best_epoch", "at epoch"), ("epochs", "epochs"), ("cost_s", "cost s"), ("test_top1", "test top-1"),
    ("status", "status"), ("lr", "lr"), ("opt", "opt"), ("batch_size", "batch"),
    ("data_augmentation", "augment"),
)


def _print_table(table) -> None:
    console = Console(width=None if Console().is_terminal else 160)
    if table.empty:
        console.print("no results yet")
        return
    view = Table(header_style="bold")
    columns = [(key, title) for key, title in _VIEW if key in table.columns]
    for key, title in columns:
        numeric = key in ("rank", "best_val_top1", "test_top1", "cost_s", "best_epoch", "epochs")
        view.add_column(title, justify="right" if numeric else "left", overflow="fold")
    for record in table.to_dict(orient="records"):
        view.add_row(*(_cell(key, record[key]) for key, _ in columns))
    console.print(view)


def _cell(column: str, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if column in ("best_val_top1", "test_top1"):
        return f"{value:.2f}"
    if column == "cost_s":
        return f"{value:.1f}"
    if column == "best_epoch":
        return str(int(value))
    return str(value)


def export_best_command(
    run_dir: RunDirArg,
    out: Annotated[Path, typer.Option(help="Folder to write the exported model to.")],
    format: Annotated[str, typer.Option(help="safetensors, torchscript or onnx.")] = "safetensors",
    pipeline: Annotated[str | None, typer.Option(help="Export this pipeline instead of the best one.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace files of an earlier export in --out.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the export's metadata on stdout.")] = False,
) -> None:
    """Write the best model of a run with everything needed to use it."""
    from qtt_cli.export import export_best

    with user_errors():
        exported = export_best(run_dir, out, format=format, pipeline_id=pipeline, overwrite=overwrite)
    if json_output:
        typer.echo(json.dumps(exported, indent=2))
    else:
        typer.echo(f"exported {exported['pipeline_id']} ({exported['model']}, val top-1 "
                   f"{exported['val_top1']:.2f}%) to {out}", err=True)


def predict_command(
    export_dir: Annotated[Path, typer.Argument(help="Folder written by `qtt export-best`.")],
    images: Annotated[list[Path], typer.Argument(help="Image files to classify.")],
    top: Annotated[int, typer.Option(help="Classes shown per image.")] = 3,
    json_output: Annotated[bool, typer.Option("--json", help="JSON on stdout (all class probabilities).")] = False,
) -> None:
    """Classify images with an exported model."""
    from qtt_cli.export import predict

    with user_errors():
        if top < 1:
            fail(f"--top must be >= 1, got {top}")
        results = predict(export_dir, images)
    if json_output:
        typer.echo(json.dumps(results, indent=2))
    else:
        for item in results:
            if "error" in item:
                continue
            ranked = sorted(item["probabilities"].items(), key=lambda kv: -kv[1])[:top]
            shown = ", ".join(f"{name} {p:.3f}" for name, p in ranked)
            typer.echo(f"{item['image']}: {shown}")
    failed = [item for item in results if "error" in item]
    for item in failed:
        typer.echo(f"error: {item['image']}: {item['error']}", err=True)
    if failed:
        typer.echo(f"error: {len(failed)} of {len(results)} image(s) could not be classified", err=True)
        raise typer.Exit(EXIT_BAD_INPUT)
