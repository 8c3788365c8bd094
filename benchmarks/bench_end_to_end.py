"""Real `qtt tune` runs, not replays: Quick-Tune vs ASHA vs random search at the same wall-clock budget.

Data: Zalando's Fashion-MNIST from Debian's ``dataset-fashion-mnist`` (``apt-get install -y
dataset-fashion-mnist``; a dataset nobody here made): ``--train-per-class`` images per class from its training
file, ``--val-per-class`` and ``--test-per-class`` from its test file (disjoint), written as PNG folders
(``train/``, ``val/``, ``test/``). Each seed runs the three optimizers **side by side** (three processes at once,
one torch thread each), so that machine noise hits them alike; each gets ``--budget`` seconds of search
(dataset decoding is not counted, as in `qtt tune`), the ``tiny`` hub, 32 px inputs, ``--weights random``
unless given (this machine has no internet for pretrained weights).

Reported per optimizer and seed: the best validation top-1 over time (from the rows of ``results.parquet``,
time = seconds of search when the epoch was recorded), the test top-1 of the final best pipeline (its kept
weights, ``qtt leaderboard --test``), and the time Quick-Tune and ASHA need to reach random search's final
best validation accuracy (the issue's goal: Quick-Tune within half the budget).

    python benchmarks/bench_end_to_end.py [--budget 480] [--seeds 2] [--first-seed 0] [--out DIR] [--docs docs]

Writes ``OUT/summary.json``, ``OUT/curves.csv`` and, with ``--docs``, ``DOCS/bench-end-to-end.md`` (table) and
``DOCS/bench-end-to-end.png`` (best validation top-1 vs time).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
FASHION = Path("/usr/share/datasets/fashion-mnist")
OPTIMIZERS = ("quicktune", "asha", "random")
LABELS = {"quicktune": "Quick-Tune", "asha": "ASHA (η = 3)", "random": "Random search"}


def read_idx(path: Path, header: int) -> np.ndarray:
    if not path.is_file():
        raise SystemExit(f"{path} not found: apt-get install -y dataset-fashion-mnist")
    with gzip.open(path, "rb") as fh:
        return np.frombuffer(fh.read(), dtype=np.uint8, offset=header)


def write_dataset(out: Path, train_per_class: int, val_per_class: int, test_per_class: int, seed: int = 0) -> dict:
    """PNG folders out/{train,val,test}/<class>/ drawn per class with ``seed`` (train from the training file,
    val and test disjoint from the test file)."""
    from PIL import Image

    if (out / "done.json").is_file():
        return json.loads((out / "done.json").read_text())
    rng = np.random.default_rng(seed)
    sources = {
        "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
        "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
    }
    arrays = {
        key: (read_idx(FASHION / img, 16).reshape(-1, 28, 28), read_idx(FASHION / lab, 8))
        for key, (img, lab) in sources.items()
    }
    picks: dict[str, list[tuple[np.ndarray, int]]] = {"train": [], "val": [], "test": []}
    for c in range(10):
        train_idx = rng.permutation(np.flatnonzero(arrays["train"][1] == c))[:train_per_class]
        picks["train"] += [(arrays["train"][0][i], c) for i in train_idx]
        held = rng.permutation(np.flatnonzero(arrays["test"][1] == c))
        picks["val"] += [(arrays["test"][0][i], c) for i in held[:val_per_class]]
        picks["test"] += [(arrays["test"][0][i], c) for i in held[val_per_class : val_per_class + test_per_class]]
    counts = {}
    for split, items in picks.items():
        for i, (image, label) in enumerate(items):
            folder = out / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{i:05d}.png")
        counts[split] = len(items)
    (out / "done.json").write_text(json.dumps(counts))
    return counts


def tune_side_by_side(
    data: Path, out: Path, arms: dict[str, list[str]], budget_s: int, seed: int, weights: str, max_epochs: int
) -> dict[str, Path]:
    """One `qtt tune` per arm (label -> its own options, e.g. ``--optimizer asha``), all at once, one thread
    each, the same data, budget, hub and seed; returns their run directories (``OUT/LABEL-seedS``)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    qtt = [sys.executable, "-m", "qtt_cli"] if not (Path(sys.executable).parent / "qtt").exists() else [
        str(Path(sys.executable).parent / "qtt")
    ]  # fmt: skip
    procs, runs = {}, {}
    for label, options in arms.items():
        run = out / f"{label}-seed{seed}"
        runs[label] = run
        cmd = [*qtt, "tune", str(data), "--out", str(run), "--overwrite", "--budget", str(budget_s), *options,
               "--hub", "tiny", "--weights", weights, "--max-input-size", "32", "--max-epochs", str(max_epochs),
               "--seed", str(seed), "--quiet", "--no-report", "--json"]  # fmt: skip
        log = open(out / f"{label}-seed{seed}.log", "w")  # noqa: SIM115 - closed when the process ends
        procs[label] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log)
    for label, (proc, log) in procs.items():
        code = proc.wait()
        log.close()
        if code not in (0, 3):
            raise SystemExit(f"{label} seed {seed} failed with exit code {code}: see {out / f'{label}-seed{seed}.log'}")
    return runs


def run_side_by_side(data: Path, out: Path, budget_s: int, seed: int, weights: str, max_epochs: int) -> dict:
    """The three optimizers at once, one thread each; returns their run directories."""
    arms = {opt: ["--optimizer", opt] for opt in OPTIMIZERS}
    return tune_side_by_side(data, out, arms, budget_s, seed, weights, max_epochs)


def best_over_time(run: Path) -> pd.DataFrame:
    """Best validation top-1 after each recorded epoch, against seconds of search.

    A row's search time is its wall time minus the search start, the start being the end of the first step
    minus that step's recorded seconds (cost_s + overhead_s): decoding and model downloads are not counted.
    """
    rows = pd.read_parquet(run / "results.parquet")
    rows = rows[rows["val_top1"].notna()].sort_values("wall_time")
    spent = rows["cost_s"].fillna(0) + (rows["overhead_s"].fillna(0) if "overhead_s" in rows else 0)
    first_step = rows["step"] == rows["step"].iloc[0]
    start = rows["wall_time"].iloc[0] - pd.to_timedelta(float(spent[first_step].sum()), unit="s")
    t = (rows["wall_time"] - start).dt.total_seconds().to_numpy()
    return pd.DataFrame({"t_s": t, "best_val": np.maximum.accumulate(rows["val_top1"].to_numpy())})


def final_test_top1(run: Path, test_dir: Path) -> float | None:
    """Test top-1 of the final best pipeline's kept weights (``qtt leaderboard --test``)."""
    from qtt_cli.export import score_on_folder
    from qtt_cli.report import leaderboard

    board = leaderboard(run, top=1)
    if board.empty:
        return None
    pid = str(board.iloc[0]["pipeline_id"])
    value = score_on_folder(run, test_dir, [pid]).get(pid)
    return None if value is None or pd.isna(value) else float(value)


def time_to_reach(curve: pd.DataFrame, target: float) -> float | None:
    hit = curve[curve["best_val"] >= target]
    return float(hit["t_s"].iloc[0]) if len(hit) else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=int, default=480, help="seconds of search per optimizer and seed")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds F .. F+N-1 (replications)")
    parser.add_argument("--train-per-class", type=int, default=200)
    parser.add_argument("--val-per-class", type=int, default=100)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--max-epochs", type=int, default=20)
    parser.add_argument("--weights", default="random")
    parser.add_argument("--out", type=Path, default=REPO / "bench-out" / "end-to-end")
    parser.add_argument("--docs", type=Path, default=None, help="write the table and the plot here")
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    data = args.out / "fashion-mnist"
    counts = write_dataset(data, args.train_per_class, args.val_per_class, args.test_per_class)
    curves, records = [], []
    started = time.time()
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        runs = run_side_by_side(data / ".", args.out, args.budget, seed, args.weights, args.max_epochs)
        per_opt = {opt: best_over_time(run) for opt, run in runs.items()}
        target = float(per_opt["random"]["best_val"].iloc[-1])
        for opt, curve in per_opt.items():
            curves.append(curve.assign(optimizer=opt, seed=seed))
            records.append({
                "optimizer": opt, "seed": seed, "final_val_top1": float(curve["best_val"].iloc[-1]),
                "test_top1": final_test_top1(runs[opt], data / "test"),
                "epochs_recorded": len(curve), "time_to_random_final_s": time_to_reach(curve, target),
                "random_final_val_top1": target,
            })  # fmt: skip
    table = pd.DataFrame(records)
    all_curves = pd.concat(curves, ignore_index=True)
    all_curves.to_csv(args.out / "curves.csv", index=False)
    summary = {"budget_s": args.budget, "seeds": args.seeds, "first_seed": args.first_seed, "images": counts,
               "weights": args.weights, "max_epochs": args.max_epochs, "wall_s": round(time.time() - started, 1),
               "cpu_count": os.cpu_count(), "runs": records}  # fmt: skip
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(table.to_string(index=False))
    print(json.dumps(summary))
    if args.docs:
        write_docs(table, all_curves, args, counts)


def _cell(value, fmt: str) -> str:
    return "—" if value is None or pd.isna(value) else fmt.format(value)


def write_docs(table: pd.DataFrame, curves: pd.DataFrame, args, counts: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    args.docs.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(9, 4))
    colors = {"quicktune": "tab:blue", "asha": "tab:orange", "random": "tab:gray"}
    for (opt, seed), c in curves.groupby(["optimizer", "seed"]):
        ax.step(c["t_s"] / 60, c["best_val"], where="post", color=colors[opt], alpha=0.9 if seed == 0 else 0.5,
                linestyle="-" if seed == 0 else "--", label=f"{LABELS[opt]} (seed {seed})")  # fmt: skip
    ax.axvline(args.budget / 60, color="k", lw=0.5)
    ax.set_xlabel("search time (min)")
    ax.set_ylabel("best validation top-1 (%)")
    ax.set_title(f"qtt tune on Fashion-MNIST ({counts['train']} train images, tiny hub, 32 px, {args.weights} weights)",
                 fontsize=9)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))  # outside: the curves fill the axes
    fig.tight_layout()
    fig.savefig(args.docs / "bench-end-to-end.png", dpi=120)

    lines = ["| optimizer | seed | best val top-1 (%) | test top-1 of the best (%) | epochs trained | "
             "time to random search's final val (s) |", "| --- | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for r in table.itertuples():
        reach = _cell(r.time_to_random_final_s, "{:.0f}")
        test = _cell(r.test_top1, "{:.2f}")
        lines.append(f"| {LABELS[r.optimizer]} | {r.seed} | {r.final_val_top1:.2f} | {test} | {r.epochs_recorded} "
                     f"| {reach} |")
    (args.docs / "bench-end-to-end.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
