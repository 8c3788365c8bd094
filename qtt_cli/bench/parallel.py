"""Replaying an asynchronous parallel search: W simulated workers on a clock advanced by recorded seconds.

Each free worker asks the optimizer (which sees the steps in flight, as in ``qtt tune --workers``), its step
takes exactly the recorded seconds of its epochs, and each epoch is observed when it ends on the simulated
wall clock. The budget is wall-clock time: an epoch that would end past it is not observed (cut, as in
``qtt tune``). The next event is always the step that ends first, so the decisions are those a real
asynchronous run with W equally fast workers would make. With one worker it is exactly :func:`replay`.
Scheduling overhead is not simulated (the replay measures the search, not the machinery).
"""

from __future__ import annotations

import heapq

import numpy as np

from qtt_cli.bench.replay import Trace
from qtt_cli.metadataset import CurveSet
from qtt_cli.optimizer import BudgetStatus, Optimizer, PipelineState, Suggestion
from qtt_cli.optimizer.pending import with_in_flight

__all__ = ["replay_parallel"]


def replay_parallel(optimizer: Optimizer, curveset: CurveSet, budget_s: float, workers: int) -> Trace:
    """Run ``optimizer`` with ``workers`` simulated workers until the budget or the candidates are used up."""
    if workers < 1:
        raise ValueError("workers must be >= 1")
    if budget_s <= 0:
        raise ValueError("the replay budget must be positive")
    rows = {cid: i for i, cid in enumerate(curveset.config_ids)}
    states: dict[str, PipelineState] = {}
    in_flight: dict[str, Suggestion] = {}
    events: list[tuple[float, int, str, list[tuple[float, float]]]] = []  # (ends at, order, id, observations)
    seen_at: list[float] = []
    seen: list[float] = []
    now, steps, order, exhausted = 0.0, 0, 0, False
    while True:
        while not exhausted and len(in_flight) < workers and now < budget_s:
            suggestion = optimizer.ask(with_in_flight(states, in_flight), BudgetStatus(budget_s, now))
            if suggestion is None:
                exhausted = True
                break
            cid = suggestion.pipeline_id
            row = rows[cid]
            done = states[cid].epochs if cid in states else 0
            if cid in in_flight or suggestion.start_epoch != done or suggestion.end_epoch > len(curveset.curves[row]):
                raise ValueError(f"{optimizer!r} proposed an impossible step {suggestion} (in flight or not a "
                                 "continuation)")  # fmt: skip
            steps += 1
            t, observed = now, []
            for epoch in range(suggestion.start_epoch, suggestion.end_epoch):
                t += float(curveset.costs[row][epoch])
                if t > budget_s:
                    break
                observed.append((t, float(curveset.curves[row][epoch])))
            in_flight[cid] = suggestion
            heapq.heappush(events, (min(t, budget_s), order, cid, observed))
            order += 1
        if not events:
            break
        now, _, cid, observed = heapq.heappop(events)
        suggestion = in_flight.pop(cid)
        for t, value in observed:
            seen_at.append(t)
            seen.append(value)
        if observed:
            row = rows[cid]
            n = suggestion.start_epoch + len(observed)
            states[cid] = PipelineState(cid, suggestion.config, tuple(float(v) for v in curveset.curves[row][:n]),
                                        tuple(float(c) for c in curveset.costs[row][:n]), "ok")  # fmt: skip
        exhausted = False  # a finished step may open new candidates (a promotion, a continuation)
    order_ = np.argsort(np.asarray(seen_at), kind="stable")
    return Trace(np.asarray(seen_at)[order_], np.asarray(seen)[order_], steps)
