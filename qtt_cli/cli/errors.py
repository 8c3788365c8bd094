"""Exit codes and the one place where exceptions become messages.

Every command runs inside :func:`user_errors`, so bad input never shows a traceback: known errors print
one actionable line on stderr and exit with a documented code.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import traceback
from collections.abc import Iterator

import typer

EXIT_OK = 0
EXIT_INTERNAL = 1  # a bug in qtt: please report it (QTT_DEBUG=1 shows the traceback)
EXIT_BAD_INPUT = 2  # dataset, search space, hub, weights, run directory or option problems
EXIT_NO_RESULT = 3  # the search ran but no pipeline produced a validation score
EXIT_INTERRUPTED = 130  # Ctrl-C; everything finished before it is saved, rerun the command to resume


def _user_error_types() -> tuple[type[BaseException], ...]:
    from qtt_cli.data import DatasetError
    from qtt_cli.execution import ExecutorError
    from qtt_cli.hub import HubError, WeightsUnavailableError
    from qtt_cli.space import SpaceFileError
    from qtt_cli.space.config import ConfigError
    from qtt_cli.store import RunDirError
    from qtt_cli.tuner import BudgetError

    return (
        DatasetError, HubError, WeightsUnavailableError, SpaceFileError, ConfigError, RunDirError,
        BudgetError, ExecutorError, FileNotFoundError, ValueError,
    )


def fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    try:
        yield
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except _user_error_types() as exc:
        if os.environ.get("QTT_DEBUG"):
            traceback.print_exc()
        fail(str(exc))
    except OSError as exc:
        message = _file_system_message(exc)
        if message is None:
            _internal(exc)
        if os.environ.get("QTT_DEBUG"):
            traceback.print_exc()
        fail(message)
    except Exception as exc:  # noqa: BLE001 -- the last line of defence before a traceback
        _internal(exc)


def _internal(exc: BaseException) -> None:
    if os.environ.get("QTT_DEBUG"):
        traceback.print_exc()
    else:
        print(
            f"internal error: {type(exc).__name__}: {exc}\n"
            "This is a bug in qtt. Rerun with QTT_DEBUG=1 for the traceback and report it.",
            file=sys.stderr,
        )
    raise typer.Exit(EXIT_INTERNAL) from None


def _file_system_message(exc: OSError) -> str | None:
    """A message for what the user's file system refused (not a bug in qtt), or None."""
    where = f" {exc.filename}" if exc.filename else ""
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return (f"cannot write{where}: {exc.strerror or 'permission denied'}. Make the run or output directory "
                "writable, or choose another one (--out).")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"no space left on the device while writing{where}. Free some space and rerun the same command; "
                "what was recorded before is intact.")
    return None
