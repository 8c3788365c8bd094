"""Random search with freeze-thaw steps: the baseline every smarter optimizer must beat.

A sampled pipeline is trained Δt epochs at a time until it reaches max epochs (or fails), then a new
one is sampled. This is full-fidelity random search cut into steps, so that a budget can end between
steps and a resumed run continues the pipeline it was training. In replay, the new pipelines are the
dataset's recorded configurations in a seeded random order.
"""

from __future__ import annotations

from collections.abc import Mapping

from qtt_cli.optimizer.base import BudgetStatus, Optimizer, PipelineState, Suggestion
from qtt_cli.optimizer.candidates import ConfigSource, RecordedConfigs, draw_new


class RandomSearch(Optimizer):
    def __init__(self, source: ConfigSource, *, max_epochs: int, delta_t: int, seed: int = 0) -> None:
        limits = source.limits if isinstance(source, RecordedConfigs) else None
        super().__init__(max_epochs=max_epochs, delta_t=delta_t, epoch_limits=limits)
        self.source = source
        self.seed = seed

    def ask(self, pipelines: Mapping[str, PipelineState], budget: BudgetStatus | None = None) -> Suggestion | None:
        unfinished = [p for p in pipelines.values() if self.can_continue(p)]
        if unfinished:
            return self.continue_step(unfinished[0])
        drawn = draw_new(self.source, pipelines, self.seed)
        if drawn is None:
            return None
        pid, config = drawn
        return Suggestion(pid, config, 0, min(self.delta_t, self.limit(pid)))
