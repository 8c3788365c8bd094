"""Steps in flight, as the optimizers see them (asynchronous parallel search).

With several workers the optimizer is asked while other steps are still training. Those steps are handed to
``ask`` inside the history itself, so no optimizer's signature changes and none keeps private state:
:func:`with_in_flight` marks each pipeline in flight with the status :data:`RUNNING` and the epoch its step
will reach (``in_flight_to``), and adds a placeholder (no epochs yet) for a new pipeline whose first step is
in flight. Then

- no optimizer proposes a pipeline in flight again (``alive`` is False while it runs, so ``can_continue`` is);
- a new pipeline gets a fresh id and its configuration counts as taken (the placeholder is in the history);
- ASHA is asynchronous as in Li et al. (2020): a pipeline in flight counts towards the rung it has reached,
  cannot be promoted twice, and promotions happen as soon as a rung's top ``1/η`` allows;
- random search continues the next unfinished pipeline that is not in flight, or draws a new one;
- Quick-Tune conditions its GP on *kriging-believer* fantasies (:func:`kriging_believer`).

Why kriging believer rather than local penalisation: the deep-kernel GP's inputs are a learnt embedding of
(configuration, curve, budget), in which a Lipschitz constant, the quantity local penalisation (González et
al. 2016) needs, has no meaning one could estimate from a handful of points; and freeze-thaw candidates are
mostly *other epochs of other pipelines*, which a distance ball in configuration space does not describe. The
believer (Ginsbourger et al. 2010) needs nothing new: the GP mean at the epochs in flight is appended to those
pipelines' curves, the posterior is recomputed with the surrogate's hyperparameters unchanged (fitted on real
observations only), and the acquisition runs as in the sequential case. Candidates that resemble a step in
flight then lose predictive spread (and, if the fantasy is good, face a higher incumbent), so the next
worker explores elsewhere instead of duplicating the bet; when the in-flight step ends, the fantasy is
replaced by what it really observed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from qtt_cli.optimizer.base import RUNNING, PipelineState, Suggestion

__all__ = ["RUNNING", "in_flight_rows", "kriging_believer", "with_in_flight"]


def with_in_flight(
    pipelines: Mapping[str, PipelineState], in_flight: Mapping[str, Suggestion]
) -> dict[str, PipelineState]:
    """The history as ``ask`` should see it while ``in_flight`` (pipeline id → its step) are training."""
    seen = dict(pipelines)
    for pid, step in in_flight.items():
        state = seen.get(pid) or PipelineState(pid, step.config, (), (), RUNNING)
        seen[pid] = replace(state, status=RUNNING, in_flight_to=step.end_epoch)
    return seen


def in_flight_rows(
    config_ids: tuple[str, ...], pipelines: Mapping[str, PipelineState]
) -> list[tuple[int, PipelineState]]:
    """(row in the curve set, state) of the pipelines in flight that have epochs to fantasise."""
    rows = {cid: i for i, cid in enumerate(config_ids)}
    return [
        (rows[p.pipeline_id], p)
        for p in pipelines.values()
        if p.status == RUNNING and p.pipeline_id in rows and (p.in_flight_to or 0) > p.epochs
    ]


def kriging_believer(model: Any, curveset: Any, pipelines: Mapping[str, PipelineState]) -> Any:
    """``curveset`` with the GP mean appended to each in-flight pipeline's curve up to the epoch its step will
    reach (and the predicted seconds to its costs). Unchanged when nothing is in flight."""
    running = in_flight_rows(curveset.config_ids, pipelines)
    if not running:
        return curveset
    rows, targets, starts = [], [], []
    for row, p in running:
        for epoch in range(p.epochs + 1, int(p.in_flight_to) + 1):
            rows.append(row)
            targets.append(epoch)
            starts.append(p.epochs)
    prediction = model.predict(curveset, np.array(rows), np.array(targets), np.array(starts))
    mean = np.clip(np.asarray(prediction.mean, dtype=np.float64), 0.0, 100.0)
    cost = np.asarray(prediction.cost_s, dtype=np.float64)
    curves, costs = list(curveset.curves), list(curveset.costs)
    k = 0
    for row, p in running:
        n = int(p.in_flight_to) - p.epochs
        seconds = np.diff(np.concatenate([[0.0], cost[k:k + n]]))  # cost_s is cumulative from the step's start
        curves[row] = np.concatenate([np.asarray(curves[row], dtype=np.float64)[: p.epochs], mean[k:k + n]])
        costs[row] = np.concatenate([np.asarray(costs[row], dtype=np.float64)[: p.epochs], np.maximum(seconds, 0.0)])
        k += n
    return curveset.with_observations(curves, costs)
