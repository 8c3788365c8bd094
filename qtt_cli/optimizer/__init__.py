"""Optimizers decide which pipeline to train next and for how long (freeze-thaw)."""

from qtt_cli.optimizer.base import Optimizer, PipelineState, Suggestion, pipeline_states
from qtt_cli.optimizer.random_search import RandomSearch

__all__ = ["Optimizer", "PipelineState", "RandomSearch", "Suggestion", "pipeline_states"]
