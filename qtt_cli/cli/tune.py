"""`qtt tune` and `qtt resume`."""

from __future__ import annotations

import contextlib
import json
import signal
from pathlib import Path
from typing import Annotated

import typer

from qtt_cli.cli.display import make_reporter
from qtt_cli.cli.errors import EXIT_INTERRUPTED, EXIT_NO_RESULT, user_errors

DatasetArg = Annotated[
    Path, typer.Argument(help="Image folder: DIR/train/<class>/* (+ optional val/, test/) or DIR/<class>/*.")
]


def tune_command(
    dataset: DatasetArg,
    budget: Annotated[str, typer.Option(help="Search time: 4h, 30m, 90s, 1h30m or seconds.")] = "1h",
    out: Annotated[
        Path | None, typer.Option(help="Run directory. Default: runs/<dataset name>. An existing run resumes.")
    ] = None,
    hub: Annotated[
        str, typer.Option(help="Model hub: auto (quicktune on GPU, tiny on CPU), quicktune, tiny or a YAML file.")
    ] = "auto",
    weights: Annotated[
        str, typer.Option(help="pretrained (timm/HF cache), random, or a folder of checkpoint files.")
    ] = "pretrained",
    optimizer: Annotated[
        str,
        typer.Option(
            help="quicktune (meta-learned freeze-thaw BO), asha (asynchronous successive halving, η=3) or random."
        ),
    ] = "quicktune",
    delta_t: Annotated[int, typer.Option("--delta-t", help="Epochs per freeze-thaw step.")] = 1,
    max_epochs: Annotated[
        int, typer.Option(help="Epochs after which a pipeline is finished (LR schedule length).")
    ] = 50,
    seed: Annotated[int, typer.Option(help="Seed of the split, the sampling and the training.")] = 0,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many steps (in total over resumes).")] = None,
    val_fraction: Annotated[float, typer.Option(help="Validation share when the dataset has no val/ folder.")] = 0.2,
    max_input_size: Annotated[
        int | None, typer.Option(help="Cap on the model input side in pixels (CPU runs).")
    ] = None,
    space: Annotated[Path | None, typer.Option(help="YAML file restricting or extending the search space.")] = None,
    device: Annotated[str | None, typer.Option(help="Torch device; default cuda when available, else cpu.")] = None,
    num_workers: Annotated[int, typer.Option(help="Data loader worker processes.")] = 0,
    keep_best: Annotated[int, typer.Option(help="Pipelines whose best weights are kept on disk.")] = 3,
    max_checkpoints: Annotated[
        int,
        typer.Option(help="Pipelines in training that keep a checkpoint to continue from; the weakest beyond it stop."),
    ] = 32,
    workers: Annotated[
        int,
        typer.Option(help="Steps trained at once: N worker processes splitting the CPU cores (1: in this process)."),
    ] = 1,
    devices: Annotated[
        str | None, typer.Option(help="GPUs to train on, one worker process each: 0,1 or auto (every visible GPU).")
    ] = None,
    executor: Annotated[
        str, typer.Option(help="Where steps run: auto (in-process for one worker), inprocess, local or ray.")
    ] = "auto",
    address: Annotated[
        str | None, typer.Option(help="--executor ray: the cluster to join (auto or HOST:PORT); default a local Ray.")
    ] = None,
    storage: Annotated[
        str | None, typer.Option(help="--executor ray: the run directory as the Ray workers see it (shared FS).")
    ] = None,
    priors: Annotated[
        Path | None,
        typer.Option(
            help="Quick-Tune priors from `qtt meta-train` (e.g. with --run of past runs) instead of the shipped ones."
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Delete an existing run in --out and start over.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print a machine-readable summary on stdout.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress output.")] = False,
    no_report: Annotated[bool, typer.Option("--no-report", help="Do not write RUNDIR/report/index.html.")] = False,
) -> None:
    """Search for the best pretrained model and finetuning recipe within the budget."""
    from qtt_cli.tuner import TuneSettings, parse_budget, tune

    with user_errors():
        settings = TuneSettings(
            dataset=dataset,
            out=out or Path("runs") / dataset.resolve().name,
            budget_s=parse_budget(budget),
            hub=hub,
            weights=weights,
            optimizer=optimizer,
            delta_t=delta_t,
            max_epochs=max_epochs,
            seed=seed,
            max_steps=max_steps,
            val_fraction=val_fraction,
            max_input_size=max_input_size,
            space_file=space,
            device=device,
            num_workers=num_workers,
            keep_best=keep_best,
            max_checkpoints=max_checkpoints,
            priors=priors,
            workers=workers,
            devices=devices,
            executor=executor,
            address=address,
            storage=storage,
        )
        reporter = make_reporter(quiet=quiet)
        with _sigterm_as_interrupt():
            summary = tune(settings, overwrite=overwrite, reporter=reporter)
    _report(summary, no_report, quiet)
    _finish(summary, json_output)


def resume_command(
    run_dir: Annotated[Path, typer.Argument(help="Run directory of an earlier `qtt tune`.")],
    budget: Annotated[str | None, typer.Option(help="New total budget (default: the run's own).")] = None,
    max_steps: Annotated[int | None, typer.Option(help="New total step limit.")] = None,
    device: Annotated[
        str | None, typer.Option(help="Torch device for this session (e.g. cpu after a run started on cuda).")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print a machine-readable summary on stdout.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress output.")] = False,
    no_report: Annotated[bool, typer.Option("--no-report", help="Do not write RUNDIR/report/index.html.")] = False,
) -> None:
    """Continue an interrupted or finished run with its saved settings."""
    from qtt_cli.tuner import parse_budget, resume

    with user_errors(), _sigterm_as_interrupt():
        summary = resume(
            run_dir,
            budget_s=parse_budget(budget) if budget else None,
            max_steps=max_steps,
            reporter=make_reporter(quiet=quiet),
            device=device,
        )
    _report(summary, no_report, quiet)
    _finish(summary, json_output)


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """Treat SIGTERM (CI timeouts, `kill`, job schedulers) like Ctrl-C, and both alike: stop cleanly, keep
    what is done. Besides raising KeyboardInterrupt, the handler asks the tuner to stop, so that the run
    still ends at the next step if a library swallowed the exception."""
    from qtt_cli.tuner.tuner import request_stop

    def interrupt(signum, frame):
        request_stop()
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _report(summary, no_report: bool, quiet: bool) -> None:
    """The run report, after the search returned (also after Ctrl-C, which the search turns into a summary)."""
    if not no_report:
        from qtt_cli.cli.report import report_after_run

        report_after_run(summary.run_dir, quiet=quiet)


def _finish(summary, json_output: bool) -> None:
    if json_output:
        typer.echo(json.dumps(summary.to_json(), indent=2))
    if summary.reason == "interrupted":
        typer.echo(f"interrupted; rerun the same command (or `qtt resume {summary.run_dir}`) to continue", err=True)
        raise typer.Exit(EXIT_INTERRUPTED)
    if summary.best_pipeline is None:
        typer.echo("error: no pipeline produced a validation score; see the run's logs/tune.log", err=True)
        raise typer.Exit(EXIT_NO_RESULT)
