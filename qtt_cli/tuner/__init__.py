"""The tuning loop and its settings: prepare a run, then ask -> train -> record within the budget."""

from qtt_cli.tuner.budget import BudgetError, format_duration, parse_budget
from qtt_cli.tuner.events import Reporter, SilentReporter, StepEvent, TuneSummary
from qtt_cli.tuner.settings import TuneSettings
from qtt_cli.tuner.tuner import prepare, resume, search, tune

__all__ = [
    "BudgetError",
    "Reporter",
    "SilentReporter",
    "StepEvent",
    "TuneSettings",
    "TuneSummary",
    "format_duration",
    "parse_budget",
    "prepare",
    "resume",
    "search",
    "tune",
]
