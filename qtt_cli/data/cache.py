"""The decode-once image cache.

A tuning run trains many pipelines for a few epochs each, so decoding every JPEG again in every epoch of
every pipeline would cost more than the small models it trains. Each image is therefore decoded once,
converted to RGB, resized (shorter side) and center-cropped to ``side`` x ``side``, and stored in one
uint8 ``.npy`` file per split that later runs map read-only from disk. The random crops, flips and
augmentations of training still happen per epoch, on these arrays.

Layout of ``cache_dir``: ``train.npy``, ``val.npy``, ``test.npy`` (``[N, side, side, 3]`` uint8),
``index.json`` (files, labels, original sizes and modes, the fingerprint of the dataset files) and
``skipped.csv`` (unreadable files and why). ``index.json`` is written last, so a cache without it is
incomplete and is rebuilt.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.format import open_memmap
from PIL import Image, ImageOps

from .discovery import DatasetError, DatasetSplits, Sample

CACHE_FORMAT = 1
INDEX_NAME = "index.json"
SKIPPED_NAME = "skipped.csv"

# Pillow modes without colour; a dataset whose originals are all of these has 1 channel (meta-feature).
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})

Progress = Callable[[str, int, int], None]
"""``progress(split, done, total)``, called from the building thread while a split is decoded."""


@dataclass(frozen=True)
class DecodedImage:
    """One decoded image and what the meta-features need to know about its original."""

    pixels: np.ndarray  # uint8 [side, side, 3]
    size: tuple[int, int]  # original (width, height)
    mode: str  # original Pillow mode


class CachedImages:
    """The cached images of one split, mapped read-only from their ``.npy`` file.

    Pickling keeps only the path (a DataLoader worker re-maps the file instead of copying the pixels).
    """

    def __init__(
        self,
        array_path: Path,
        labels: Sequence[int],
        files: Sequence[str],
        sizes: Sequence[Sequence[int]],
        modes: Sequence[str],
    ) -> None:
        self.array_path = Path(array_path)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.files = list(files)
        self.sizes = [tuple(s) for s in sizes]
        self.modes = list(modes)
        self._pixels = _load_array(self.array_path)
        if self._pixels.shape[0] != len(self.labels):
            raise DatasetError(
                f"cache file {self.array_path} holds {self._pixels.shape[0]} images but its index lists "
                f"{len(self.labels)}; delete the cache folder to rebuild it"
            )

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> np.ndarray:
        """Image ``i`` as a read-only uint8 ``[side, side, 3]`` array (a view of the mapped file)."""
        return self._pixels[i]

    @property
    def side(self) -> int:
        return int(self._pixels.shape[1])

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_pixels"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pixels = _load_array(self.array_path)

    def __repr__(self) -> str:
        return f"CachedImages({self.array_path.name}, n={len(self)}, side={self.side})"


@dataclass(frozen=True)
class ImageCache:
    """The decoded dataset: per-split images and labels, the class names and the skipped files."""

    root: Path
    classes: list[str]
    train: CachedImages
    val: CachedImages
    test: CachedImages | None
    side: int
    skipped: list[tuple[str, str]]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def build_cache(
    splits: DatasetSplits,
    cache_dir: Path,
    side: int,
    progress: Progress | None = None,
    *,
    num_threads: int | None = None,
) -> ImageCache:
    """Decode every image of ``splits`` once into ``cache_dir``, or reuse a complete cache of the same files.

    A cache is reused when its ``index.json`` has the same ``side`` and the same fingerprint (relative
    paths, labels, file sizes and modification times); anything else rebuilds it. Unreadable files are
    skipped and listed in ``cache_dir/skipped.csv``.

    Args:
        splits: The output of :func:`~qtt_cli.data.discover`.
        cache_dir: Folder of the cache; created if needed.
        side: Edge of the stored square images in pixels (small images are upscaled).
        progress: Optional ``progress(split, done, total)`` callback.
        num_threads: Decoding threads (Pillow releases the GIL while decoding); default: CPU count, at most 8.

    Raises:
        DatasetError: When a split has no readable image, or a class loses all its images of a split.
    """
    if side < 1:
        raise ValueError(f"side must be >= 1, got {side}")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    split_samples = {"train": splits.train, "val": splits.val, "test": splits.test}
    fingerprint = dataset_fingerprint(splits)

    index = _read_index(cache_dir)
    if not (index and index.get("side") == side and index.get("fingerprint") == fingerprint):
        index = _build(splits, split_samples, cache_dir, side, fingerprint, progress, num_threads)
    return _open(splits.root, cache_dir, index)


def open_cache(cache_dir: Path, root: Path | None = None) -> ImageCache:
    """Map a complete cache that :func:`build_cache` wrote, without the dataset's files: what a worker process
    or a machine of a cluster does, which sees the run directory but not necessarily the dataset.

    Raises:
        DatasetError: When ``cache_dir`` holds no complete cache.
    """
    cache_dir = Path(cache_dir)
    index = _read_index(cache_dir)
    if index is None:
        raise DatasetError(f"{cache_dir} holds no complete image cache; run `qtt tune` on the dataset first")
    return _open(Path(root) if root is not None else cache_dir, cache_dir, index)


def cache_is_current(splits: DatasetSplits, cache_dir: Path, side: int) -> bool:
    """Whether :func:`build_cache` would reuse the cache in ``cache_dir`` instead of decoding again."""
    index = _read_index(Path(cache_dir)) if Path(cache_dir).is_dir() else None
    return bool(index and index.get("side") == side and index.get("fingerprint") == dataset_fingerprint(splits))


def dataset_fingerprint(splits: DatasetSplits) -> str:
    """Hash of what the cache depends on: classes, and per file its split, path, label, size and mtime."""
    h = hashlib.sha256()
    h.update(json.dumps({"format": CACHE_FORMAT, "classes": splits.classes}).encode())
    for name, samples in (("train", splits.train), ("val", splits.val), ("test", splits.test)):
        for s in samples or ():
            try:
                st = s.path.stat()
                stamp = f"{st.st_size}:{st.st_mtime_ns}"
            except OSError:
                stamp = "missing"
            h.update(f"{name}\0{_relative(s.path, splits.root)}\0{s.label}\0{stamp}\n".encode())
    return h.hexdigest()


def decode_image(path: Path, side: int) -> DecodedImage:
    """Decode ``path`` to an RGB uint8 ``side`` x ``side`` array: shorter side resized, center-cropped.

    JPEGs are decoded at reduced scale (``Image.draft``) when they are much larger than ``side``, which
    is most of the decoding time saved on photo datasets. EXIF orientation is applied.
    """
    with Image.open(path) as img:
        size, mode = img.size, img.mode
        img.draft("RGB", (side, side))  # no-op for non-JPEG; keeps both edges >= side for JPEG
        img = ImageOps.exif_transpose(img)
        img = _to_rgb(img)
        w, h = img.size
        s = min(w, h)
        box = ((w - s) / 2, (h - s) / 2, (w + s) / 2, (h + s) / 2)
        img = img.resize(
            (side, side), Image.Resampling.BICUBIC, box=box, reducing_gap=None if s < 3 * side else 3.0
        )
        pixels = np.asarray(img, dtype=np.uint8)
    return DecodedImage(pixels=pixels, size=(int(size[0]), int(size[1])), mode=mode)


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB for every Pillow mode; 16-bit and float grayscale are rescaled instead of clipped to 255."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        if img.mode == "F" and top <= 1.0:
            top = 1.0
        arr = np.clip(arr / top * 255.0, 0, 255).round().astype(np.uint8)
        img = Image.fromarray(arr)  # 2-D uint8 -> mode "L"
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img.convert("RGB") if img.mode != "RGB" else img


def _build(
    splits: DatasetSplits,
    split_samples: dict[str, list[Sample] | None],
    cache_dir: Path,
    side: int,
    fingerprint: str,
    progress: Progress | None,
    num_threads: int | None,
) -> dict[str, Any]:
    # The old index goes first: from here on the folder is an incomplete cache until the new one is written.
    (cache_dir / INDEX_NAME).unlink(missing_ok=True)
    threads = num_threads or min(8, os.cpu_count() or 1)
    index: dict[str, Any] = {
        "format": CACHE_FORMAT,
        "side": side,
        "fingerprint": fingerprint,
        "classes": splits.classes,
        "splits": {},
        "skipped": [],
    }
    skipped: list[tuple[str, str]] = []
    problems: list[str] = []
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="qtt-decode") if threads > 1 else None
    try:
        for name, samples in split_samples.items():
            if samples is None:
                (cache_dir / f"{name}.npy").unlink(missing_ok=True)  # of an earlier dataset with this split
                continue
            entry, split_skipped = _build_split(name, samples, splits.root, cache_dir, side, pool, progress)
            skipped += split_skipped
            problems += _lost_classes(name, samples, entry["labels"], splits.classes)
            index["splits"][name] = entry
    finally:
        if pool is not None:
            pool.shutdown()

    _write_skipped(cache_dir / SKIPPED_NAME, skipped)
    if problems:
        where = f"; the unreadable files are listed in {cache_dir / SKIPPED_NAME}" if skipped else ""
        raise DatasetError("; ".join(problems) + where)
    index["skipped"] = [list(s) for s in skipped]
    _atomic_write_text(cache_dir / INDEX_NAME, json.dumps(index))
    return index


def _build_split(
    name: str,
    samples: list[Sample],
    root: Path,
    cache_dir: Path,
    side: int,
    pool: ThreadPoolExecutor | None,
    progress: Progress | None,
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Decode one split into ``<name>.npy``; returns its index entry and its skipped files."""
    final = cache_dir / f"{name}.npy"
    tmp = cache_dir / f".{name}.{os.getpid()}.tmp.npy"
    small = cache_dir / f".{name}.{os.getpid()}.tmp-kept.npy"
    out = open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(samples), side, side, 3))
    _reserve(tmp)
    kept: list[int] = []
    sizes: list[list[int]] = []
    modes: list[str] = []
    skipped: list[tuple[str, str]] = []
    chunk = 256  # bounded in-flight work: decoded images wait in memory only until copied into the memmap
    try:
        for start in range(0, len(samples), chunk):
            batch = samples[start : start + chunk]
            decode = pool.map if pool is not None else map
            results = decode(lambda s: _try_decode(s.path, side), batch)
            for i, (s, result) in enumerate(zip(batch, results, strict=True), start=start):
                if isinstance(result, str):
                    skipped.append((str(s.path), result))
                    continue
                out[len(kept)] = result.pixels
                kept.append(i)
                sizes.append(list(result.size))
                modes.append(result.mode)
            if progress is not None:
                progress(name, min(start + chunk, len(samples)), len(samples))
        out.flush()
        del out
        if len(kept) < len(samples):
            _shrink(tmp, small, len(kept))
            os.replace(small, tmp)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
        small.unlink(missing_ok=True)
    entry = {
        "array": final.name,
        "files": [_relative(samples[i].path, root) for i in kept],
        "labels": [samples[i].label for i in kept],
        "sizes": sizes,
        "modes": modes,
    }
    return entry, skipped


def _reserve(path: Path) -> None:
    """Allocate the whole (sparse) file now: on a full disk, writing pages of a memory map kills the process
    with SIGBUS, while this raises OSError(ENOSPC), which the caller can report."""
    with open(path, "r+b") as fh:
        size = os.fstat(fh.fileno()).st_size
        try:
            os.posix_fallocate(fh.fileno(), 0, size)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise
            # file systems without fallocate (EOPNOTSUPP): keep the sparse file


def _try_decode(path: Path, side: int) -> DecodedImage | str:
    """The decoded image, or the reason it could not be decoded (any decoder error means "skip")."""
    try:
        return decode_image(path, side)
    except Exception as e:  # noqa: BLE001 -- corrupt files raise anything from OSError to SyntaxError
        return f"{type(e).__name__}: {e}"


def _shrink(src: Path, dst: Path, n: int) -> None:
    """Copy the first ``n`` images of ``src`` into a new ``[n, ...]`` file (only when files were skipped)."""
    full = np.load(src, mmap_mode="r", allow_pickle=False)
    small = open_memmap(dst, mode="w+", dtype=np.uint8, shape=(n, *full.shape[1:]))
    _reserve(dst)
    small[:] = full[:n]
    small.flush()
    del small, full


def _lost_classes(split: str, samples: list[Sample], kept_labels: list[int], classes: list[str]) -> list[str]:
    if samples and not kept_labels:
        return [f"no readable image in the {split} split ({len(samples)} file(s) could not be decoded)"]
    lost = sorted({s.label for s in samples} - set(kept_labels))
    if lost:
        return [
            f"class(es) {', '.join(repr(classes[c]) for c in lost)} lost all their {split} images to "
            f"unreadable files"
        ]
    return []


def _open(root: Path, cache_dir: Path, index: dict[str, Any]) -> ImageCache:
    def split(name: str) -> CachedImages | None:
        entry = index["splits"].get(name)
        if entry is None:
            return None
        return CachedImages(
            cache_dir / entry["array"], entry["labels"], entry["files"], entry["sizes"], entry["modes"]
        )

    train, val = split("train"), split("val")
    assert train is not None and val is not None
    return ImageCache(
        root=root,
        classes=list(index["classes"]),
        train=train,
        val=val,
        test=split("test"),
        side=int(index["side"]),
        skipped=[(str(p), str(r)) for p, r in index["skipped"]],
    )


def _read_index(cache_dir: Path) -> dict[str, Any] | None:
    """The index of a complete cache of the current format, else ``None`` (rebuild)."""
    try:
        index = json.loads((cache_dir / INDEX_NAME).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(index, dict) or index.get("format") != CACHE_FORMAT:
        return None
    arrays = [cache_dir / e.get("array", "") for e in index.get("splits", {}).values()]
    if not arrays or not all(p.is_file() for p in arrays):
        return None
    return index


def _load_array(path: Path) -> np.ndarray:
    return np.load(path, mmap_mode="r", allow_pickle=False)


def _write_skipped(path: Path, skipped: list[tuple[str, str]]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "reason"])
        writer.writerows(skipped)
    os.replace(tmp, path)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` in POSIX form (string prefix test: pathlib's is slow for 100k files)."""
    text, prefix = str(path), str(root).rstrip(os.sep) + os.sep
    if text.startswith(prefix):
        return Path(text[len(prefix) :]).as_posix() if os.sep != "/" else text[len(prefix) :]
    return text
