"""Where the paper-protocol replay spends Quick-Tune's first steps: on the meta-dataset's broken records?

The replay of ``qtt bench`` (without ``--drop-degenerate``) offers the meta-dataset's degenerate
linear-probing records (``qtt_cli.metadataset.degenerate``) as candidates, at their recorded cost: a few
seconds for one epoch near chance. The fold priors never saw them (meta-training drops them) and learn
linear probing from the run. This replays full Quick-Tune and the variant without cost (``quicktune-no-cost``)
on every dataset with the fold priors of a finished ``qtt bench`` run and counts, per search, how many of
the first 20 steps and how many hours went to degenerate records. Run it on development seeds only (the
replication seeds are looked at once, by ``qtt bench``).

    python benchmarks/diag_degenerate_steps.py --priors runs/bench/priors --seed 0 [--jobs 2] [--csv FILE]
"""

from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

META_DATASET = Path(__file__).resolve().parents[2] / "shared" / "data" / "quicktune-extended"
OPTIMIZERS = ("quicktune", "quicktune-no-cost")
FIRST_STEPS = 20


def search(task: tuple[str, str, int, str, str, float]) -> dict:
    """One replayed search; returns its degenerate-record counts."""
    name, optimizer, seed, priors_root, meta_dataset, budget_s = task
    import numpy as np
    import torch

    from qtt_cli.bench.replay import Replay
    from qtt_cli.bench.runner import assign_folds, make_optimizer
    from qtt_cli.metadataset import degenerate_rows, load_meta_dataset
    from qtt_cli.optimizer import BudgetStatus
    from qtt_cli.surrogate import Surrogate

    torch.set_num_threads(1)
    names = [cs.name for cs in load_meta_dataset(meta_dataset)]
    fold = next(k for k, members in enumerate(assign_folds(names, 6)) if name in members)
    curveset = load_meta_dataset(meta_dataset, datasets=[name])[0]
    broken = set(np.asarray(curveset.config_ids)[degenerate_rows(curveset)])
    priors = Surrogate.load(Path(priors_root) / f"fold-{fold}")
    opt = make_optimizer(optimizer, curveset, priors=priors, seed=seed, delta_t=1)
    run = Replay(curveset, budget_s)
    steps: list[tuple[bool, float]] = []  # (on a degenerate record, seconds charged)
    while not run.exhausted:
        suggestion = opt.ask(run.pipelines(), BudgetStatus(run.budget_s, run.used_s))
        if suggestion is None:
            break
        before = run.used_s
        run.step(suggestion)
        steps.append((suggestion.pipeline_id in broken, run.used_s - before))
    return {"dataset": name, "optimizer": optimizer, "seed": seed, "steps": len(steps),
            "degenerate_first_20": sum(b for b, _ in steps[:FIRST_STEPS]),
            "degenerate_steps": sum(b for b, _ in steps),
            "degenerate_hours": sum(s for b, s in steps if b) / 3600}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--priors", required=True, help="a qtt bench run's priors folder (fold-K inside)")
    parser.add_argument("--meta-dataset", default=str(META_DATASET))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget-h", type=float, default=16.0)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--csv", default=None)
    args = parser.parse_args()

    import pandas as pd

    from qtt_cli.metadataset import load_meta_dataset

    names = [cs.name for cs in load_meta_dataset(args.meta_dataset)]
    tasks = [(n, o, args.seed, args.priors, args.meta_dataset, args.budget_h * 3600) for n in names for o in OPTIMIZERS]
    with ProcessPoolExecutor(args.jobs) as pool:
        table = pd.DataFrame(list(pool.map(search, tasks)))
    if args.csv:
        table.to_csv(args.csv, index=False)
    wide = table.pivot_table(index="dataset", columns="optimizer", values=["degenerate_first_20", "degenerate_hours"])
    print(wide.round(2).to_string())
    print(table.groupby("optimizer")[["degenerate_first_20", "degenerate_hours"]].mean().round(2).to_string())


if __name__ == "__main__":
    main()
