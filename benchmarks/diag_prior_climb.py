"""Do the priors expect a climbing learning curve to keep climbing?

A search decides whether to continue a pipeline from its predicted next epoch. Early in a real run the GP has
few observations, and that prediction is mostly the learnt prior mean (``MeanNet``), which sees the curve so
far. This script asks the priors, conditioned on nothing, for epoch 3 of every meta-dataset curve given its
epochs 1-2 (and for epoch 2 given epoch 1), and compares the predicted change with the recorded one, grouped
by how much the curve climbed from epoch 1 to 2. Degenerate records are left out.

``--priors DIR``: one priors directory (``metadata/quicktune``: mostly in-sample, all but the datasets that
meta-training held out for model selection), or a bench's fold-priors directory (``fold-0`` ... ``fold-5``):
each dataset is then scored by the fold that left it out. CPU: about a minute.

    python benchmarks/diag_prior_climb.py --priors metadata/quicktune
    python benchmarks/diag_prior_climb.py --priors runs/bench/priors
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

META_DATASET = Path(__file__).resolve().parents[2] / "shared" / "data" / "quicktune-extended"
CLIMBS = ((-100, -2), (-2, 2), (2, 5), (5, 10), (10, 100))


def main() -> None:
    from diag_run_bias import unconditioned

    from qtt_cli.bench.runner import assign_folds
    from qtt_cli.metadataset import load_meta_dataset, without_degenerate
    from qtt_cli.surrogate import Surrogate

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--priors", type=Path, required=True)
    parser.add_argument("--meta-dataset", type=Path, default=META_DATASET)
    args = parser.parse_args()

    curvesets = [without_degenerate(cs) for cs in load_meta_dataset(args.meta_dataset)]
    folded = (args.priors / "fold-0").is_dir()
    if folded:
        folds = assign_folds([cs.name for cs in curvesets], 6)
        priors = {k: unconditioned(Surrogate.load(args.priors / f"fold-{k}")) for k in range(len(folds))}
        which = {name: k for k, members in enumerate(folds) for name in members}
    else:
        single = unconditioned(Surrogate.load(args.priors))
    records = []
    for cs in curvesets:
        model = priors[which[cs.name]] if folded else single
        rows = np.array([i for i, curve in enumerate(cs.curves) if len(curve) >= 3], dtype=np.int64)
        if not len(rows):
            continue
        n = len(rows)
        third = model.predict(cs, rows, np.full(n, 3), np.full(n, 2)).mean
        second = model.predict(cs, rows, np.full(n, 2), np.full(n, 1)).mean
        for r, p3, p2 in zip(rows, third, second, strict=True):
            e1, e2, e3 = cs.curves[r][:3]
            records.append((e1, e2, e3, p3, p2))
    data = np.array(records)
    e1, e2, e3, p3, p2 = data.T
    print(f"{'held-out fold priors' if folded else 'one priors directory (mostly in-sample)'}: {args.priors}, "
          f"{len(data)} curves of 3+ epochs")
    print("epoch 2 - epoch 1 | curves | recorded e3 - e2 | predicted e3 - e2 | recorded e2 - predicted e2")
    for lo, hi in CLIMBS:
        m = (e2 - e1 >= lo) & (e2 - e1 < hi)
        if m.any():
            print(f"[{lo:4d}, {hi:4d}) | {m.sum():6d} | {np.mean(e3[m] - e2[m]):+16.2f} | "
                  f"{np.mean(p3[m] - e2[m]):+17.2f} | {np.mean(e2[m] - p2[m]):+26.2f}")


if __name__ == "__main__":
    main()
