"""Time per freeze-thaw step of FinetuneWorker against a bare timm training loop.

Both train the same model (random weights) on the same cached images with the same batch size, optimizer and
number of epochs; each "step" is ``--epochs-per-step`` epochs followed by a validation pass. The worker's
step also builds or restores the model, reseeds, and writes checkpoints; the baselines keep the model in
memory:

* ``bare_tensors``: the images pre-normalised once into one tensor (no per-batch transforms) -- the floor;
* ``bare_transforms``: the same timm train/eval transforms and loader as the worker.

The dataset is scikit-learn's digits upscaled to 32 px and written as PNGs through
``examples/make_dataset.py``.

    python benchmarks/bench_step.py [--model mobilenetv3_small_050.lamb_in1k] [--per-class 30] [--steps 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import timm
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from qtt_cli.data import build_cache, discover, eval_transform, make_loader, train_transform  # noqa: E402
from qtt_cli.hub import parse_weights, preprocessing_for  # noqa: E402
from qtt_cli.space.config import PipelineConfig  # noqa: E402
from qtt_cli.worker import FinetuneWorker  # noqa: E402


def make_digits(out: Path, per_class: int) -> Path:
    spec = importlib.util.spec_from_file_location("_make_dataset", REPO / "examples" / "make_dataset.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.make_dataset("digits", out, layout="flat", per_class=per_class, seed=0)
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bare_loop(model: nn.Module, train, val, config: PipelineConfig, device: torch.device, steps: int,
              epochs_per_step: int) -> list[float]:
    """A minimal timm loop; ``train``/``val`` are iterables of (x, y) batches. Returns seconds per step."""
    model.to(device)
    optimizer = timm.optim.create_optimizer_v2(model, opt=config.opt, lr=config.lr,
                                               weight_decay=config.weight_decay, betas=config.betas)
    loss_fn = nn.CrossEntropyLoss()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        for _ in range(epochs_per_step):
            model.train()
            for x, y in train:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                loss = loss_fn(model(x), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            model.eval()
            correct = 0
            with torch.inference_mode():
                for x, y in val:
                    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                    correct += int((model(x).argmax(1) == y).sum())
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def tensor_batches(images, transform, batch_size: int, shuffle: bool, seed: int):
    x = torch.stack([transform(images.image(i)) for i in range(len(images))])
    y = torch.as_tensor(images.labels)
    dataset = torch.utils.data.TensorDataset(x, y)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle,
                                       generator=torch.Generator().manual_seed(seed))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mobilenetv3_small_050.lamb_in1k")
    parser.add_argument("--per-class", type=int, default=30, help="images per digit class (10 classes)")
    parser.add_argument("--side", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--epochs-per-step", type=int, default=1)
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    config = PipelineConfig(model=args.model, batch_size=args.batch_size, opt="adamw", lr=1e-3,
                            sched="cosine")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache = build_cache(discover(make_digits(tmp / "digits", args.per_class)), tmp / "cache", args.side)
        max_epochs = args.steps * args.epochs_per_step
        worker = FinetuneWorker(cache, parse_weights("random"), tmp / "ckpt", max_epochs=max_epochs,
                                max_input_size=args.side, device=str(device))
        worker_times, cost_times = [], []
        for s in range(args.steps):
            start = s * args.epochs_per_step
            t0 = time.perf_counter()
            result = worker.step("bench", config, start, start + args.epochs_per_step)
            worker_times.append(time.perf_counter() - t0)
            if result.status != "ok":
                raise SystemExit(f"worker step failed: {result.status} {result.error}")
            cost_times.append(sum(e.cost_s for e in result.epochs))

        num_classes = len(cache.classes)
        model = timm.create_model(args.model, pretrained=False, num_classes=num_classes)
        pre = preprocessing_for(model, args.side)
        g = torch.Generator().manual_seed(0)
        train = make_loader(cache.train, train_transform(pre, config), args.batch_size, shuffle=True,
                            generator=g)
        val = make_loader(cache.val, eval_transform(pre), args.batch_size, shuffle=False, generator=None)
        bare_transforms = bare_loop(model, train, val, config, device, args.steps, args.epochs_per_step)

        model = timm.create_model(args.model, pretrained=False, num_classes=num_classes)
        train_t = tensor_batches(cache.train, eval_transform(pre), args.batch_size, True, 0)
        val_t = tensor_batches(cache.val, eval_transform(pre), args.batch_size, False, 0)
        bare_tensors = bare_loop(model, train_t, val_t, config, device, args.steps, args.epochs_per_step)

    rows = {
        "worker_step": worker_times,
        "worker_epoch_cost": cost_times,
        "bare_transforms": bare_transforms,
        "bare_tensors": bare_tensors,
    }
    print(f"{args.model}, {len(cache.train)} train / {len(cache.val)} val images at {args.side} px, "
          f"batch {args.batch_size}, {args.epochs_per_step} epoch(s) per step, {args.steps} steps, {device}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'what':<20} {'median s/step':>14} {'steps (s)':>30}")
    for name, times in rows.items():
        print(f"{name:<20} {statistics.median(times):>14.3f} {' '.join(f'{t:.3f}' for t in times):>30}")
    ratio = statistics.median(worker_times) / statistics.median(bare_transforms)
    print(f"worker / bare_transforms: {ratio:.2f}x; "
          f"worker / bare_tensors: {statistics.median(worker_times) / statistics.median(bare_tensors):.2f}x")
    print(json.dumps({"bench": "step", "model": args.model, "device": str(device),
                      "n_train": len(cache.train),
                      "batch_size": args.batch_size, "epochs_per_step": args.epochs_per_step,
                      **{f"{k}_median_s": round(statistics.median(v), 4) for k, v in rows.items()},
                      "worker_over_bare_transforms": round(ratio, 3)}))


if __name__ == "__main__":
    main()
