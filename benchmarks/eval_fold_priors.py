"""Held-out scores of a ``qtt bench`` run's fold priors: each fold's surrogate on its own test datasets.

Each fold's priors never saw its three test datasets (neither in training nor for early stopping), so this
is the cleanest comparison of two meta-training settings: ``Surrogate.evaluate`` (next-epoch NLL, MAE,
calibration of fresh and continued predictions) and its far-epoch scores (a random later epoch, what a
horizon acquisition asks), averaged over the folds' datasets weighted by their points.

    python benchmarks/eval_fold_priors.py runs/bench-a/priors runs/bench-b/priors --drop-degenerate
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

META_DATASET = Path(__file__).resolve().parents[2] / "shared" / "data" / "quicktune-extended"
KEYS = ("nll", "nll_horizon", "mae", "mae_horizon", "latent_z_std_fresh", "latent_coverage90_fresh",
        "latent_z_std_continued", "latent_coverage90_continued", "z_std_horizon", "coverage90_horizon",
        "cost_log_mae")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("priors", nargs="+", help="priors folders of qtt bench runs (fold-K inside)")
    parser.add_argument("--folds", type=int, default=6)
    parser.add_argument("--drop-degenerate", action="store_true")
    parser.add_argument("--meta-dataset", default=str(META_DATASET))
    args = parser.parse_args()

    import torch

    from qtt_cli.bench.runner import assign_folds
    from qtt_cli.metadataset import load_meta_dataset, without_degenerate
    from qtt_cli.surrogate import Surrogate

    torch.set_num_threads(1)
    sets = {cs.name: cs for cs in load_meta_dataset(args.meta_dataset)}
    if args.drop_degenerate:
        sets = {name: without_degenerate(cs) for name, cs in sets.items()}
    folds = assign_folds(list(sets), args.folds)
    print(f"{'priors':<40} " + " ".join(f"{k[:14]:>14}" for k in KEYS))
    for directory in args.priors:
        totals: dict[str, list[tuple[float, int]]] = {k: [] for k in KEYS}
        for k, members in enumerate(folds):
            surrogate = Surrogate.load(Path(directory) / f"fold-{k}")
            for name in members:
                scores = surrogate.evaluate([sets[name]])
                for key in KEYS:
                    if key in scores:
                        totals[key].append((scores[key], scores["points"]))
        means = {k: np.average([v for v, _ in totals[k]], weights=[w for _, w in totals[k]]) for k in KEYS}
        print(f"{directory:<40} " + " ".join(f"{means[k]:14.3f}" for k in KEYS))


if __name__ == "__main__":
    main()
