"""The layout of a run directory, and the small JSON files that make a run resumable.

::

    RUNDIR/
      .qtt-run          marker: this folder is a qtt run (format and version); written first
      run.json          settings of the run + dataset facts (classes, fingerprint, meta-features, cache side)
      state.json        budget used and steps taken so far (updated after every step and by a heartbeat)
      results.parquet   one row per pipeline per epoch (see ``results.py``)
      checkpoints/<pipeline>/epoch-NNNN.pt, best.safetensors, best.json
      cache/            decoded images (uint8 .npy) and skipped.csv (unreadable files)
      logs/tune.log     plain log of the run

Everything qtt writes for a run stays inside RUNDIR. JSON files are replaced atomically.

Only a folder that carries qtt's marker is ever deleted (``--overwrite``) or written into when it is not
empty: a ``run.json`` alone proves nothing (any tool may write one). The marker is written right after the
lock is taken, before the dataset is decoded, so a first run killed during its preparation leaves a folder
that qtt recognises as its own half-made run and completes on the next attempt.
"""

from __future__ import annotations

import fcntl
import json
import shutil
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from qtt_cli.store.files import (
    RunDirError,
    read_json_file,
    remove_stale_temporaries,
    write_json_atomic,
)
from qtt_cli.store.results import ResultsStore

LOCK_FILE = ".lock"
MARKER_FILE = ".qtt-run"
MARKER_FORMAT = "qtt-run"
MARKER_VERSION = 1

__all__ = ["RunDir", "RunDirError", "RunLock", "RunState", "write_json_atomic"]


def _has_content(folder: Path) -> bool:
    return any(child.name != LOCK_FILE for child in folder.iterdir())


@dataclass
class RunState:
    """Progress of a run that survives restarts: budget seconds already used and steps taken."""

    used_s: float = 0.0
    steps: int = 0
    sessions: int = 0
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: Any, path: Path, remedy: str) -> RunState:
        """Check keys and types, so that a hand-edited file is reported instead of crashing the run."""
        expected = {"used_s": (int, float), "steps": (int,), "sessions": (int,), "notes": (list,)}
        if not isinstance(data, dict):
            raise RunDirError(f"{path} should hold a JSON object, found {type(data).__name__}. {remedy}")
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        wrong = [key for key, kinds in expected.items()
                 if key in data and (isinstance(data[key], bool) or not isinstance(data[key], kinds))]
        negative = [key for key in ("used_s", "steps", "sessions")
                    if key in data and key not in wrong and not data[key] >= 0]
        if unknown or wrong or negative:
            problems = ([f"unknown key(s) {', '.join(unknown)}"] if unknown else []) + [
                f"{key} has the wrong type" for key in wrong] + [f"{key} is negative" for key in negative]
            raise RunDirError(f"{path} is not a valid qtt state file ({'; '.join(problems)}). {remedy}")
        return cls(**data)


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
    def marker_file(self) -> Path:
        return self.root / MARKER_FILE

    @property
    def store(self) -> ResultsStore:
        return ResultsStore(self.root)

    def _marker(self) -> dict[str, Any] | None:
        """qtt's marker, or None when the folder has no readable one."""
        try:
            marker = json.loads(self.marker_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        return marker if isinstance(marker, dict) and marker.get("format") == MARKER_FORMAT else None

    def is_marked(self) -> bool:
        """Whether qtt's own marker (format and version) is in the folder."""
        return self._marker() is not None

    def _check_format_version(self) -> None:
        """A run written by a newer qtt may keep its state in ways this one would misread: refuse it rather
        than resume, rank or export it wrongly."""
        marker = self._marker() or {}
        version = marker.get("format_version")
        if isinstance(version, int) and not isinstance(version, bool) and version > MARKER_VERSION:
            from qtt_cli import __version__

            raise RunDirError(
                f"{self.root} was made by a newer qtt ({marker.get('qtt_version', '?')}, run format {version}; "
                f"this qtt {__version__} reads format {MARKER_VERSION}). Upgrade qtt "
                "(`pip install -U qtt-cli`) to use it, or choose another --out."
            )

    def _is_legacy_run(self) -> bool:
        """A run made before the marker existed: a run.json with qtt's own keys and types."""
        try:
            info = json.loads(self.run_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return False
        return (
            isinstance(info, dict) and isinstance(info.get("qtt_version"), str)
            and isinstance(info.get("settings"), dict) and isinstance(info.get("classes"), list)
            and (self.root / "cache").is_dir()
        )

    def is_qtt_run(self) -> bool:
        """The folder is qtt's: marked, or a complete run of a qtt version from before the marker."""
        return self.is_marked() or self._is_legacy_run()

    def exists(self) -> bool:
        """A run whose preparation finished (it has run.json), as opposed to a new or half-made one."""
        return self.run_file.exists() and self.is_qtt_run()

    def check_usable(self, *, overwrite: bool = False) -> None:
        """Refuse a directory that is neither empty nor qtt's own run, whatever the flags, so a typo in
        ``--out`` cannot write into (or, with ``--overwrite``, wipe) an unrelated folder."""
        if self.root.exists() and not self.root.is_dir():
            raise RunDirError(f"{self.root} is a file, not a directory. Choose another --out.")
        if self.root.exists() and _has_content(self.root) and not self.is_qtt_run():
            if RunLock.held_elsewhere(self.root / LOCK_FILE):  # a run starting right now, not yet marked
                raise RunLock.busy_error(self.root)
            action = "overwrite it" if overwrite else "use it"
            found = (
                "holds a run.json that qtt did not write (no qtt run marker)" if self.run_file.exists()
                else "is not empty and is not a qtt run directory"
            )
            raise RunDirError(f"{self.root} {found}; refusing to {action}. Choose another --out.")
        if overwrite and self.root.exists() and _has_content(self.root) and not self.is_marked():
            # A run from before the marker can be resumed, but only the marker proves that everything in the
            # folder is qtt's: a user's files beside an old run.json must never be deleted.
            raise RunDirError(
                f"{self.root} has no qtt run marker (a run made before qtt marked its folders); refusing to "
                "delete it. Resume it without --overwrite, remove it yourself, or choose another --out."
            )

    def mark(self) -> None:
        """Write qtt's marker into an empty (or already qtt's) folder; call with the run lock held."""
        from qtt_cli import __version__

        if not self.is_marked():
            write_json_atomic(self.marker_file, {
                "format": MARKER_FORMAT, "format_version": MARKER_VERSION, "qtt_version": __version__,
            })

    def prepare(self, *, overwrite: bool = False) -> None:
        """Mark the folder as a run and create its tree; with ``overwrite`` first remove the previous run.

        Call with the run lock held: the lock file itself survives the overwrite. Temporary files of a
        writer that was killed are removed.
        """
        self.check_usable(overwrite=overwrite)
        if overwrite and self.root.exists() and _has_content(self.root):
            for child in self.root.iterdir():
                if child.name == LOCK_FILE:
                    continue
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        self.root.mkdir(parents=True, exist_ok=True)
        self.mark()
        for folder in (self.checkpoints, self.cache, self.logs):
            folder.mkdir(parents=True, exist_ok=True)
        # a killed writer's files (a worker killed mid-checkpoint leaves one of a checkpoint's size per kill)
        pipelines = [d for d in self.checkpoints.iterdir() if d.is_dir() and not d.is_symlink()]
        for folder in (self.root, self.cache, *pipelines):
            remove_stale_temporaries(folder)

    def read_run(self) -> dict[str, Any]:
        """run.json, checked: a missing, corrupt or foreign file is a RunDirError that says what to do."""
        if not self.run_file.exists():
            if self.is_marked():
                raise RunDirError(
                    f"{self.root} is a qtt run whose preparation never finished (no run.json); rerun the "
                    "`qtt tune` command that created it to complete it."
                )
            raise RunDirError(f"{self.root} is not a qtt run directory (no run.json). Run `qtt tune` first.")
        remedy = ("It was not written by a complete `qtt tune`; rerun `qtt tune DATASET --out "
                  f"{self.root} --overwrite` to start over, or choose another directory.")
        info = read_json_file(self.run_file, "the run's settings", remedy)
        self._check_format_version()
        if not self.is_qtt_run():
            raise RunDirError(f"{self.run_file} was not written by qtt (no qtt run marker in {self.root}). "
                              "Choose a run directory made by `qtt tune`.")
        missing = [key for key, kind in (("settings", dict), ("classes", list))
                   if not isinstance(info, dict) or not isinstance(info.get(key), kind)]
        if missing:
            raise RunDirError(f"{self.run_file} lacks {' and '.join(repr(m) for m in missing)} or has the wrong "
                              f"type there. {remedy}")
        return info

    def write_run(self, payload: dict[str, Any]) -> None:
        write_json_atomic(self.run_file, payload)

    def read_state(self) -> RunState:
        """state.json (a fresh state when there is none); a corrupt file is a RunDirError naming it."""
        if not self.state_file.exists():
            return RunState()
        remedy = ("Delete it to continue the run (its steps are counted again from the results store; the "
                  "budget already used is then counted from zero), or restore it from a backup.")
        data = read_json_file(self.state_file, "the run's progress", remedy)
        return RunState.from_json(data, self.state_file, remedy)

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
            raise self.busy_error(self.path.parent) from exc
        return self

    @staticmethod
    def busy_error(root: Path) -> RunDirError:
        return RunDirError(f"another qtt process is using {root}; wait for it or choose another --out")

    @staticmethod
    def held_elsewhere(path: Path) -> bool:
        """Whether another process holds the lock at ``path`` (never creates the file)."""
        try:
            fh = open(path)  # noqa: SIM115
        except OSError:
            return False
        with fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(fh, fcntl.LOCK_UN)
            return False

    def __exit__(self, *exc: object) -> None:
        assert self._fh is not None
        fcntl.flock(self._fh, fcntl.LOCK_UN)
        self._fh.close()
