"""Asynchronous successive halving (ASHA, Li et al. 2018) with Δt-epoch rungs.

Rungs sit at ``Δt, Δt·η, Δt·η², …`` epochs and at ``max_epochs``. A pipeline that reached a rung is promoted
(trained on to the next rung, Δt epochs per step) when it is among the best ``⌊n/η⌋`` of the ``n`` pipelines
that reached that rung; when nothing can be promoted, a fresh pipeline is started. Unlike synchronous
successive halving, nobody waits for a full bracket, which suits one step at a time.

Like every optimizer here it keeps no private history: which pipelines were promoted is read off their
epochs (a pipeline past a rung was promoted from it), so resuming is reloading the store.
"""

from __future__ import annotations

from collections.abc import Mapping

from qtt_cli.optimizer.base import BudgetStatus, Optimizer, PipelineState, Suggestion
from qtt_cli.optimizer.candidates import ConfigSource, RecordedConfigs, draw_new

__all__ = ["SuccessiveHalving", "rungs"]


def rungs(delta_t: int, max_epochs: int, eta: int) -> list[int]:
    """Rung epochs: ``Δt·η^k`` below ``max_epochs``, then ``max_epochs``."""
    ladder, epoch = [], delta_t
    while epoch < max_epochs:
        ladder.append(epoch)
        epoch *= eta
    return [*ladder, max_epochs]


class SuccessiveHalving(Optimizer):
    def __init__(
        self, source: ConfigSource, *, max_epochs: int, delta_t: int, eta: int = 3, seed: int = 0
    ) -> None:
        limits = source.limits if isinstance(source, RecordedConfigs) else None
        super().__init__(max_epochs=max_epochs, delta_t=delta_t, epoch_limits=limits)
        if eta < 2:
            raise ValueError("the reduction factor eta must be >= 2")
        self.source = source
        self.eta = eta
        self.seed = seed
        self.rungs = rungs(delta_t, max_epochs, eta)

    def ask(self, pipelines: Mapping[str, PipelineState], budget: BudgetStatus | None = None) -> Suggestion | None:
        open_ = [p for p in pipelines.values() if self.can_continue(p)]
        # 1. finish promotions in flight (a pipeline between two rungs, or started but without an epoch yet)
        for p in open_:
            if p.epochs not in self.rungs:
                return self._towards_next_rung(p)
        # 2. promote the best promotable pipeline of the highest rung
        for rung in reversed(self.rungs[:-1]):
            promotable = self.promotable(pipelines, rung)
            if promotable:
                return self._towards_next_rung(promotable[0])
        # 3. start a fresh pipeline
        drawn = draw_new(self.source, pipelines, self.seed)
        if drawn is None:
            return None
        pid, config = drawn
        return Suggestion(pid, config, 0, min(self.rungs[0], self.limit(pid)))

    def promotable(self, pipelines: Mapping[str, PipelineState], rung: int) -> list[PipelineState]:
        """Pipelines waiting at ``rung`` that are in the top ``⌊n/η⌋`` of the ``n`` that reached it, best first."""
        reached = sorted((p for p in pipelines.values() if p.epochs >= rung), key=lambda p: -p.curve[rung - 1])
        top = reached[: len(reached) // self.eta]
        return [p for p in top if p.epochs == rung and self.can_continue(p)]

    def _towards_next_rung(self, pipeline: PipelineState) -> Suggestion:
        next_rung = next(r for r in self.rungs if r > pipeline.epochs)
        end = min(pipeline.epochs + self.delta_t, next_rung, self.limit(pipeline.pipeline_id))
        return Suggestion(pipeline.pipeline_id, pipeline.config, pipeline.epochs, end)
