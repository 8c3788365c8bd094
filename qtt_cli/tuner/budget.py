"""Human-readable time budgets ("4h", "30m", "90s", "1h30m", "2.5h", "600")."""

from __future__ import annotations

import contextlib
import math
import re
import threading
import time
from collections.abc import Callable

_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)([dhms])")


MAX_BUDGET_S = 366 * 86400.0


class BudgetError(ValueError):
    pass


def parse_budget(text: str) -> float:
    """Seconds in ``text``; a bare number means seconds. Raises BudgetError with the accepted forms."""
    cleaned = text.strip().lower().replace(" ", "")
    try:
        seconds = float(cleaned)
    except ValueError:
        parts = _PART.findall(cleaned)
        if not parts or "".join(n + u for n, u in parts) != cleaned:
            raise BudgetError(
                f"cannot read budget {text!r}; use forms like 4h, 30m, 90s, 1h30m or a number of seconds"
            ) from None
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if not math.isfinite(seconds):
        raise BudgetError(f"budget must be a finite time, got {text!r}; use forms like 4h, 30m, 90s or seconds")
    if seconds <= 0:
        raise BudgetError(f"budget must be positive, got {text!r}")
    if seconds > MAX_BUDGET_S:
        raise BudgetError(f"budget {text!r} is more than a year; use at most {MAX_BUDGET_S / 86400:.0f}d")
    return seconds


def format_duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, sec = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{sec:02d}s"


class BudgetClock:
    """Seconds of budget used: what earlier sessions of the run used plus this session's elapsed time.

    ``now`` is injectable so that tests drive the budget instead of depending on the machine's speed. The
    worker's deadline is a ``time.monotonic()`` value; :meth:`deadline` converts the budget left into it.
    """

    def __init__(self, used_before: float, now: Callable[[], float] = time.monotonic) -> None:
        self.used_before = float(used_before)
        self._now = now
        self._start = now()

    def used(self) -> float:
        return self.used_before + (self._now() - self._start)

    def deadline(self, budget_s: float) -> float:
        return time.monotonic() + (budget_s - self.used())


class Heartbeat:
    """Persists the budget used every ``interval_s`` seconds from a background thread.

    Without it, a run killed with -9 (or by a crash, or the OOM killer) in the middle of a step would never be
    charged for that step: rerunning it resumes with the time it had at the last step boundary, and every
    crash would stretch the budget. ``save`` does the writing (under the caller's lock); its errors are the
    main loop's business, which meets the same disk at its next write.
    """

    def __init__(self, save: Callable[[], None], interval_s: float = 1.0) -> None:
        self._save = save
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="qtt-heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def __enter__(self) -> Heartbeat:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            with contextlib.suppress(Exception):
                self._save()
