"""Random search with freeze-thaw steps: the baseline every smarter optimizer must beat.

A sampled pipeline is trained Δt epochs at a time until it reaches max epochs (or fails), then a new
one is sampled. This is full-fidelity random search cut into steps, so that a budget can end between
steps and a resumed run continues the pipeline it was training.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from ConfigSpace import ConfigurationSpace

from qtt_cli.optimizer.base import Optimizer, PipelineState, Suggestion, next_pipeline_id
from qtt_cli.space import to_pipeline_config


class RandomSearch(Optimizer):
    def __init__(self, space: ConfigurationSpace, *, max_epochs: int, delta_t: int, seed: int = 0) -> None:
        super().__init__(max_epochs=max_epochs, delta_t=delta_t)
        self.space = space
        self.seed = seed

    def ask(self, pipelines: Mapping[str, PipelineState]) -> Suggestion | None:
        unfinished = [p for p in pipelines.values() if p.alive and p.epochs < self.max_epochs]
        if unfinished:
            return self.continue_step(unfinished[0])
        pid = next_pipeline_id(pipelines)
        # One seed per new pipeline, derived from the run seed and the pipeline's index: a resumed run
        # samples exactly the configurations the uninterrupted run would have sampled.
        self.space.seed(_derive_seed(self.seed, pid))
        config = to_pipeline_config(self.space.sample_configuration())
        return Suggestion(pid, config, 0, min(self.delta_t, self.max_epochs))


def _derive_seed(seed: int, pipeline_id: str) -> int:
    digest = hashlib.sha256(f"{seed}:{pipeline_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little")
