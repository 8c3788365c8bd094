"""Safe file writes for everything qtt keeps on disk, and the one place that recognises a full disk.

Every file of a run is written to a unique temporary name in its own folder and moved into place with
``os.replace``: a crash, a kill or a full disk leaves the previous file (or none), never a torn one, and the
temporary file is removed when the write fails. A full disk is not a property of a pipeline: a step whose
checkpoint cannot be written must stop the run with a clear message instead of being recorded as a failed
pipeline while the budget burns, so writes translate it into :class:`DiskFullError`.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Below this much free space a write failure without an errno (torch's C++ writer says only "file write
# failed") is taken for a full disk.
_NEARLY_FULL_BYTES = 16 * 1024 * 1024
_DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


class RunDirError(RuntimeError):
    """The run directory cannot be used as asked (busy, incompatible, not a qtt run, unreadable)."""


class DiskFullError(RunDirError):
    """A write failed because the file system is full. Everything written before is intact."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        super().__init__(
            f"no space left on the device while writing {self.path}; nothing recorded before was lost. "
            "Free some space (or move the run with --out) and rerun the same command to resume."
        )


def free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def is_disk_full(exc: BaseException, folder: Path) -> bool:
    """Whether ``exc``, raised while writing into ``folder``, means the file system is full."""
    if isinstance(exc, DiskFullError):
        return True
    if isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS:
        return True
    if isinstance(exc, (OSError, RuntimeError)):  # torch.save: "[enforce fail ...] file write failed"
        free = free_bytes(folder)
        return free is not None and free < _NEARLY_FULL_BYTES
    return False


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_name)`` and move the result to ``path``; on any failure remove the temporary file.

    Raises:
        DiskFullError: when the write failed for lack of space.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if is_disk_full(exc, path.parent):
            raise DiskFullError(path) from exc
        raise


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write ``payload`` as JSON through a temporary file (flushed to disk before the rename)."""
    text = json.dumps(payload, indent=2, sort_keys=True, default=str)

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())

    atomic_write(Path(path), write)


def read_json_file(path: Path, what: str, remedy: str) -> Any:
    """The JSON in ``path``, or a RunDirError that names the file, says what is wrong and what to do."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunDirError(f"{path} is missing ({what}). {remedy}") from None
    except PermissionError:
        raise RunDirError(f"cannot read {path} ({what}): permission denied. {remedy}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunDirError(f"{path} is not valid JSON ({what}: {exc}). {remedy}") from None
    except IsADirectoryError:
        raise RunDirError(f"{path} is a directory, expected {what}. {remedy}") from None


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete temporary files that a killed writer left in ``folder`` (call with the run lock held)."""
    removed = []
    if not Path(folder).is_dir():
        return removed
    for child in Path(folder).iterdir():
        stale = child.name.endswith(".tmp") or (child.name.startswith(".") and ".tmp" in child.name)
        if stale and child.is_file():
            child.unlink(missing_ok=True)
            removed.append(child)
    return removed
