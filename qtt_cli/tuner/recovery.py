"""Reconcile checkpoints with the results store after a crash, before a resumed search decides anything.

The worker writes a pipeline's checkpoint after each epoch and the tuner appends the step's rows after the
step; a kill between the two leaves a checkpoint newer than the store. The worker has by then replaced the
checkpoint the store points at, so ignoring the newer one would leave the pipeline with nothing to continue
from: it would be "stopped" for good, even when it is the run's best. The newer checkpoint carries the
metrics of every epoch it trained (its ``history``), so those epochs are recorded from it, as the step would
have recorded them. A checkpoint that does not belong to the store's pipeline (other configuration, seed,
class count or fidelity) is removed instead, with best weights newer than the store.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from qtt_cli.optimizer import PipelineState, pipeline_states
from qtt_cli.space.config import PipelineConfig
from qtt_cli.store import ResultsStore, make_rows
from qtt_cli.worker import checkpoint
from qtt_cli.worker.results import EpochResult

log = logging.getLogger("qtt")


@dataclass(frozen=True)
class Recovery:
    """What reconciling found: pipelines whose unrecorded epochs were recorded, and checkpoints discarded."""

    recorded: dict[str, list[int]]
    discarded: dict[str, list[int]]

    def messages(self) -> list[str]:
        lines = [f"{pid}: epoch(s) {', '.join(map(str, epochs))} trained before a crash were recorded from its "
                 "checkpoint" for pid, epochs in self.recorded.items()]
        lines += [f"{pid}: checkpoint(s) of epoch(s) {', '.join(map(str, epochs))} that do not match the results "
                  "store were discarded" for pid, epochs in self.discarded.items()]
        return lines


def reconcile_checkpoints(
    checkpoint_root: Path, store: ResultsStore, *, num_classes: int, max_epochs: int, seed: int, next_step: int,
) -> Recovery:
    """Record epochs that a checkpoint holds but the store does not (call with the run lock held)."""
    root = Path(checkpoint_root)
    recorded: dict[str, list[int]] = {}
    discarded: dict[str, list[int]] = {}
    if not root.is_dir():
        return Recovery(recorded, discarded)
    pipelines = pipeline_states(store.load())
    step = next_step
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        pid = folder.name
        on_disk = checkpoint.epochs_on_disk(root, pid)
        known = pipelines.get(pid)
        done = known.epochs if known is not None else 0
        newer = [e for e in on_disk if e > done]
        if not newer or (known is not None and not known.alive):
            continue
        latest = max(newer)
        rows = _rows_from_checkpoint(root, pid, latest, known, done, num_classes, max_epochs, seed, step)
        if rows is None:
            for e in newer:
                checkpoint.epoch_path(root, pid, e).unlink(missing_ok=True)
            _drop_newer_best(root, pid, done)
            if known is None:
                checkpoint.remove_pipeline(root, pid, keep_best=False)
            discarded[pid] = newer
            continue
        store.append(rows)
        for e in newer:
            if e != latest:
                checkpoint.epoch_path(root, pid, e).unlink(missing_ok=True)
        recorded[pid] = [int(r["epoch"]) for r in rows]
        step += 1
    result = Recovery(recorded, discarded)
    for line in result.messages():
        log.warning(line)
    return result


def _rows_from_checkpoint(
    root: Path, pid: str, epoch: int, known: PipelineState | None, done: int, num_classes: int, max_epochs: int,
    seed: int, step: int,
) -> list[dict[str, Any]] | None:
    try:
        state = checkpoint.load_epoch(checkpoint.epoch_path(root, pid, epoch))
        config = PipelineConfig.from_dict(state["config"])
    except Exception as exc:  # noqa: BLE001 -- an unreadable checkpoint is discarded, the run goes on
        log.warning("%s: unreadable checkpoint of epoch %d discarded (%s)", pid, epoch, exc)
        return None
    same_run = (state.get("num_classes"), state.get("max_epochs"), state.get("seed")) == (
        num_classes, max_epochs, seed)
    if not same_run or (known is not None and known.config != config):
        return None
    history: Mapping[int, dict] = {int(h["epoch"]): h for h in state.get("history", [])}
    wanted = range(done + 1, epoch + 1)
    if any(e not in history for e in wanted):
        return None
    if known is not None and any(
        abs(float(history[e + 1]["val_top1"]) - value) > 1e-6 for e, value in enumerate(known.curve) if e + 1 in history
    ):
        return None  # the checkpoint's past is not the store's: another pipeline under the same id
    epochs = [EpochResult(e, float(history[e]["val_top1"]), float(history[e]["val_loss"]),
                          float(history[e]["train_loss"]), float(history[e]["cost_s"])) for e in wanted]
    return make_rows(pid, config, epochs, step=step, status="ok", error=None, wall_time=pd.Timestamp.now(tz="UTC"))


def _drop_newer_best(root: Path, pid: str, done: int) -> None:
    """Best weights from a discarded epoch would be exported as a result the store never saw."""
    weights, info = checkpoint.best_paths(root, pid)
    try:
        best_epoch = int(json.loads(info.read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return
    if best_epoch > done:
        info.unlink(missing_ok=True)
        weights.unlink(missing_ok=True)
