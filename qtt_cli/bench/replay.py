"""Replaying recorded learning curves instead of training: the objective of `qtt bench`.

A step ``(config, start → end epochs)`` returns the accuracies the meta-dataset recorded for those epochs
and charges exactly their recorded seconds. The budget is in recorded seconds and is enforced per epoch,
as ``qtt tune`` does: an epoch that would end past the budget is not observed and the replay ends there.
A configuration can be continued only up to the length of its recorded curve.

:class:`Replay` is also the run's store: ``pipelines()`` gives the history in the shape every optimizer's
``ask`` reads, so optimizers are replayed through exactly the interface ``qtt tune`` uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qtt_cli.metadataset import CurveSet
from qtt_cli.optimizer import BudgetStatus, Optimizer, PipelineState, RecordedConfigs, Suggestion

__all__ = ["Replay", "ReplayError", "Trace", "recorded_configs", "replay"]


class ReplayError(ValueError):
    """A step the recording cannot answer (unknown config, not a continuation, past the recorded curve)."""


@dataclass(frozen=True)
class Trace:
    """Every observed epoch of one replayed search, in order."""

    used_s: np.ndarray  # recorded seconds spent when the epoch was observed (cumulative)
    values: np.ndarray  # the epoch's validation accuracy (percent)
    steps: int  # optimizer steps taken

    def best_by(self, budgets_s: np.ndarray) -> np.ndarray:
        """The best accuracy observed within each budget (NaN before the first observation)."""
        incumbent = np.maximum.accumulate(self.values) if len(self.values) else self.values
        seen = np.searchsorted(self.used_s, np.asarray(budgets_s, dtype=np.float64), side="right")
        return np.array([incumbent[k - 1] if k > 0 else np.nan for k in seen])


def recorded_configs(curveset: CurveSet) -> RecordedConfigs:
    """The configurations of a recorded dataset, each trainable up to its recorded length."""
    return RecordedConfigs(curveset.config_ids, tuple(int(n) for n in curveset.lengths))


class Replay:
    """The recorded curves of one dataset, stepped through within a budget of recorded seconds."""

    def __init__(self, curveset: CurveSet, budget_s: float) -> None:
        if budget_s <= 0:
            raise ValueError("the replay budget must be positive")
        self.curveset = curveset
        self.budget_s = float(budget_s)
        self.used_s = 0.0
        self.exhausted = False
        self._rows = {cid: i for i, cid in enumerate(curveset.config_ids)}
        self._states: dict[str, PipelineState] = {}
        self._used: list[float] = []
        self._values: list[float] = []
        self.steps = 0

    def pipelines(self) -> dict[str, PipelineState]:
        """The history so far, one state per started configuration (what ``ask`` reads)."""
        return dict(self._states)

    def step(self, suggestion: Suggestion) -> list[float]:
        """Observe the suggested epochs; returns the accuracies observed (fewer if the budget ran out)."""
        cid, start, end = suggestion.pipeline_id, suggestion.start_epoch, suggestion.end_epoch
        if cid not in self._rows:
            raise ReplayError(f"{cid!r} is not a recorded configuration of {self.curveset.name!r}")
        row = self._rows[cid]
        curve, costs = self.curveset.curves[row], self.curveset.costs[row]
        done = self._states[cid].epochs if cid in self._states else 0
        if start != done:
            raise ReplayError(f"{cid!r} has {done} epochs; a step must continue from there, not from {start}")
        if not start < end <= len(curve):
            raise ReplayError(
                f"{cid!r} was recorded for {len(curve)} epochs; cannot train it from epoch {start} to {end}"
            )
        self.steps += 1
        observed = []
        for epoch in range(start, end):
            if self.used_s + costs[epoch] > self.budget_s:
                self.exhausted = True
                break
            self.used_s += float(costs[epoch])
            observed.append(float(curve[epoch]))
            self._used.append(self.used_s)
            self._values.append(float(curve[epoch]))
        if observed:
            n = done + len(observed)
            self._states[cid] = PipelineState(
                cid, suggestion.config, tuple(float(v) for v in curve[:n]), tuple(float(c) for c in costs[:n]), "ok"
            )
        return observed

    def trace(self) -> Trace:
        return Trace(np.array(self._used), np.array(self._values), self.steps)


def replay(optimizer: Optimizer, curveset: CurveSet, budget_s: float) -> Trace:
    """Run ``optimizer`` against the recorded curves until the budget or the candidates are used up."""
    run = Replay(curveset, budget_s)
    while not run.exhausted:
        suggestion = optimizer.ask(run.pipelines(), BudgetStatus(run.budget_s, run.used_s))
        if suggestion is None:
            break
        run.step(suggestion)
    return run.trace()
