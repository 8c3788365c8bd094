"""Time per freeze-thaw step of FinetuneWorker against a bare timm training loop, side by side.

All train the same model (random weights) on the same cached images with the same batch size, optimizer and
number of epochs; each "step" is ``--epochs-per-step`` epochs followed by a validation pass. The four are
advanced in lockstep, one step each per round (the order rotating every round), so that load from other
jobs hits them alike; ratios are taken between medians of the same run, over the continued steps (2..n:
step 1 builds the model, which the bare loops do before their clock starts).

* ``worker_warm``: a long-lived worker continuing the pipeline from memory (``qtt_cli/worker/warm.py``): it
  reseeds, trains, evaluates and writes its checkpoint (synchronously) after every epoch;
* ``worker_cold``: the same with ``warm=False``: every continued step rebuilds the model and restores it
  from the checkpoint (what every step cost before warm runs);
* ``bare_tensors``: the images pre-normalised once into one tensor (no per-batch transforms) -- the floor;
* ``bare_transforms``: the same timm train/eval transforms and loader as the worker.

For the workers, ``epoch`` is the epochs' own ``cost_s`` (train + eval) and ``overhead`` the rest of the
step (build or restore, checkpoint writes).

The dataset is scikit-learn's digits upscaled to 32 px and written as PNGs through
``examples/make_dataset.py``.

    python benchmarks/bench_step.py [--model mobilenetv3_small_050.lamb_in1k] [--per-class 30] [--steps 6]
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


class BareLoop:
    """A minimal timm loop; ``train``/``val`` are iterables of (x, y) batches. ``step()`` returns its seconds."""

    def __init__(self, model: nn.Module, train, val, config: PipelineConfig, device: torch.device,
                 epochs_per_step: int) -> None:
        self.model, self.train, self.val, self.device = model.to(device), train, val, device
        self.optimizer = timm.optim.create_optimizer_v2(model, opt=config.opt, lr=config.lr,
                                                        weight_decay=config.weight_decay, betas=config.betas)
        self.loss_fn = nn.CrossEntropyLoss()
        self.epochs_per_step = epochs_per_step

    def step(self) -> float:
        model, device = self.model, self.device
        t0 = time.perf_counter()
        for _ in range(self.epochs_per_step):
            model.train()
            for x, y in self.train:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                loss = self.loss_fn(model(x), y)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
            model.eval()
            correct = 0
            with torch.inference_mode():
                for x, y in self.val:
                    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                    correct += int((model(x).argmax(1) == y).sum())
        sync(self.device)
        return time.perf_counter() - t0


class WorkerLoop:
    """One pipeline continued step after step on a FinetuneWorker; ``step()`` returns its seconds and records
    the epochs' cost and the step's overhead."""

    def __init__(self, worker: FinetuneWorker, config: PipelineConfig, epochs_per_step: int) -> None:
        self.worker, self.config, self.epochs_per_step = worker, config, epochs_per_step
        self.done = 0
        self.epoch_s: list[float] = []
        self.overhead_s: list[float] = []

    def step(self) -> float:
        start = self.done
        t0 = time.perf_counter()
        result = self.worker.step("bench", self.config, start, start + self.epochs_per_step)
        sync(self.worker.device)
        seconds = time.perf_counter() - t0
        if result.status != "ok":
            raise SystemExit(f"worker step failed: {result.status} {result.error}")
        self.done += self.epochs_per_step
        self.epoch_s.append(sum(e.cost_s for e in result.epochs))
        self.overhead_s.append(result.overhead_s)
        return seconds


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
    parser.add_argument("--steps", type=int, default=6, help="steps per contender (the first builds the model)")
    parser.add_argument("--epochs-per-step", type=int, default=1)
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.steps < 2:
        parser.error("--steps must be >= 2 (the ratios are over the continued steps)")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    config = PipelineConfig(model=args.model, batch_size=args.batch_size, opt="adamw", lr=1e-3,
                            sched="cosine")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache = build_cache(discover(make_digits(tmp / "digits", args.per_class)), tmp / "cache", args.side)
        max_epochs = args.steps * args.epochs_per_step
        workers = {
            name: WorkerLoop(FinetuneWorker(cache, parse_weights("random"), tmp / name, max_epochs=max_epochs,
                                            max_input_size=args.side, device=str(device), warm=warm),
                             config, args.epochs_per_step)
            for name, warm in (("worker_warm", True), ("worker_cold", False))
        }
        num_classes = len(cache.classes)
        model = timm.create_model(args.model, pretrained=False, num_classes=num_classes)
        pre = preprocessing_for(model, args.side)
        g = torch.Generator().manual_seed(0)
        train = make_loader(cache.train, train_transform(pre, config), args.batch_size, shuffle=True,
                            generator=g)
        val = make_loader(cache.val, eval_transform(pre), args.batch_size, shuffle=False, generator=None)
        bare_transforms = BareLoop(model, train, val, config, device, args.epochs_per_step)
        model = timm.create_model(args.model, pretrained=False, num_classes=num_classes)
        train_t = tensor_batches(cache.train, eval_transform(pre), args.batch_size, True, 0)
        val_t = tensor_batches(cache.val, eval_transform(pre), args.batch_size, False, 0)
        bare_tensors = BareLoop(model, train_t, val_t, config, device, args.epochs_per_step)

        contenders = {**workers, "bare_transforms": bare_transforms, "bare_tensors": bare_tensors}
        times: dict[str, list[float]] = {name: [] for name in contenders}
        names = list(contenders)
        for s in range(args.steps):
            k = s % len(names)
            for name in names[k:] + names[:k]:  # rotate who goes first
                times[name].append(contenders[name].step())
        warm_hits = workers["worker_warm"].worker.warm.hits
        n_train, n_val = len(cache.train), len(cache.val)

    def med(values: list[float]) -> float:
        return statistics.median(values[1:])  # continued steps only

    print(f"{args.model}, {n_train} train / {n_val} val images at {args.side} px, batch {args.batch_size}, "
          f"{args.epochs_per_step} epoch(s) per step, {args.steps} steps each (interleaved), {device}, "
          f"{torch.get_num_threads()} threads; warm continuations: {warm_hits}")
    print(f"{'what':<18} {'first step s':>12} {'median s/step':>14} {'epoch s':>8} {'overhead s':>10}   "
          "continued steps (s)")
    for name, values in times.items():
        loop = workers.get(name)
        epoch = f"{med(loop.epoch_s):8.3f}" if loop else f"{'':8}"
        over = f"{med(loop.overhead_s):10.3f}" if loop else f"{'':10}"
        print(f"{name:<18} {values[0]:>12.3f} {med(values):>14.3f} {epoch} {over}   "
              f"{' '.join(f'{t:.3f}' for t in values[1:])}")
    base = med(times["bare_transforms"])
    ratios = {f"{name}_over_bare_transforms": round(med(times[name]) / base, 3) for name in workers}
    ratios.update({f"{name}_epoch_over_bare_transforms": round(med(loop.epoch_s) / base, 3)
                   for name, loop in workers.items()})
    ratios["bare_transforms_over_bare_tensors"] = round(base / med(times["bare_tensors"]), 3)
    print("; ".join(f"{k}: {v:.3f}x" for k, v in ratios.items()))
    print(json.dumps({"bench": "step", "model": args.model, "device": str(device), "n_train": n_train,
                      "batch_size": args.batch_size, "epochs_per_step": args.epochs_per_step, "steps": args.steps,
                      "warm_hits": warm_hits,
                      **{f"{k}_median_s": round(med(v), 4) for k, v in times.items()},
                      **{f"{k}_epoch_median_s": round(med(w.epoch_s), 4) for k, w in workers.items()},
                      **{f"{k}_overhead_median_s": round(med(w.overhead_s), 4) for k, w in workers.items()},
                      **ratios}))


if __name__ == "__main__":
    main()
