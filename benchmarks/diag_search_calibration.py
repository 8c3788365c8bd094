"""How well calibrated are Quick-Tune's predictions *inside a search*, where the acquisition uses them?

``Surrogate.evaluate`` measures calibration on random cuts of held-out curves; a search asks something
narrower: after a few dozen or hundred observations of one dataset, what will each candidate score at its
next epoch? A replayed search knows the answer for every candidate (the recorded curve), so at every
``--every``-th ask this script predicts all candidates, as ``ask`` does, and compares with the record.

Printed per phase of the search (asks 1-20, 21-100, 101+), for fresh candidates (not started) and continued
ones: the number of predictions, the std of z = (y - mu) / sigma with the latent sigma the acquisition uses
and with the observation's sigma, the 90 % coverage of the latter, the mean error (y - mu) in points, and the
rank correlation of predicted and recorded accuracy among one ask's candidates (averaged over asks).
Use development seeds only.

    python benchmarks/diag_search_calibration.py --priors runs/bench/priors --seeds 0 --drop-degenerate
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

META_DATASET = Path(__file__).resolve().parents[2] / "shared" / "data" / "quicktune-extended"
PHASES = ((1, 20), (21, 100), (101, 10**9))
Z90 = 1.6448536269514722


def collect(dataset: str, args: argparse.Namespace, seed: int) -> list[dict]:
    from qtt_cli.bench.replay import Replay
    from qtt_cli.bench.runner import assign_folds, make_optimizer
    from qtt_cli.metadataset import load_meta_dataset, without_degenerate
    from qtt_cli.optimizer import BudgetStatus
    from qtt_cli.surrogate import Surrogate

    names = [cs.name for cs in load_meta_dataset(args.meta_dataset)]
    fold = next(k for k, members in enumerate(assign_folds(names, 6)) if dataset in members)
    curveset = load_meta_dataset(args.meta_dataset, datasets=[dataset])[0]
    if args.drop_degenerate:
        curveset = without_degenerate(curveset)
    priors = Surrogate.load(Path(args.priors) / f"fold-{fold}")
    opt = make_optimizer(args.optimizer, curveset, priors=priors, seed=seed, delta_t=1)
    run = Replay(curveset, args.hours * 3600)
    records, ask = [], 0
    while not run.exhausted:
        pipelines = run.pipelines()
        s = opt.ask(pipelines, BudgetStatus(run.budget_s, run.used_s))
        if s is None:
            break
        ask += 1
        model = getattr(opt, "_model", None)
        if model is not None and ask % args.every == 0:
            seen, cands = opt.layout.build(pipelines, opt)
            latent = model.predict(seen, cands.rows, cands.targets, cands.epochs)
            noisy = model.predict(seen, cands.rows, cands.targets, cands.epochs, observation_noise=True)
            curves = opt.layout.curveset.curves
            truth = np.array([curves[r][t - 1] for r, t in zip(cands.rows, cands.targets, strict=True)])
            for i in range(len(cands.rows)):
                records.append({
                    "dataset": dataset, "seed": seed, "ask": ask, "fresh": bool(cands.epochs[i] == 0),
                    "y": float(truth[i]), "mu": float(latent.mean[i]), "sd_latent": float(latent.std[i]),
                    "sd_obs": float(noisy.std[i]),
                })  # fmt: skip
        run.step(s)
    return records


def summarise(records: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        phase = next(p for p in PHASES if p[0] <= r["ask"] <= p[1])
        groups[(phase, r["fresh"])].append(r)
    rows = []
    for (phase, fresh), items in sorted(groups.items()):
        y = np.array([r["y"] for r in items])
        mu = np.array([r["mu"] for r in items])
        z_lat = (y - mu) / np.array([r["sd_latent"] for r in items])
        z_obs = (y - mu) / np.array([r["sd_obs"] for r in items])
        rows.append({
            "asks": f"{phase[0]}-{phase[1] if phase[1] < 10**9 else ''}", "kind": "fresh" if fresh else "continued",
            "n": len(items), "z_std_latent": float(z_lat.std()), "z_std_obs": float(z_obs.std()),
            "coverage90_obs": float((np.abs(z_obs) <= Z90).mean()), "mean_error": float((y - mu).mean()),
            "mean_sd_latent": float(np.mean([r["sd_latent"] for r in items])),
            "rank_corr": _mean_rank_correlation(items),
        })  # fmt: skip
    return rows


def _mean_rank_correlation(items: list[dict]) -> float:
    """Spearman correlation of predicted and recorded accuracy among the candidates of one ask, averaged
    over the asks: does the search rank its candidates right, whatever the calibration?"""
    from scipy.stats import spearmanr

    asks: dict[tuple, list[dict]] = defaultdict(list)
    for r in items:
        asks[(r["dataset"], r["seed"], r["ask"])].append(r)
    correlations = []
    for group in asks.values():
        if len(group) >= 5:
            y, mu = ([r[k] for r in group] for k in ("y", "mu"))
            if np.std(y) > 0 and np.std(mu) > 0:
                correlations.append(float(spearmanr(y, mu)[0]))
    return float(np.mean(correlations)) if correlations else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--priors", required=True, help="a qtt bench run's priors folder (fold-K inside)")
    parser.add_argument("--datasets", default="", help="comma-separated (default: all)")
    parser.add_argument("--optimizer", default="quicktune")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--hours", type=float, default=16.0)
    parser.add_argument("--every", type=int, default=5, help="predict every N-th ask")
    parser.add_argument("--drop-degenerate", action="store_true")
    parser.add_argument("--meta-dataset", default=str(META_DATASET))
    parser.add_argument("--json", help="write every prediction here")
    args = parser.parse_args()

    import torch

    from qtt_cli.metadataset import load_meta_dataset

    torch.set_num_threads(1)
    datasets = args.datasets.split(",") if args.datasets else [cs.name for cs in load_meta_dataset(args.meta_dataset)]
    records = [r for d in datasets for seed in args.seeds for r in collect(d, args, seed)]
    rows = summarise(records)
    print(f"{'asks':>8} {'kind':>9} {'n':>6} {'z std lat':>9} {'z std obs':>9} {'cov90 obs':>9} {'mean err':>8} "
          f"{'sd lat':>6} {'rank r':>6}")  # fmt: skip
    for r in rows:
        print(f"{r['asks']:>8} {r['kind']:>9} {r['n']:6d} {r['z_std_latent']:9.2f} {r['z_std_obs']:9.2f} "
              f"{r['coverage90_obs']:9.2f} {r['mean_error']:8.2f} {r['mean_sd_latent']:6.2f} "
              f"{r['rank_corr']:6.2f}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": rows, "predictions": records}))


if __name__ == "__main__":
    main()
