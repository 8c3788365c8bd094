"""Pretrained vs random weights through a whole `qtt tune` search at the same budget (issue 12).

Two `qtt tune` runs on one dataset, side by side (one torch thread each, so that load from other jobs hits
both alike): the EfficientNet-Lite hub (``examples/hub-lite.yaml``) with the ImageNet weights written by
``examples/prepare_pretrained.py``, and the same hub, space, seed and budget with ``--weights random``. Reported
per run: steps, pipelines, the best validation top-1, the test top-1 of that pipeline's kept weights
(``qtt leaderboard --test``), and the search time each needed to reach the random run's final best; a PNG
plots both best-so-far curves against time.

    python examples/make_dataset.py fashion-mnist data/fmnist --layout split --per-class 150
    python examples/prepare_pretrained.py weights/
    python benchmarks/bench_pretrained_tune.py data/fmnist --weights weights/ --budget 15m --out runs/pt-fmnist

``--plot-only`` skips the runs and reports on existing ``OUT/pretrained`` and ``OUT/random`` run folders.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from qtt_cli.report.run_data import load_run, steps_table  # noqa: E402

QTT = [sys.executable, "-m", "qtt_cli"]
RUNS = ("pretrained", "random")


def tune_both(args: argparse.Namespace) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = []
    for name in RUNS:
        weights = str(args.weights) if name == "pretrained" else "random"
        cmd = [*QTT, "tune", str(args.data), "--hub", str(REPO / "examples/hub-lite.yaml"), "--weights", weights,
               "--max-input-size", str(args.side), "--budget", args.budget, "--max-epochs", str(args.max_epochs),
               "--space", str(args.space), "--seed", str(args.seed), "--out", str(args.out / name), "--quiet"]
        procs.append(subprocess.Popen(cmd, env=env))
    if any(p.wait() != 0 for p in procs):
        raise SystemExit("a qtt tune run failed; see its output above")


def summarize(args: argparse.Namespace) -> dict:
    figures = {}
    for name in RUNS:
        run = args.out / name
        board = json.loads(subprocess.run(
            [*QTT, "leaderboard", str(run), "--json", "--top", "1", "--test", str(args.data / "test")],
            check=True, capture_output=True, text=True).stdout)[0]  # fmt: skip
        steps = steps_table(load_run(run).history)
        figures[name] = {"steps": len(steps), "pipelines": int(steps["pipeline_id"].nunique()),
                         "best_val_top1": float(board["best_val_top1"]), "test_top1": float(board["test_top1"]),
                         "best_model": board["model"], "time_s": steps["time_s"].tolist(),
                         "best_so_far": steps["best_so_far"].tolist()}  # fmt: skip
    target = figures["random"]["best_val_top1"]
    for f in figures.values():
        f["time_to_random_final_s"] = next((t for t, b in zip(f["time_s"], f["best_so_far"], strict=True)
                                            if b >= target), None)  # fmt: skip
    return figures


def plot(figures: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.4), constrained_layout=True)
    for name, style in zip(RUNS, ({"color": "#0072B2", "linestyle": "-"}, {"color": "#D55E00", "linestyle": "--"}),
                           strict=True):  # fmt: skip
        f = figures[name]
        ax.step([0.0, *[t / 60 for t in f["time_s"]]], [float("nan"), *f["best_so_far"]], where="post",
                linewidth=2, label=f"{name} weights ({f['best_val_top1']:.1f} %)", **style)
    ax.set_xlabel("search time used by the steps (min)")
    ax.set_ylabel("best validation top-1 so far (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.set_xlim(left=0)
    ax.legend(loc="upper left", fontsize=8)
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="an image folder with train/, val/ and test/")
    parser.add_argument("--weights", type=Path, help="folder written by examples/prepare_pretrained.py")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--budget", default="15m")
    parser.add_argument("--side", type=int, default=64)
    parser.add_argument("--max-epochs", type=int, default=5)
    parser.add_argument("--space", type=Path, default=REPO / "examples/space-lite-cpu.yaml")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot-only", action="store_true")
    parser.add_argument("--png", type=Path, default=None, help="default OUT/pretrained-vs-random.png")
    args = parser.parse_args(argv)
    if not args.plot_only:
        if args.weights is None:
            parser.error("--weights is needed to run the searches")
        tune_both(args)
    figures = summarize(args)
    png = args.png or args.out / "pretrained-vs-random.png"
    plot(figures, png, f"{args.data.name}: EfficientNet-Lite hub, {args.side} px, same budget and seed")
    for name, f in figures.items():
        reach = f["time_to_random_final_s"]
        print(f"{name:>10}: {f['steps']} steps, {f['pipelines']} pipelines, best val {f['best_val_top1']:.1f} %, "
              f"test {f['test_top1']:.1f} % ({f['best_model']}); reached random's final best after "
              f"{'-' if reach is None else f'{reach / 60:.1f} min'}")
    print(json.dumps({k: {n: v for n, v in f.items() if n not in ("time_s", "best_so_far")}
                      for k, f in figures.items()}))  # fmt: skip
    print(f"plot: {png}")


if __name__ == "__main__":
    main()
