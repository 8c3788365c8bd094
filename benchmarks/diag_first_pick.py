"""What would a replayed search start with if the priors picked its first pipeline?

Algorithm 1 (and ``QuickTune.ask``) starts with a random configuration. With a learnt prior mean the priors
can rank configurations before anything is observed; this script shows what equation 3 against a 0 %
incumbent would pick (the best predicted accuracy per second; without cost, the best predicted accuracy).
That rule was tried as the default (commit b97a39e) and reverted: better on the replay at 1 h, worse on the
real-training benchmark (docs/bench/replay-history.md, "The first pipeline chosen by the priors").

For every dataset it prints, for each pick (fold priors that never saw the dataset): the recorded seconds of
its first epoch in hours, its first-epoch accuracy, and the normalized regret of its best recorded epoch (how
good the picked configuration is once trained to its end); and the same three averaged over all of the
dataset's configurations (the expectation of a random first pick).

    python benchmarks/diag_first_pick.py --priors runs/bench/priors --drop-degenerate
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

META_DATASET = Path(__file__).resolve().parents[2] / "shared" / "data" / "quicktune-extended"
VARIANTS = ("quicktune", "quicktune-no-cost")


def first_picks(args: argparse.Namespace) -> list[dict]:
    from qtt_cli.bench.metrics import normalized_regret, regret_range
    from qtt_cli.bench.runner import assign_folds, make_optimizer
    from qtt_cli.metadataset import load_meta_dataset, without_degenerate
    from qtt_cli.surrogate import Surrogate

    curvesets = load_meta_dataset(args.meta_dataset)
    folds = assign_folds([cs.name for cs in curvesets], args.folds)
    rows = []
    for curveset in curvesets:
        if args.drop_degenerate:
            curveset = without_degenerate(curveset)
        fold = next(k for k, members in enumerate(folds) if curveset.name in members)
        priors = Surrogate.load(Path(args.priors) / f"fold-{fold}")
        regret = normalized_regret(np.array([c.max() for c in curveset.curves]), *regret_range(curveset))
        first_cost_h = np.array([c[0] for c in curveset.costs]) / 3600
        first_acc = np.array([c[0] for c in curveset.curves])
        rows.append({"dataset": curveset.name, "pick": "random (expected)", "first_epoch_h": first_cost_h.mean(),
                     "first_epoch_acc": first_acc.mean(), "regret_of_best": regret.mean()})  # fmt: skip
        for name in VARIANTS:
            opt = make_optimizer(name, curveset, priors=priors, seed=args.seed, delta_t=1)
            seen, candidates = opt.layout.build({}, opt)
            prediction = priors.predict(seen, candidates.rows, candidates.targets, candidates.epochs)
            scores, _ = opt.scores(seen, candidates, prediction)
            i = curveset.config_ids.index(candidates.pipeline_ids[int(np.argmax(scores))])
            rows.append({"dataset": curveset.name, "pick": name, "first_epoch_h": first_cost_h[i],
                         "first_epoch_acc": first_acc[i], "regret_of_best": regret[i]})  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--priors", type=Path, required=True, help="a bench's OUT/priors (fold-K directories)")
    parser.add_argument("--meta-dataset", type=Path, default=META_DATASET)
    parser.add_argument("--folds", type=int, default=6, help="as the bench that wrote the priors")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--drop-degenerate", action="store_true")
    args = parser.parse_args()

    import pandas as pd
    import torch

    torch.set_num_threads(1)
    table = pd.DataFrame(first_picks(args))
    with pd.option_context("display.width", 160, "display.max_rows", 200):
        print(table.round(3).to_string(index=False))
        print("\nmean over datasets:")
        print(table.groupby("pick", sort=False).mean(numeric_only=True).round(3).to_string())


if __name__ == "__main__":
    main()
