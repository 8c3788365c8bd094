"""A pipeline's training state kept in memory between two steps of it on the same worker.

A continued step used to rebuild the model, optimizer, scheduler and loaders and load them from the epoch
checkpoint it had just written: a model build, a ``torch.load`` and a ``load_state_dict`` per step that a
long-lived worker (a local worker process, a Ray actor, the tuner's own in-process worker) can skip when the
same pipeline's next step lands on it. The checkpoint is still written after every epoch, synchronously,
before the step reports: the tuner records an epoch only once its checkpoint is on disk, so a crash loses at
most the step in flight, exactly as before; the in-memory copy is only a faster way to read it.

When the copy may be used: it is the state right after the checkpoint of epoch ``e`` was saved (a step that
ended early, failed or ran out of memory keeps nothing), the next step starts at ``e`` with the same
configuration, and that checkpoint file is still the one this worker wrote (same inode, size and
modification time). Any other case (the pipeline moved to another worker and came back later, its
checkpoint was pruned or replaced, another pipeline ran in between) restores from disk as before. The
result is the same either way: every epoch reseeds all generators from (seed, pipeline, epoch), and the
checkpoint holds the exact tensors that stay in memory (``tests/test_warm_steps.py`` compares them).

Memory: at most one run is kept, and it is released before any other pipeline's run is built, so a worker
never holds two pipelines at once: its peak memory is that of a worker without the cache.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["WarmRun"]


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


@dataclass
class _Kept:
    pipeline_id: str
    config: Any
    epoch: int
    run: Any
    checkpoint: Path
    stamp: tuple[int, int, int]


class WarmRun:
    """Holds the run of the last step a worker completed (or nothing)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._kept: _Kept | None = None
        self.hits = 0  # steps that continued from memory (the benchmark and tests read it)

    def keep(self, pipeline_id: str, config: Any, epoch: int, run: Any, checkpoint: Path) -> None:
        """Keep ``run``, the state saved in ``checkpoint`` (epoch ``epoch``) a moment ago."""
        self._kept = None
        stamp = _stamp(checkpoint)
        if self.enabled and stamp is not None:
            self._kept = _Kept(pipeline_id, config, epoch, run, Path(checkpoint), stamp)

    def take(self, pipeline_id: str, config: Any, epoch: int, checkpoint: Path) -> Any | None:
        """The kept run if it is this pipeline at ``epoch`` and its checkpoint is unchanged; None otherwise.
        Either way nothing is kept afterwards: the caller trains the run it gets (or builds one)."""
        kept, self._kept = self._kept, None
        if kept is None or kept.pipeline_id != pipeline_id or kept.epoch != epoch or kept.config != config:
            return None
        if Path(checkpoint) != kept.checkpoint or _stamp(checkpoint) != kept.stamp:
            return None
        self.hits += 1
        return kept.run

    def forget(self, pipeline_id: str | None = None) -> None:
        """Drop the kept run (of ``pipeline_id`` only, when given)."""
        if self._kept is not None and (pipeline_id is None or self._kept.pipeline_id == pipeline_id):
            self._kept = None
