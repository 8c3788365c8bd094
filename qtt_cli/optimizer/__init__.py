"""Optimizers decide which pipeline to train next and for how long (freeze-thaw)."""

from qtt_cli.optimizer.base import BudgetStatus, Optimizer, PipelineState, Suggestion, pipeline_state, pipeline_states
from qtt_cli.optimizer.candidates import RecordedConfigs
from qtt_cli.optimizer.quicktune import AcquisitionSettings, FitSchedule, QuickTune
from qtt_cli.optimizer.random_search import RandomSearch
from qtt_cli.optimizer.successive_halving import SuccessiveHalving

__all__ = [
    "AcquisitionSettings",
    "BudgetStatus",
    "FitSchedule",
    "Optimizer",
    "PipelineState",
    "QuickTune",
    "RandomSearch",
    "RecordedConfigs",
    "SuccessiveHalving",
    "Suggestion",
    "pipeline_state",
    "pipeline_states",
]
