"""One replayed search, step by step: what the optimizer expected of each step and what it got.

The diagnosis behind the "The run's own noise" paragraph of docs/bench/replay-history.md: where the budget
went (a plateau kept running on a latent spread, a slow starter dropped after two flat epochs). For each
step it prints the pipeline, the epoch reached, the observed and predicted accuracy (mean ± latent std), the recorded
and predicted seconds and the GP's observation noise after the step's refit; then the pipelines that took the
most budget and whether the dataset's best configurations were ever started. Use development seeds only
(the replication seeds are looked at once, by ``qtt bench``).

    python benchmarks/diag_search_trace.py PLT_NET --priors runs/bench/priors --seed 0 --drop-degenerate
    python benchmarks/diag_search_trace.py PNU --optimizer quicktune-run-noise --seed 0 --hours 1.2 ...
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np

META_DATASET = Path(__file__).resolve().parents[2] / "shared" / "data" / "quicktune-extended"


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("--priors", required=True, help="a qtt bench run's priors folder (fold-K inside)")
    parser.add_argument("--optimizer", default="quicktune")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hours", type=float, default=16.0)
    parser.add_argument("--drop-degenerate", action="store_true")
    parser.add_argument("--meta-dataset", default=str(META_DATASET))
    args = parser.parse_args()

    import torch

    from qtt_cli.bench.replay import Replay
    from qtt_cli.bench.runner import assign_folds, make_optimizer
    from qtt_cli.metadataset import load_meta_dataset, without_degenerate
    from qtt_cli.optimizer import BudgetStatus
    from qtt_cli.surrogate import Surrogate

    torch.set_num_threads(1)
    names = [cs.name for cs in load_meta_dataset(args.meta_dataset)]
    fold = next(k for k, members in enumerate(assign_folds(names, 6)) if args.dataset in members)
    curveset = load_meta_dataset(args.meta_dataset, datasets=[args.dataset])[0]
    if args.drop_degenerate:
        curveset = without_degenerate(curveset)
    priors = Surrogate.load(Path(args.priors) / f"fold-{fold}")
    opt = make_optimizer(args.optimizer, curveset, priors=priors, seed=args.seed, delta_t=1)
    run = Replay(curveset, args.hours * 3600)
    spent: dict[str, float] = defaultdict(float)
    print(f"{args.dataset} {args.optimizer} seed {args.seed}, {args.hours:g} h of recorded cost")
    print(f"{'step':>4} {'pipeline':>10} {'epoch':>5} {'observed':>8} {'predicted':>12} {'seconds':>8} "
          f"{'predicted':>9} {'used h':>6} {'noise':>5}")  # fmt: skip
    step = 0
    while not run.exhausted:
        s = opt.ask(run.pipelines(), BudgetStatus(run.budget_s, run.used_s))
        if s is None:
            break
        before = run.used_s
        observed = run.step(s)
        spent[s.pipeline_id] += run.used_s - before
        model = getattr(opt, "_model", None)
        noise = float(model.nets.likelihood.noise.sqrt()) * 100 if model is not None else None
        predicted = ("-" if s.predicted_val_top1 is None
                     else f"{s.predicted_val_top1:.1f}±{s.predicted_val_std:.1f}")  # fmt: skip
        print(f"{step:4d} {s.pipeline_id[:10]:>10} {s.end_epoch:5d} {_fmt(observed[-1] if observed else None):>8} "
              f"{predicted:>12} {run.used_s - before:8.0f} {_fmt(s.predicted_cost_s, 0):>9} "
              f"{run.used_s / 3600:6.2f} {_fmt(noise):>5}")  # fmt: skip
        step += 1
    ids = list(curveset.config_ids)
    best = {cid: float(np.max(c)) for cid, c in zip(ids, curveset.curves, strict=True)}
    states = run.pipelines()
    print("\nwhere the budget went:")
    for pid in sorted(spent, key=spent.get, reverse=True)[:6]:
        row = ids.index(pid)
        print(f"  {spent[pid] / 3600:5.2f} h on {pid}: {states[pid].epochs} epochs, best {max(states[pid].curve):.1f} "
              f"(recorded best {best[pid]:.1f} over {len(curveset.curves[row])} epochs)")  # fmt: skip
    print("the dataset's best configurations:")
    for pid in sorted(ids, key=lambda i: -best[i])[:5]:
        row = ids.index(pid)
        started = states[pid].epochs if pid in states else 0
        print(f"  {pid}: best {best[pid]:.1f}, first epoch {curveset.curves[row][0]:.1f}, "
              f"{np.median(curveset.costs[row]):.0f} s per epoch; trained {started} epochs here")  # fmt: skip


if __name__ == "__main__":
    main()
