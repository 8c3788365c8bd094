"""Parallel workers on one machine: steps per minute with 1 and 2 CPU workers, the scheduling overhead per
step, and Ray's overhead against the local executor (issue 9).

Each run is a real `qtt tune` search (Python API: ``prepare`` + ``search``) on scikit-learn's digits written as
PNGs (``--per-class`` images per class), the tiny hub with random weights at 32 px, random search (so the
optimizer's own time is negligible and the executor is what is measured), ``--max-epochs 3``, the same seed
and the same ``--budget`` for every run. Worker start-up happens before the budget's clock and is reported
apart. The 1- and 2-worker runs alternate (1, 2, 1, 2, ...), so that load from other jobs on a shared
machine hits both alike; the speed-up is the ratio of their median steps per minute.

* ``steps/min``: recorded steps / budget seconds used x 60.
* ``overhead``: per step after a worker's first, the seconds between the worker finishing a step and starting
  its next one (the tuner records the result, asks the optimizer, sends the step); median and 90th percentile.

``--instant N`` measures the tuner alone: N steps of an in-process search whose worker trains nothing (each
step "completes" its epochs at once and leaves the checkpoint file the tuner's retention looks for), so the
time between steps is only the tuner's recording, retention, asking and state saving; it prints the median
per quarter of the run, which shows whether that time grows with the number of pipelines.

    python benchmarks/bench_parallel.py [--budget 60] [--repeats 2] [--per-class 30] [--ray] [--json]
    python benchmarks/bench_parallel.py --instant 150
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "examples"))


def one_run(data: Path, out: Path, budget: float, **executor) -> dict:
    from qtt_cli.tuner import SilentReporter, TuneSettings
    from qtt_cli.tuner.tuner import prepare, search

    settings = TuneSettings(dataset=data, out=out, budget_s=budget, hub="tiny", weights="random",
                            optimizer="random", max_input_size=32, max_epochs=3, seed=0, **executor)  # fmt: skip
    run = prepare(settings)
    t0 = time.monotonic()
    run.executor.start()
    startup = time.monotonic() - t0
    try:
        summary = search(run, SilentReporter())
    finally:
        run.close()
    idle = sorted(run.executor.idle_s)
    return {
        "executor": run.executor.name, "workers": run.executor.capacity, "steps": summary.steps,
        "used_s": summary.used_s, "steps_per_min": 60.0 * summary.steps / summary.used_s,
        "startup_s": round(startup, 2),
        "overhead_median_ms": 1000 * statistics.median(idle) if idle else None,
        "overhead_p90_ms": 1000 * idle[int(0.9 * (len(idle) - 1))] if idle else None,
    }  # fmt: skip


class InstantWorker:
    """A FinetuneWorker whose steps train nothing (``--instant``)."""

    def __init__(self, real) -> None:
        self.real = real

    def __getattr__(self, name):
        return getattr(self.real, name)

    def step(self, pid, config, start, end, deadline=None):
        from qtt_cli.worker import EpochResult, StepResult

        path = self.real.checkpoint_path(pid, end)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
        self.real.prune_checkpoints(pid, keep_epoch=end)
        top1 = 10.0 + int(pid[1:]) % 50
        return StepResult(pid, [EpochResult(e + 1, top1 + e, 1.0, 1.0, 0.5) for e in range(start, end)], "ok")


def instant_run(data: Path, out: Path, steps: int) -> None:
    from qtt_cli.execution import InProcessExecutor
    from qtt_cli.tuner import SilentReporter, TuneSettings
    from qtt_cli.tuner.tuner import prepare, search

    settings = TuneSettings(dataset=data, out=out, budget_s=3600, hub="tiny", weights="random", optimizer="random",
                            max_input_size=32, max_epochs=3, seed=0, max_steps=steps)  # fmt: skip
    run = prepare(settings)
    run.worker = InstantWorker(run.worker)
    run.executor = InProcessExecutor(run.worker)
    try:
        summary = search(run, SilentReporter())
    finally:
        run.close()
    idle = run.executor.idle_s
    quarter = max(1, len(idle) // 4)
    medians = [1000 * statistics.median(idle[i:i + quarter]) for i in range(0, quarter * 4, quarter)]
    print(f"{summary.steps} steps, {summary.pipelines} pipelines; tuner time between steps, median per quarter "
          f"of the run: {', '.join(f'{m:.0f} ms' for m in medians)}")
    print(json.dumps({"instant_steps": summary.steps, "pipelines": summary.pipelines,
                      "overhead_median_ms_by_quarter": [round(m, 1) for m in medians]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--per-class", type=int, default=30)
    parser.add_argument("--ray", action="store_true", help="also 2 workers through Ray (needs qtt-cli[ray])")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--instant", type=int, default=0, metavar="N",
                        help="only the tuner: N steps with a worker that trains nothing")
    args = parser.parse_args()

    import make_dataset

    if args.instant:
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "digits"
            make_dataset.make_dataset("digits", data, layout="flat", per_class=5, seed=0)
            instant_run(data, Path(tmp) / "run", args.instant)
        return

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "digits"
        make_dataset.make_dataset("digits", data, layout="flat", per_class=args.per_class, seed=0)
        plan = [{"workers": 1}, {"workers": 2}] * args.repeats
        if args.ray:
            plan += [{"workers": 2, "executor": "ray"}, {"workers": 2}] * max(1, args.repeats // 2)
        for i, executor in enumerate(plan):
            row = one_run(data, Path(tmp) / f"run{i}", args.budget, **executor)
            rows.append(row)
            print(f"  {row['executor']:>10} x{row['workers']}: {row['steps']:3d} steps in {row['used_s']:.0f} s = "
                  f"{row['steps_per_min']:.1f}/min, overhead median "
                  f"{row['overhead_median_ms'] or float('nan'):.0f} ms (start-up {row['startup_s']:.1f} s)",
                  file=sys.stderr)  # fmt: skip

    def median(kind: str, workers: int, key: str):
        values = [r[key] for r in rows if r["executor"] == kind and r["workers"] == workers and r[key] is not None]
        return statistics.median(values) if values else None

    one, two = median("in-process", 1, "steps_per_min"), median("local", 2, "steps_per_min")
    summary = {
        "budget_s": args.budget, "repeats": args.repeats, "per_class": args.per_class,
        "steps_per_min_1_worker": one, "steps_per_min_2_workers": two,
        "speedup_2_vs_1": two / one if one and two else None,
        "overhead_median_ms_in_process": median("in-process", 1, "overhead_median_ms"),
        "overhead_median_ms_local": median("local", 2, "overhead_median_ms"),
        "overhead_p90_ms_local": median("local", 2, "overhead_p90_ms"),
        "startup_s_local_2": median("local", 2, "startup_s"),
    }  # fmt: skip
    if args.ray:
        summary.update({
            "steps_per_min_ray_2": median("ray", 2, "steps_per_min"),
            "overhead_median_ms_ray": median("ray", 2, "overhead_median_ms"),
            "overhead_p90_ms_ray": median("ray", 2, "overhead_p90_ms"),
            "startup_s_ray_2": median("ray", 2, "startup_s"),
        })  # fmt: skip
    print(f"{'':28}{'steps/min':>10}{'overhead median':>17}{'p90':>8}{'start-up':>10}")
    for label, kind, w in (("1 worker (in-process)", "in-process", 1), ("2 local workers", "local", 2),
                           ("2 Ray workers", "ray", 2)):  # fmt: skip
        spm = median(kind, w, "steps_per_min")
        if spm is None:
            continue
        med, p90, st = (median(kind, w, k) for k in ("overhead_median_ms", "overhead_p90_ms", "startup_s"))
        print(f"{label:28}{spm:>10.1f}{med or float('nan'):>15.0f}ms{p90 or float('nan'):>6.0f}ms{st:>9.1f}s")
    if summary["speedup_2_vs_1"]:
        print(f"speed-up of 2 workers over 1: {summary['speedup_2_vs_1']:.2f}x")
    print(json.dumps({"rows": rows, **summary} if args.json else summary))


if __name__ == "__main__":
    main()
