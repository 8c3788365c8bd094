"""The layout of a run directory, and the small JSON files that make a run resumable.

::

    RUNDIR/
      run.json          settings of the run + dataset facts (classes, meta-features, cache side)
      state.json        budget used and steps taken so far (updated after every step)
      results.parquet   one row per pipeline per epoch (see ``results.py``)
      checkpoints/<pipeline>/epoch-NNNN.pt, best.safetensors, best.json
      cache/            decoded images (uint8 .npy) and skipped.csv (unreadable files)
      logs/tune.log     plain log of the run

Everything qtt writes for a run stays inside RUNDIR. JSON files are replaced atomically.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qtt_cli.store.results import ResultsStore

LOCK_FILE = ".lock"


def _has_content(folder: Path) -> bool:
    return any(child.name != LOCK_FILE for child in folder.iterdir())


class RunDirError(RuntimeError):
    """The run directory cannot be used as asked (busy, incompatible, not a qtt run)."""


def write_json_atomic(path: Path, payload: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


@dataclass
class RunState:
    """Progress of a run that survives restarts: budget seconds already used and steps taken."""

    used_s: float = 0.0
    steps: int = 0
    sessions: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass
class RunDir:
    root: Path

    @property
    def run_file(self) -> Path:
        return self.root / "run.json"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def optimizer(self) -> Path:
        """What the optimizer keeps beyond the results (Quick-Tune: its fitted surrogate)."""
        return self.root / "optimizer"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def store(self) -> ResultsStore:
        return ResultsStore(self.root)

    def exists(self) -> bool:
        return self.run_file.exists()

    def check_usable(self, *, overwrite: bool = False) -> None:
        """Refuse a directory that is neither empty nor a qtt run, so a typo in ``--out`` cannot
        write into (or, with ``--overwrite``, wipe) an unrelated folder."""
        if self.root.exists() and not self.root.is_dir():
            raise RunDirError(f"{self.root} is a file, not a directory. Choose another --out.")
        if self.root.exists() and not self.exists() and _has_content(self.root):
            action = "overwrite it" if overwrite else "use it"
            raise RunDirError(
                f"{self.root} is not empty and is not a qtt run directory; refusing to {action}. "
                "Choose another --out."
            )

    def prepare(self, *, overwrite: bool = False) -> None:
        """Create the directory tree; with ``overwrite`` first remove a previous run's files.

        Call with the run lock held: the lock file itself survives the overwrite.
        """
        self.check_usable(overwrite=overwrite)
        if overwrite and self.root.exists():
            for child in self.root.iterdir():
                if child.name == LOCK_FILE:
                    continue
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        for folder in (self.root, self.checkpoints, self.cache, self.logs):
            folder.mkdir(parents=True, exist_ok=True)

    def read_run(self) -> dict[str, Any]:
        if not self.exists():
            raise RunDirError(f"{self.root} is not a qtt run directory (no run.json). Run `qtt tune` first.")
        return json.loads(self.run_file.read_text())

    def write_run(self, payload: dict[str, Any]) -> None:
        write_json_atomic(self.run_file, payload)

    def read_state(self) -> RunState:
        if not self.state_file.exists():
            return RunState()
        return RunState(**json.loads(self.state_file.read_text()))

    def write_state(self, state: RunState) -> None:
        write_json_atomic(self.state_file, state.__dict__)

    def lock(self) -> RunLock:
        """Exclusive lock on the run; creates the directory if needed (call check_usable first)."""
        self.root.mkdir(parents=True, exist_ok=True)
        return RunLock(self.root / LOCK_FILE)


class RunLock:
    """An exclusive advisory lock, so two `qtt tune` processes never write the same run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh = None

    def __enter__(self) -> RunLock:
        self._fh = open(self.path, "w")  # noqa: SIM115 -- held for the lifetime of the lock
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            self._fh.close()
            raise RunDirError(
                f"another qtt process is using {self.path.parent}; wait for it or choose another --out"
            ) from exc
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._fh is not None
        fcntl.flock(self._fh, fcntl.LOCK_UN)
        self._fh.close()
