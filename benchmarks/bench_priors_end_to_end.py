"""Two sets of Quick-Tune priors on real training: `qtt tune --priors A` against `--priors B`, side by side.

The replay benchmark (`qtt bench`) judges priors on recorded curves; this one judges them where they are used:
real `qtt tune` runs on Fashion-MNIST (the data, hub and budget of ``bench_end_to_end.py``), the two arms at
once (two processes, one torch thread each) so that machine noise hits them alike. Training randomness is keyed
by the configuration, so a configuration both arms train gets the same curve in both (common random numbers):
a difference comes from which configurations each arm chose and how long it trained them.

    python benchmarks/bench_priors_end_to_end.py --priors-a DIR --priors-b DIR [--label-a A] [--label-b B]
        [--budget 480] [--seeds 4] [--first-seed 0] [--out DIR]

Writes ``OUT/summary.json`` (per seed: best validation top-1, test top-1 of the best, epochs) and prints the
paired difference B − A with its standard error over seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_end_to_end import best_over_time, final_test_top1, tune_side_by_side, write_dataset  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--priors-a", type=Path, required=True)
    parser.add_argument("--priors-b", type=Path, required=True)
    parser.add_argument("--label-a", default="a")
    parser.add_argument("--label-b", default="b")
    parser.add_argument("--budget", type=int, default=480)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--max-epochs", type=int, default=20)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.label_a == args.label_b:
        raise SystemExit("--label-a and --label-b must differ")

    args.out.mkdir(parents=True, exist_ok=True)
    data = args.out / "fashion-mnist"
    counts = write_dataset(data, 200, 100, 100)
    arms = {args.label_a: args.priors_a, args.label_b: args.priors_b}
    records, started = [], time.time()
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        options = {label: ["--optimizer", "quicktune", "--priors", str(priors)] for label, priors in arms.items()}
        runs = tune_side_by_side(data / ".", args.out, options, args.budget, seed, "random", args.max_epochs)
        for label, run in runs.items():
            curve = best_over_time(run)
            records.append({
                "arm": label, "seed": seed, "final_val_top1": float(curve["best_val"].iloc[-1]),
                "test_top1": final_test_top1(run, data / "test"), "epochs_recorded": len(curve),
            })  # fmt: skip
            print(json.dumps(records[-1]), flush=True)
    by = {(r["arm"], r["seed"]): r for r in records}
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    paired = {}
    for key in ("final_val_top1", "test_top1"):
        diffs = np.array([by[(args.label_b, s)][key] - by[(args.label_a, s)][key] for s in seeds], dtype=float)
        sem = float(diffs.std(ddof=1) / np.sqrt(len(diffs))) if len(diffs) > 1 else float("nan")
        paired[key] = {"mean": float(diffs.mean()), "sem": sem, "per_seed": diffs.round(2).tolist()}
    summary = {"arms": {k: str(v) for k, v in arms.items()}, "budget_s": args.budget, "images": counts,
               "wall_s": round(time.time() - started, 1), "cpu_count": os.cpu_count(), "runs": records,
               f"paired_{args.label_b}_minus_{args.label_a}": paired}  # fmt: skip
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(paired, indent=1))


if __name__ == "__main__":
    main()
