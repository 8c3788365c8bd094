"""The tuning loop and its settings: prepare a run, then ask -> train -> record within the budget.

``tune``/``resume``/``prepare``/``search`` are imported lazily: they pull in torch and timm, which the
CLI should not pay for in ``qtt --help``.
"""

from qtt_cli.tuner.budget import BudgetError, format_duration, parse_budget
from qtt_cli.tuner.events import Reporter, SilentReporter, StepEvent, TuneSummary
from qtt_cli.tuner.settings import TuneSettings

_LAZY = ("prepare", "resume", "search", "tune")


def __getattr__(name: str):
    if name in _LAZY:
        from qtt_cli.tuner import tuner

        return getattr(tuner, name)
    raise AttributeError(f"module 'qtt_cli.tuner' has no attribute {name!r}")


__all__ = [
    "BudgetError",
    "Reporter",
    "SilentReporter",
    "StepEvent",
    "TuneSettings",
    "TuneSummary",
    "format_duration",
    "parse_budget",
    *_LAZY,
]
