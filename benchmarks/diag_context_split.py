"""Where do the priors' errors come from: fresh or continued predictions, with or without the run's context?

``Surrogate.evaluate`` scores next-epoch predictions on random cuts of held-out curves with the GP conditioned
on all the cuts at once (hundreds of curves of the same dataset), more than a search has in its first hours.
This script scores the same cuts twice, with that context and with none (the learnt prior mean alone, the
situation early in a search), split into fresh (nothing recorded yet) and continued predictions.

    python benchmarks/diag_context_split.py PLK,PLT_NET,RESISC metadata/quicktune OTHER/PRIORS
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

META_DATASET = Path(__file__).resolve().parents[2] / "shared" / "data" / "quicktune-extended"


def main() -> None:
    from qtt_cli.metadataset import load_meta_dataset, without_degenerate
    from qtt_cli.surrogate import Surrogate
    from qtt_cli.surrogate.surrogate import _cut, _random_cuts

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", help="comma-separated held-out datasets")
    parser.add_argument("priors", nargs="+", type=Path)
    parser.add_argument("--meta-dataset", type=Path, default=META_DATASET)
    args = parser.parse_args()
    sets = [without_degenerate(cs) for cs in load_meta_dataset(args.meta_dataset, datasets=args.datasets.split(","))]
    for path in args.priors:
        model = Surrogate.load(path)
        for context in (int(model.hyper["max_context"]), 0):
            model.hyper["max_context"] = context
            parts: dict[str, list[np.ndarray]] = {"fresh": [], "continued": []}
            for cs in sets:
                rows, cuts = _random_cuts(cs, np.random.default_rng(0), 256)  # Surrogate.evaluate's cuts
                pred = model.predict(_cut(cs, rows, cuts), rows, cuts + 1, cuts, observation_noise=True)
                y = np.array([cs.curves[r][k] for r, k in zip(rows, cuts, strict=True)])
                for name, mask in (("fresh", cuts == 0), ("continued", cuts > 0)):
                    parts[name].append(np.c_[y[mask], pred.mean[mask], pred.std[mask]])
            cells = []
            for name, chunks in parts.items():
                y, mu, sd = np.concatenate(chunks).T / 100.0
                nll = np.mean(0.5 * np.log(2 * np.pi * sd**2) + (y - mu) ** 2 / (2 * sd**2))
                cells.append(f"{name} ({len(y)}): error {100 * np.mean(np.abs(y - mu)):.2f}, "
                             f"bias {100 * np.mean(mu - y):+.2f}, NLL {nll:.3f}")  # fmt: skip
            print(f"{path} | context {context:3d} | " + " | ".join(cells))


if __name__ == "__main__":
    main()
