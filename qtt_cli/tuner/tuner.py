"""The tuning loop: prepare everything that can fail, then ask -> train -> record until the budget ends.

The tuner only loops. The optimizer decides (from the store's history), the worker trains, the store
records. Everything that can be wrong with the user's input (dataset, hub, search space, weights, run
directory) is checked in :func:`prepare`, before the budget starts.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from qtt_cli import __version__
from qtt_cli.data import DatasetIdentity, ImageCache, build_cache, cache_is_current, discover, meta_features
from qtt_cli.execution import Executor, Finished, InProcessExecutor, StepTask, check_executor, make_executor
from qtt_cli.hub import Hub, Weights, ensure_weights_available, load_hub, parse_weights
from qtt_cli.optimizer import (
    BudgetStatus,
    Optimizer,
    PipelineState,
    RandomSearch,
    SuccessiveHalving,
    Suggestion,
    pipeline_states,
)
from qtt_cli.optimizer.pending import with_in_flight
from qtt_cli.space import build_space, load_space
from qtt_cli.store import RunDir, RunDirError, make_rows
from qtt_cli.store.files import DiskFullError, is_disk_full
from qtt_cli.store.rundir import RunLock, RunState
from qtt_cli.tuner.budget import BudgetClock, Heartbeat
from qtt_cli.tuner.events import Reporter, SilentReporter, StepEvent, TuneSummary
from qtt_cli.tuner.history import History, recorded_steps
from qtt_cli.tuner.recovery import reconcile_checkpoints
from qtt_cli.tuner.settings import TuneSettings
from qtt_cli.worker import FinetuneWorker, StepResult
from qtt_cli.worker.device import resolve_device

log = logging.getLogger("qtt")

# Seconds the tuner waits, after the budget, for the steps in flight to cut themselves inside their epoch
# (they check the deadline after every batch); past it they are cancelled.
CUT_GRACE_S = 60.0


@dataclass
class PreparedRun:
    """A run whose inputs are validated and whose dataset is decoded; the budget has not started."""

    settings: TuneSettings
    run_dir: RunDir
    hub: Hub
    weights: Weights
    cache: ImageCache
    optimizer: Optimizer
    worker: FinetuneWorker
    info: dict[str, Any]
    lock: RunLock  # held from prepare() until the search ends
    executor: Executor | None = None  # where steps run (qtt_cli.execution); None: in this process, one at a time

    def __post_init__(self) -> None:
        if self.executor is None:
            self.executor = InProcessExecutor(self.worker)

    def close(self) -> None:
        if self.executor is not None:
            self.executor.close()
        _detach_log_file()  # the run's log file is not held open after it (unmounts, deleting the run)
        self.lock.__exit__(None, None, None)


def resolve_hub_name(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "quicktune" if torch.cuda.is_available() else "tiny"


def cache_side(hub: Hub, max_input_size: int | None) -> int:
    """Side of the decoded-image cache: large enough for every model's input, capped for CPU runs.

    It is also the cap passed to the worker, so no model ever trains on images upscaled from the
    cache (a hub entry's ``input_size`` is a cap on the model's pretrained input size).
    """
    side = max(spec.input_size for spec in hub.models)
    return min(side, max_input_size) if max_input_size else side


def prepare(settings: TuneSettings, *, overwrite: bool = False, reporter: Reporter | None = None) -> PreparedRun:
    """Validate inputs, lock and set up (or reopen) the run directory, decode the dataset once.

    Nothing is written before every input has been checked. The returned run holds the run
    directory's lock; release it with ``close()``.

    Raises DatasetError, HubError, SpaceFileError, WeightsUnavailableError or RunDirError with a
    message meant for the user.
    """
    reporter = reporter or SilentReporter()
    resolve_device(settings.device)
    splits = discover(settings.dataset, val_fraction=settings.val_fraction, seed=settings.seed)
    hub = load_hub(resolve_hub_name(settings.hub))
    space = (
        load_space(settings.space_file, hub.names) if settings.space_file else build_space(hub.names)
    )
    weights = parse_weights(settings.weights)
    ensure_weights_available(hub, weights)
    check_executor(settings)  # e.g. --executor ray without Ray, --devices 3 on a 2-GPU machine
    identity = DatasetIdentity.of(splits)

    run_dir = RunDir(settings.out)
    run_dir.check_usable(overwrite=overwrite)
    if run_dir.exists() and not overwrite:
        _check_resumable(run_dir, settings, identity)
    lock = run_dir.lock().__enter__()
    try:
        return _prepare_locked(settings, run_dir, hub, space, weights, splits, identity, overwrite, reporter,
                               lock)
    except BaseException:
        _detach_log_file()
        lock.__exit__(None, None, None)
        raise


def _check_resumable(run_dir: RunDir, settings: TuneSettings, identity: DatasetIdentity) -> None:
    """A saved run resumes only with the same settings and on the same dataset (classes and files)."""
    saved = run_dir.read_run()
    differences = settings.differences(saved["settings"])
    if differences:
        raise RunDirError(
            f"{run_dir.root} holds a run with other settings ({'; '.join(differences)}). "
            "Resume it with the same settings (`qtt resume RUNDIR`), use --overwrite to start over, "
            "or choose another --out."
        )
    changes = identity.changes_since(saved.get("dataset_identity"), saved["classes"])
    if changes:
        raise RunDirError(
            f"the dataset {settings.dataset} changed since the run in {run_dir.root} started "
            f"({'; '.join(changes)}); its results and checkpoints belong to the old data and cannot be "
            "continued on the new. Start over with --overwrite, or choose another --out for the new data."
        )


def _prepare_locked(settings, run_dir, hub, space, weights, splits, identity, overwrite, reporter,
                    lock) -> PreparedRun:
    run_dir.prepare(overwrite=overwrite)
    _attach_log_file(run_dir.logs / "tune.log")

    side = cache_side(hub, settings.max_input_size)
    if cache_is_current(splits, run_dir.cache, side):
        reporter.message(f"reusing the decoded images in {run_dir.cache}")
    else:
        reporter.message(f"decoding {len(splits.train) + len(splits.val)} images once into {run_dir.cache} ...")
    try:
        cache = build_cache(splits, run_dir.cache, side)
    except OSError as exc:
        if is_disk_full(exc, run_dir.cache):
            raise DiskFullError(run_dir.cache) from exc
        raise
    features = meta_features(cache)
    info = {
        "qtt_version": __version__,
        "settings": settings.to_json(),
        "dataset_identity": identity.to_json(),
        "hub": hub.name,
        "models": list(hub.names),
        "classes": list(cache.classes),
        "meta_features": features.to_dict(),
        "cache_side": side,
        "splits": {
            "train": len(cache.train),
            "val": len(cache.val),
            "test": len(cache.test) if cache.test is not None else 0,
        },
        "skipped_files": len(cache.skipped),
    }
    if run_dir.exists():
        info["created"] = run_dir.read_run().get("created")
    info.setdefault("created", pd.Timestamp.now(tz="UTC").isoformat())
    run_dir.write_run(info)

    optimizer = make_optimizer(settings, space, hub=hub, meta_features=features.as_list(), reporter=reporter)
    if run_dir.optimizer.is_dir() and optimizer.load_state(run_dir.optimizer):
        reporter.message(f"{settings.optimizer}: resumed its fitted predictors from {run_dir.optimizer}")
    worker = FinetuneWorker(
        cache,
        weights,
        run_dir.checkpoints,
        max_epochs=settings.max_epochs,
        max_input_size=side,
        device=settings.device,
        seed=settings.seed,
        num_workers=settings.num_workers,
    )
    executor = make_executor(settings, run_dir.root, worker, side, on_event=log.info)
    return PreparedRun(settings, run_dir, hub, weights, cache, optimizer, worker, info, lock, executor)


def make_optimizer(
    settings: TuneSettings,
    space,
    *,
    hub: Hub | None = None,
    meta_features: list[float] | None = None,
    reporter: Reporter | None = None,
) -> Optimizer:
    """The optimizer of ``settings.optimizer``. Quick-Tune needs the hub (its models' meta-dataset names) and
    the dataset's meta-features, and says through ``reporter`` whether meta-learned priors are used."""
    if settings.optimizer == "random":
        return RandomSearch(space, max_epochs=settings.max_epochs, delta_t=settings.delta_t, seed=settings.seed)
    if settings.optimizer == "asha":
        return SuccessiveHalving(space, max_epochs=settings.max_epochs, delta_t=settings.delta_t, seed=settings.seed)
    if settings.optimizer == "quicktune":
        if hub is None or meta_features is None:
            raise ValueError("the quicktune optimizer needs the hub and the dataset's meta-features")
        return _quicktune(settings, space, hub, meta_features, reporter or SilentReporter())
    raise ValueError(f"unknown optimizer {settings.optimizer!r}")


def _quicktune(settings: TuneSettings, space, hub: Hub, meta_features: list[float], reporter: Reporter) -> Optimizer:
    from qtt_cli.metadataset.curveset import hub_model_columns
    from qtt_cli.optimizer.quicktune import QuickTune
    from qtt_cli.space.encoding import METHOD_COLUMNS
    from qtt_cli.surrogate import Surrogate
    from qtt_cli.surrogate.priors import describe_priors, load_priors

    columns = hub_model_columns(hub)
    if settings.priors is not None:  # given explicitly (`--priors DIR`): a directory without priors is an error
        Surrogate.load(settings.priors)
    # learns SPG and HVP from the run (zero embedding first)
    priors = load_priors([*columns, *METHOD_COLUMNS], settings.priors)
    reporter.message(f"quicktune: {describe_priors(columns, settings.priors)}")
    return QuickTune.for_space(
        space,
        meta_features=meta_features,
        model_names_map=hub.table_names,
        model_column_names=[spec.table_name or spec.name for spec in hub.models],
        max_epochs=settings.max_epochs,
        delta_t=settings.delta_t,
        priors=priors,
        seed=settings.seed,
        name=settings.out.name,
    )


def tune(settings: TuneSettings, *, overwrite: bool = False, reporter: Reporter | None = None) -> TuneSummary:
    """Run (or resume) a search: the Python API behind `qtt tune`."""
    reporter = reporter or SilentReporter()
    run = prepare(settings, overwrite=overwrite, reporter=reporter)
    try:
        return search(run, reporter)
    finally:
        run.close()


_STOP = threading.Event()


def request_stop() -> None:
    """Ask a running search to stop after the step in flight (signal handlers call it before raising
    KeyboardInterrupt). A backstop: an interrupt raised while a library holds the main thread in a
    callback can be swallowed there, and the run must still stop at the next step boundary."""
    _STOP.set()


def search(run: PreparedRun, reporter: Reporter, *, now: Callable[[], float] = time.monotonic) -> TuneSummary:
    """The budgeted loop. Ctrl-C ends it cleanly: only the step in flight is lost.

    ``now`` is the clock the budget is measured with (injected by tests). A full disk stops the run with
    DiskFullError after saving what can be saved; the rerun resumes.
    """
    settings, run_dir = run.settings, run.run_dir
    store = run_dir.store
    state = run_dir.read_state()
    recovery = reconcile_checkpoints(
        run_dir.checkpoints, store, num_classes=len(run.info["classes"]), max_epochs=settings.max_epochs,
        seed=settings.seed, next_step=recorded_steps(store.load()),
    )
    for line in recovery.messages():
        reporter.message(line)
    history = History(store)  # after the recovery's rows: from here on the tuner is the store's only writer
    state.steps = history.steps  # the store, not state.json, is the truth after a crash
    state.sessions += 1
    run_dir.write_state(state)
    reporter.prepared({**run.info, "used_s": state.used_s, "steps": state.steps})
    log.info("session %d: budget %.0fs, %.0fs used before", state.sessions, settings.budget_s, state.used_s)

    executor = run.executor
    if executor.capacity > 1:
        reporter.message(f"starting {executor.capacity} {executor.name} workers ...")
    executor.start()  # before the budget's clock: starting workers is preparation, like decoding the dataset
    clock = BudgetClock(state.used_s, now)
    used = clock.used
    reason = "budget"
    state_lock = threading.Lock()

    def save_used() -> None:  # the heartbeat: a crash mid-step is still charged (to the last second or so)
        with state_lock:
            state.used_s = used()
            run_dir.write_state(state)

    in_flight: dict[str, tuple[Suggestion, int]] = {}  # pipeline id -> (its step in flight, step number shown)

    def finish(finished: Finished) -> None:
        """Record a finished step: one write of the store, then state.json (kept equal to the store's step
        count at every step boundary, which the kill tests check), no re-reading or regrouping the store."""
        suggestion, step_number = in_flight.pop(finished.task.pipeline_id)
        result = finished.result
        _record(history, suggestion, result, history.steps)
        with state_lock:
            state.steps = history.steps
            state.used_s = used()
            run_dir.write_state(state)
        pipelines = _mark_stopped(run, history.states())
        _retain_checkpoints(run, pipelines, busy=set(in_flight))
        reporter.step_finished(_step_event(step_number, suggestion, result, state, pipelines, settings.budget_s))
        _log_step(suggestion, result)

    _STOP.clear()
    heartbeat = Heartbeat(save_used).start()
    try:
        exhausted = False
        while True:
            if _STOP.is_set():
                raise KeyboardInterrupt
            if used() >= settings.budget_s:
                reason = "budget"
                break
            if settings.max_steps is not None and state.steps >= settings.max_steps:
                reason = "max_steps"
                break
            # ask whenever a worker is free; the optimizer sees the steps in flight and never proposes one twice
            while (
                not exhausted
                and executor.free_slots > 0
                and used() < settings.budget_s
                and (settings.max_steps is None or state.steps + len(in_flight) < settings.max_steps)
            ):
                pipelines = _mark_stopped(run, history.states())
                pending = {pid: step for pid, (step, _) in in_flight.items()}
                suggestion = run.optimizer.ask(
                    with_in_flight(pipelines, pending), BudgetStatus(settings.budget_s, used())
                )
                if suggestion is None:
                    exhausted = True
                    break
                run.optimizer.save_state(run.run_dir.optimizer)
                step_number = state.steps + len(in_flight) + 1  # 1-based, as shown to the user
                reporter.step_started(
                    step_number, suggestion.pipeline_id, suggestion.config.model,
                    suggestion.start_epoch, suggestion.end_epoch,
                )
                in_flight[suggestion.pipeline_id] = (suggestion, step_number)
                executor.submit(StepTask(suggestion.pipeline_id, suggestion.config, suggestion.start_epoch,
                                         suggestion.end_epoch, settings.budget_s - used()))  # fmt: skip
            if not in_flight:
                if exhausted:
                    reason = "exhausted"
                    break
                continue
            for finished in executor.wait(timeout=max(0.01, settings.budget_s - used())):
                finish(finished)
                exhausted = False  # a finished step may open new candidates
        # at the budget each step in flight cuts itself inside its epoch (its deadline): record what it completed
        grace_end = time.monotonic() + CUT_GRACE_S
        while in_flight and time.monotonic() < grace_end:
            for finished in executor.wait(timeout=max(0.01, grace_end - time.monotonic())):
                finish(finished)
        if in_flight:
            log.warning("%d step(s) still running %.0f s after the budget: cancelled", len(in_flight), CUT_GRACE_S)
            executor.cancel()
    except KeyboardInterrupt:
        reason = "interrupted"
        executor.cancel()
        log.warning("interrupted by the user; the step(s) in flight were discarded")
    except DiskFullError as exc:
        log.error("%s", exc)
        with contextlib.suppress(OSError):
            state.used_s = min(used(), max(settings.budget_s, state.used_s))
            run_dir.write_state(state)
        raise
    finally:
        executor.close()
        heartbeat.stop()
        with contextlib.suppress(DiskFullError):
            state.used_s = min(used(), max(settings.budget_s, state.used_s))
            run_dir.write_state(state)

    summary = summarize(run_dir, reason=reason, state=state, budget_s=settings.budget_s)
    reporter.finished(summary)
    return summary


def summarize(run_dir: RunDir, *, reason: str, state: RunState, budget_s: float) -> TuneSummary:
    pipelines = pipeline_states(run_dir.store.load())
    best = _best(pipelines)
    return TuneSummary(
        run_dir=run_dir.root,
        reason=reason,
        steps=state.steps,
        pipelines=len(pipelines),
        failed_pipelines=sum(not p.alive for p in pipelines.values()),
        used_s=round(state.used_s, 3),
        budget_s=budget_s,
        best_pipeline=best.pipeline_id if best else None,
        best_model=best.config.model if best else None,
        best_val_top1=best.best if best else None,
        best_epoch=(best.curve.index(best.best) + 1) if best else None,
    )


def _record(history: History, suggestion: Suggestion, result: StepResult, step: int) -> None:
    rows = make_rows(
        suggestion.pipeline_id,
        suggestion.config,
        result.epochs,
        step=step,
        status=result.status,
        error=result.error,
        wall_time=pd.Timestamp.now(tz="UTC"),
        failed_epoch=suggestion.start_epoch + 1,
        overhead_s=result.overhead_s,
    )
    if result.status == "interrupted" and rows:
        rows[-1]["status"] = "interrupted"
    if rows and suggestion.predicted_val_top1 is not None and rows[-1]["epoch"] == suggestion.end_epoch:
        rows[-1].update(pred_val_top1=suggestion.predicted_val_top1, pred_val_std=suggestion.predicted_val_std,
                        pred_cost_s=suggestion.predicted_cost_s)  # for `qtt report`
    history.record(rows)


def _best(pipelines: Mapping[str, PipelineState]) -> PipelineState | None:
    scored = [p for p in pipelines.values() if p.best is not None]
    return max(scored, key=lambda p: p.best) if scored else None


def _retain_checkpoints(
    run: PreparedRun, pipelines: Mapping[str, PipelineState], busy: Set[str] = frozenset()
) -> None:
    """Keep the latest checkpoint of pipelines the optimizer may continue (at most ``max_checkpoints``, the
    best ones) and the best weights of the top ``keep_best`` pipelines; delete the rest so that long runs
    do not fill the disk. Pipelines in ``busy`` (a step in flight on a worker, which reads and writes their
    checkpoints) are left alone."""
    ranked = sorted((p for p in pipelines.values() if p.best is not None), key=lambda p: -p.best)
    top = {p.pipeline_id for p in ranked[: run.settings.keep_best]}
    may_continue = run.optimizer.may_continue(pipelines)
    continuable = [p.pipeline_id for p in ranked if p.pipeline_id in may_continue][: run.settings.max_checkpoints]
    for pid, pipeline in pipelines.items():
        if pid in busy:
            continue
        if pid in continuable:
            run.worker.prune_checkpoints(pid, keep_epoch=pipeline.epochs)
        elif pid in top:
            run.worker.prune_checkpoints(pid, keep_epoch=None)
        else:
            run.worker.remove_pipeline(pid, keep_best=False)


def _mark_stopped(run: PreparedRun, pipelines: Mapping[str, PipelineState]) -> dict[str, PipelineState]:
    """Pipelines whose checkpoint to continue from is gone (given up for ``--max-checkpoints``, or deleted by
    hand) get the status "stopped", so that no optimizer proposes to continue them."""
    marked = {}
    for pid, p in pipelines.items():
        gone = p.epochs > 0 and p.alive and not run.worker.checkpoint_path(pid, p.epochs).is_file()
        marked[pid] = replace(p, status="stopped") if gone else p
    return marked


def _step_event(
    step_number: int, suggestion: Suggestion, result: StepResult, state: RunState, pipelines, budget_s: float
) -> StepEvent:
    best = _best(pipelines)
    last = result.epochs[-1] if result.epochs else None
    return StepEvent(
        step=step_number,
        pipeline_id=suggestion.pipeline_id,
        model=suggestion.config.model,
        start_epoch=suggestion.start_epoch,
        end_epoch=last.epoch if last else suggestion.start_epoch,
        status=result.status,
        val_top1=last.val_top1 if last else None,
        cost_s=sum(e.cost_s for e in result.epochs),
        error=result.error,
        best_pipeline=best.pipeline_id if best else None,
        best_val_top1=best.best if best else None,
        used_s=state.used_s,
        budget_s=budget_s,
    )


def _log_step(suggestion: Suggestion, result: StepResult) -> None:
    for epoch in result.epochs:
        log.info(
            "%s %s epoch %d: val top-1 %.2f%%, val loss %.4f, %.1fs",
            suggestion.pipeline_id, suggestion.config.model, epoch.epoch, epoch.val_top1,
            epoch.val_loss, epoch.cost_s,
        )
    if result.status != "ok":
        log.warning("%s %s: %s %s", suggestion.pipeline_id, suggestion.config.model, result.status,
                    result.error or "")


class _QuietFileHandler(logging.FileHandler):
    """A log file that cannot be written (full disk, read-only mount) must not print logging's own traceback
    on stderr; the run reports the cause itself where it matters."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 -- logging's name
        pass


def _detach_log_file() -> None:
    for handler in [h for h in log.handlers if isinstance(h, logging.FileHandler)]:
        log.removeHandler(handler)
        handler.close()


def _attach_log_file(path: Path) -> None:
    """Log to the run's own file (configured when a run starts, never at import)."""
    resolved = str(path.resolve())
    if any(getattr(h, "baseFilename", None) == resolved for h in log.handlers):
        return
    for handler in [h for h in log.handlers if isinstance(h, logging.FileHandler)]:
        log.removeHandler(handler)
        handler.close()
    handler = _QuietFileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)


def resume(
    run_dir: Path, *, budget_s: float | None = None, max_steps: int | None = None,
    reporter: Reporter | None = None, **overrides: Any,
) -> TuneSummary:
    """Continue a run with its saved settings (optionally a new budget or step limit)."""
    rd = RunDir(Path(run_dir))
    saved = rd.read_run()["settings"]
    try:
        settings = TuneSettings.from_json(saved, budget_s=budget_s, max_steps=max_steps, out=str(run_dir),
                                          **overrides)
    except (TypeError, ValueError) as exc:
        raise RunDirError(f"the settings in {rd.run_file} are not valid ({exc}); rerun `qtt tune` with the "
                          "settings you want and --overwrite, or choose another --out") from None
    return tune(settings, reporter=reporter)
