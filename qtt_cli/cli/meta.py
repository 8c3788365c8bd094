"""`qtt meta-train`: meta-learn the predictors' priors from learning curves of other datasets."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from qtt_cli.cli.errors import fail, user_errors

_OUR_FILES = {"surrogate.safetensors", "surrogate.json", "meta-train.json"}


def meta_train_command(
    meta_dataset: Annotated[
        list[Path],
        typer.Option(help="Meta-dataset directory (curves/perf.json, curves/cost.json, table.csv, meta/). Repeatable."),
    ],
    out: Annotated[Path, typer.Option(help="Directory for surrogate.safetensors, surrogate.json, meta-train.json.")],
    run: Annotated[
        list[Path] | None, typer.Option(help="A `qtt tune` run directory to learn from as well. Repeatable.")
    ] = None,
    iterations: Annotated[int, typer.Option(help="Most training iterations (one dataset, one batch each).")] = 3000,
    val_datasets: Annotated[
        int, typer.Option(help="Meta-dataset datasets held out for early stopping (meta-validation).")
    ] = 3,
    batch_size: Annotated[int, typer.Option(help="Observations per iteration.")] = 256,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-3,
    patience: Annotated[int, typer.Option(help="Validation checks without improvement before stopping.")] = 8,
    eval_every: Annotated[int, typer.Option(help="Iterations between validation checks.")] = 100,
    seed: Annotated[int, typer.Option(help="Seed of the validation split, the initialisation and the batches.")] = 0,
    json_output: Annotated[bool, typer.Option("--json", help="Print the training report as JSON on stdout.")] = False,
) -> None:
    """Meta-train the performance and cost predictors (Algorithm 2 of the Quick-Tune paper)."""
    from qtt_cli.surrogate.meta_train import meta_train_directories

    for name, value in (("--iterations", iterations), ("--batch-size", batch_size), ("--eval-every", eval_every)):
        if value < 1:
            fail(f"{name} must be at least 1")
    if val_datasets < 0 or patience < 1 or lr <= 0:
        fail("--val-datasets must be >= 0, --patience >= 1 and --lr > 0")
    if out.exists() and not out.is_dir():
        fail(f"--out {out} is a file; choose a directory")
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in _OUR_FILES)
        if foreign:
            fail(f"--out {out} is not empty and holds files qtt did not write ({', '.join(foreign[:3])}); "
                 "choose another directory")  # fmt: skip

    with user_errors(), _progress() as progress:  # MetaDatasetError is a ValueError: exit code 2
        report = meta_train_directories(
            meta_dataset, run or [], out, val_datasets=val_datasets, seed=seed, progress=progress,
            iterations=iterations, batch_size=batch_size, lr=lr, patience=patience, eval_every=eval_every,
        )  # fmt: skip
    if json_output:
        typer.echo(json.dumps(report, indent=1))
        return
    untrained, best = report["untrained_val_nll"], report["best_val_nll"]
    scores = f"validation NLL {untrained:.3f} untrained -> {best:.3f}" if best is not None else "no validation"
    typer.echo(
        f"meta-trained on {len(report['train_datasets'])} datasets, {report['iterations_run']} iterations "
        f"(best at {report['best_iteration']}), {scores}, {report['seconds']:.0f} s -> {out}",
        err=True,
    )


class _progress:
    """A rich progress bar on a terminal, a line per validation check otherwise (stderr either way)."""

    def __enter__(self):
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("meta-training"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(), console=Console(stderr=True), transient=False,
            )  # fmt: skip
            self.bar.start()
            self.task = self.bar.add_task("meta-train", total=None, info="")
            return self._rich
        self.bar = None
        return self._plain

    def _rich(self, iteration: int, total: int, metrics: dict[str, Any]) -> None:
        self.val = metrics.get("val_nll", getattr(self, "val", None))
        info = f"loss {metrics['loss']:.3f}" + (f"  val NLL {self.val:.3f}" if self.val is not None else "")
        if "val_nll" in metrics or iteration % 20 == 0 or iteration == 1:
            self.bar.update(self.task, completed=iteration, total=total, info=info)

    def _plain(self, iteration: int, total: int, metrics: dict[str, Any]) -> None:
        if "val_nll" in metrics:
            print(f"[qtt] iteration {iteration}/{total}: loss {metrics['loss']:.3f}, "
                  f"validation NLL {metrics['val_nll']:.3f}", file=sys.stderr, flush=True)  # fmt: skip

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()
