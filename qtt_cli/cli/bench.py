"""`qtt bench`: compare the optimizers by replaying a meta-dataset's recorded learning curves."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from qtt_cli.cli.errors import user_errors


def _split(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    items = tuple(part.strip() for part in text.split(",") if part.strip())
    if not items:
        raise ValueError(f"empty list {text!r}; give comma-separated names")
    return items


def bench_command(
    meta_dataset: Annotated[
        Path, typer.Option(help="Meta-dataset directory (curves/perf.json, curves/cost.json, table.csv, meta/).")
    ],
    out: Annotated[Path, typer.Option(help="Output directory: results.csv, summary.csv, regret.png, priors/.")],
    budgets: Annotated[str, typer.Option(help="Budgets of recorded cost for the table, e.g. 1h,4h,16h.")] = "1h,4h,16h",
    seeds: Annotated[int, typer.Option(help="Searches per dataset and optimizer (seeds F..F+N-1).")] = 3,
    first_seed: Annotated[int, typer.Option(help="The first seed F.")] = 0,
    optimizers: Annotated[
        str | None,
        typer.Option(help="Comma-separated subset of: random, asha, dyhpo, quicktune-no-cost, quicktune-no-meta, "
                     "quicktune, quicktune-cooled, quicktune-run-noise (default: all)."),
    ] = None,  # fmt: skip
    datasets: Annotated[str | None, typer.Option(help="Comma-separated datasets to benchmark (default: all).")] = None,
    folds: Annotated[int, typer.Option(help="Folds of the leave-datasets-out meta-training.")] = 6,
    delta_t: Annotated[int, typer.Option("--delta-t", help="Epochs per freeze-thaw step.")] = 1,
    meta_iterations: Annotated[int, typer.Option(help="Meta-training iterations per fold.")] = 2000,
    jobs: Annotated[int, typer.Option(help="Parallel search processes.")] = 1,
    workers: Annotated[
        int, typer.Option(help="Simulated parallel workers per search (asynchronous, equal wall-clock budget).")
    ] = 1,
    drop_degenerate: Annotated[
        bool, typer.Option(help="Remove the meta-dataset's degenerate linear-probing records from the candidates.")
    ] = False,
    shared_priors: Annotated[
        bool, typer.Option(help="One set of fold priors for all seeds (default: each seed meta-trains its own).")
    ] = False,
    quiet: Annotated[bool, typer.Option(help="No progress output.")] = False,
) -> None:
    """Replay every optimizer on recorded curves: normalized regret and rank at each budget, table and plot."""
    from rich.console import Console

    from qtt_cli.bench import OPTIMIZERS, BenchSettings, run_bench
    from qtt_cli.tuner import parse_budget

    console = Console(stderr=True)
    with user_errors():
        budget_list = _split(budgets) or ()
        settings = BenchSettings(
            meta_dataset=meta_dataset,
            out=out,
            budgets_s=tuple(parse_budget(b) for b in budget_list),
            seeds=seeds,
            first_seed=first_seed,
            optimizers=_split(optimizers) or tuple(OPTIMIZERS),
            datasets=_split(datasets),
            folds=folds,
            delta_t=delta_t,
            meta_iterations=meta_iterations,
            jobs=jobs,
            workers=workers,
            drop_degenerate=drop_degenerate,
            shared_priors=shared_priors,
        )
        result = _run(settings, run_bench, console, quiet)
    _show(result, settings, budget_list, console)


def _run(settings, run_bench, console, quiet: bool):
    if quiet:
        return run_bench(settings)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as bar:  # fmt: skip
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        return run_bench(settings, progress)


def _show(result, settings, budget_names, console) -> None:
    from rich.table import Table

    from qtt_cli.bench import OPTIMIZERS

    summary = result.summary
    table = Table(title="mean normalized regret and mean rank over datasets × seeds (lower is better)")
    table.add_column("optimizer")
    for name in budget_names:
        table.add_column(f"regret {name}", justify="right")
        table.add_column(f"rank {name}", justify="right")
    for opt in settings.optimizers:
        cells = [OPTIMIZERS[opt][0]]
        for budget in settings.budgets_s:
            row = summary[(summary["optimizer"] == opt) & (summary["budget_h"] == budget / 3600)]
            if row.empty:
                cells += ["-", "-"]
                continue
            r = row.iloc[0]
            cells += [f"{r['regret']:.3f}", f"{r['rank']:.2f}"]
        table.add_row(*cells)
    console.print(table)
    for kind, path in result.files.items():
        console.print(f"{kind}: {path}")
