"""Latency of the predictors inside a search: refits and predictions with 50, 200 and 500 observations.

The search's ``ask`` refits the surrogate on the run's observations (``full`` fits of 100 steps in the
first asks, ``refine`` fits of 50 steps later) and predicts every candidate's next-fidelity accuracy and
cost. This times, on one CPU thread (the surrogate's setting), for a run with N observed (pipeline,
epoch) points and a pool of 512 candidates (the started pipelines + fresh configurations):

* ``predict``: one ``Surrogate.predict`` for all 512 candidates (the GP conditioned on at most
  ``max_context`` = 256 of the N observations: each curve's latest epochs first);
* ``refine_50``: ``fit(steps=50)``, the refinement the optimizer runs when enough new points arrived;
* ``step``: one training step (``refine_50`` / 50).

The surrogate starts from the shipped priors (``metadata/quicktune``) when present, else untrained.
Learning curves are synthetic (rising curves with noise); only their number and lengths matter here (the
curve CNN's work grows with the longest prefix in a batch).

    python benchmarks/bench_surrogate_latency.py [--repeats 5] [--json]
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
from qtt_cli.metadataset import CurveSet, build_curveset, hub_model_columns  # noqa: E402
from qtt_cli.space import build_space, sample_configs  # noqa: E402
from qtt_cli.surrogate import Surrogate, load_priors  # noqa: E402

POOL = 512


def run_curveset(observations: int, seed: int = 0) -> tuple[CurveSet, np.ndarray, np.ndarray]:
    """A run with ``observations`` observed epochs over pipelines of 1-6 epochs (80 %) or 7-50 epochs (20 %:
    the promising ones a freeze-thaw search continues), plus fresh configurations
    up to a 512-candidate pool. Returns the curve set, its candidate rows and their epochs so far."""
    rng = np.random.default_rng(seed)
    hub = load_hub("quicktune")
    lengths: list[int] = []
    while sum(lengths) < observations:
        k = rng.integers(1, 7) if rng.random() < 0.8 else rng.integers(7, 51)  # freeze-thaw: most stop early
        lengths.append(int(min(k, observations - sum(lengths))))
    configs = sample_configs(build_space(hub.names), max(POOL, len(lengths)), seed=seed)
    curves, costs = [], []
    for i in range(len(configs)):
        k = lengths[i] if i < len(lengths) else 0
        final = rng.uniform(20, 95)
        curves.append(np.clip(final * (1 - np.exp(-np.arange(1, k + 1) / 3)) + rng.normal(0, 1, k), 0, 100))
        costs.append(rng.uniform(20, 200) * np.ones(k))
    cs = build_curveset(
        "bench", configs, curves, costs, [5000, 50, 128, 3], 50,
        model_names_map=hub.table_names, model_column_names=list(hub.table_names.values()),
    )  # fmt: skip
    rows = np.arange(POOL)
    return cs, rows, cs.lengths[rows]


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    hub = load_hub("quicktune")
    priors = load_priors(hub_model_columns(hub))
    results = []
    for n in (50, 200, 500):
        cs, rows, epochs = run_curveset(n)
        surrogate = (priors or Surrogate.new(cs.features.columns)).copy()
        observed = cs.subset(np.flatnonzero(cs.lengths > 0))
        surrogate.fit([observed], steps=2, lr=1e-4)  # warm-up (allocations, first-call overheads)
        predict_s = timed(lambda: surrogate.predict(cs, rows, epochs + 1, epochs), args.repeats)  # noqa: B023
        refine_s = timed(lambda: surrogate.fit([observed], steps=50, lr=1e-4), max(1, args.repeats // 2))  # noqa: B023
        results.append({
            "observations": n, "candidates": POOL, "predict_s": round(predict_s, 4),
            "refine_50_s": round(refine_s, 3), "step_s": round(refine_s / 50, 4),
        })  # fmt: skip
    if args.json:
        print(json.dumps({"priors": priors is not None, "results": results}, indent=1))
        return
    print(f"surrogate latency ({'shipped priors' if priors else 'untrained'}; median of {args.repeats})")
    print(f"{'observations':>12} {'candidates':>10} {'predict':>9} {'refine 50 steps':>16} {'per step':>9}")
    for r in results:
        print(f"{r['observations']:>12} {r['candidates']:>10} {r['predict_s'] * 1000:>7.0f}ms "
              f"{r['refine_50_s']:>15.2f}s {r['step_s'] * 1000:>7.1f}ms")  # fmt: skip


if __name__ == "__main__":
    main()
