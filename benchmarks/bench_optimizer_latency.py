"""Latency of ``QuickTune.ask`` in a `qtt tune` run: 50, 200 and 500 observations, a 512-candidate pool.

An ask lays the history and the pool out as one curve set (encoding started pipelines), refits the
surrogate when the schedule says so, predicts every candidate's next-fidelity accuracy and cost, and scores
them with equation 3. For each N this builds a run of N observed (pipeline, epoch) points (synthetic
rising curves over configurations from the pool; only their number and lengths matter), lets the
optimizer past its first full refits, then times ``--asks`` consecutive asks, each after one more
observed epoch — as in a search (the measured asks are centred on N). Reported per N:

* ``median ask`` / ``max ask``: with the default refit schedule, past the run's first full refits (the
  schedule refines when the observations grew by 25 % since the last fit, so rarely at 500
  observations); the median is the figure the ≤ 1 s target is about;
* ``ask with a 50-step refinement``: median ask when every ask refines (as the first asks of a run do).

The surrogate starts from the shipped priors (``metadata/quicktune``) when present, else untrained
(the same network and the same cost either way).

    python benchmarks/bench_optimizer_latency.py [--asks 20] [--threads 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from qtt_cli.hub import load_hub  # noqa: E402
from qtt_cli.metadataset.curveset import hub_model_columns  # noqa: E402
from qtt_cli.optimizer import PipelineState  # noqa: E402
from qtt_cli.optimizer.quicktune import FitSchedule, QuickTune  # noqa: E402
from qtt_cli.space import build_space  # noqa: E402
from qtt_cli.surrogate.priors import load_priors  # noqa: E402

POOL = 512
EPOCHS_PER_PIPELINE = 10
MAX_EPOCHS = 50


def synthetic_history(pool, observations: int, rng: np.random.Generator) -> dict[str, PipelineState]:
    """``observations`` epochs spread over pipelines of ``EPOCHS_PER_PIPELINE`` epochs (configs from the pool)."""
    history = {}
    for i in range((observations + EPOCHS_PER_PIPELINE - 1) // EPOCHS_PER_PIPELINE):
        n = min(EPOCHS_PER_PIPELINE, observations - i * EPOCHS_PER_PIPELINE)
        top = rng.uniform(20, 95)
        curve = tuple(float(top * (1 - np.exp(-(e + 1) / 3)) + rng.normal(0, 1)) for e in range(n))
        pid = f"p{i + 1:04d}"
        history[pid] = PipelineState(pid, pool[-(i + 1)], curve, tuple(float(rng.uniform(5, 60)) for _ in curve), "ok")
    return history


def observe(history: dict[str, PipelineState], suggestion, rng) -> None:
    """One more epoch of the suggested pipeline (a fresh one gets its first epoch)."""
    old = history.get(suggestion.pipeline_id)
    curve = (old.curve if old else ()) + (float(rng.uniform(20, 95)),)
    costs = (old.costs if old else ()) + (float(rng.uniform(5, 60)),)
    history[suggestion.pipeline_id] = PipelineState(suggestion.pipeline_id, suggestion.config, curve, costs, "ok")


def measure(observations: int, asks: int, priors_factory, schedule: FitSchedule) -> list[float]:
    """Times of ``asks`` consecutive asks around ``observations`` observed epochs (one more per ask)."""
    hub = load_hub("quicktune")
    space = build_space(hub.names)
    opt = QuickTune.for_space(
        space, meta_features=[5000, 20, 128, 3], model_names_map=hub.table_names,
        model_column_names=[s.table_name or s.name for s in hub.models], max_epochs=MAX_EPOCHS, delta_t=1,
        priors=priors_factory(), pool_size=POOL, seed=0, schedule=schedule,
    )  # fmt: skip
    rng = np.random.default_rng(observations)
    history = synthetic_history(opt.layout.pool, observations - asks // 2, rng)
    observe(history, opt.ask(history), rng)  # the run's first fit (a full one, from the priors)
    times = []
    for _ in range(asks):
        start = time.perf_counter()
        suggestion = opt.ask(history)
        times.append(time.perf_counter() - start)
        observe(history, suggestion, rng)
    return times


def row(observations: int, asks: int, priors_factory) -> dict:
    # steady state: the first full refits are behind (full_refits=1); refinements as the default schedule says
    usual = measure(observations, asks, priors_factory, FitSchedule(full_refits=1))
    # worst case: every ask refines (refit_fraction=0), as the first asks of a run do
    refining = measure(observations, max(3, asks // 4), priors_factory, FitSchedule(full_refits=1, refit_fraction=0))
    return {
        "observations": observations,
        "median_s": statistics.median(usual),
        "max_s": max(usual),
        "refine_median_s": statistics.median(refining),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--asks", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the machine has 2 cores)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    hub = load_hub("quicktune")
    columns = hub_model_columns(hub)
    found = load_priors(columns) is not None

    def priors_factory():
        return load_priors(columns)  # None: QuickTune builds an untrained surrogate (same cost per ask)

    rows = [row(n, args.asks, priors_factory) for n in (50, 200, 500)]
    if args.json:
        print(json.dumps({"priors": found, "threads": args.threads, "rows": rows}, indent=1))
        return
    print(f"QuickTune.ask, pool {POOL}, {'shipped priors' if found else 'untrained surrogate'}, "
          f"{args.threads} torch thread(s), {args.asks} asks per row")
    print(f"{'observations':>12} {'median ask':>11} {'max ask':>9} {'ask with a 50-step refinement':>30}")
    for r in rows:
        print(f"{r['observations']:>12} {r['median_s']:>10.3f}s {r['max_s']:>8.3f}s {r['refine_median_s']:>29.3f}s")


if __name__ == "__main__":
    main()
