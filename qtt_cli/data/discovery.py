"""Find the images of a dataset folder, check them, and split off a validation set.

Every mistake in a dataset folder is cheaper to report here, before a time budget starts, than as a
shape error in the first training epoch. So each rejected layout raises :class:`DatasetError` with one
line that says what was found and what layout qtt expects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})

# Names of the validation folder next to train/ (``valid/`` and ``validation/`` are common in the wild).
VAL_FOLDER_NAMES = ("val", "valid", "validation")

EXPECTED_LAYOUT = (
    "expected ROOT/<class>/<image> or ROOT/train/<class>/<image> "
    "(optionally ROOT/val/<class>/<image> and ROOT/test/<class>/<image>)"
)


class DatasetError(ValueError):
    """A dataset folder that qtt cannot train on as it is; the message says what to change."""


@dataclass(frozen=True)
class Sample:
    """One image file and the index of its class in ``DatasetSplits.classes``."""

    path: Path
    label: int


@dataclass(frozen=True)
class DatasetSplits:
    """The labelled files of a dataset; ``test`` is ``None`` when the folder has no ``test/``."""

    root: Path
    classes: list[str]
    train: list[Sample]
    val: list[Sample]
    test: list[Sample] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def is_image_file(path: Path) -> bool:
    """An image by extension (case-insensitive); hidden files (``.DS_Store``, ``._x.jpg``) are not."""
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()


def discover(root: Path, val_fraction: float = 0.2, seed: int = 0) -> DatasetSplits:
    """List the images of ``root`` by class and split off validation images when there is no ``val/``.

    Two layouts are accepted: ``root/<class>/*`` (class folders directly under the root), or
    ``root/train/<class>/*`` with optional ``root/val/<class>/*`` and ``root/test/<class>/*``.
    Classes are sorted by name and numbered in that order, so labels do not depend on the file system.

    Args:
        root: The dataset folder.
        val_fraction: Fraction of each class moved to validation when the folder has no ``val/``;
            stratified so that every class is validated.
        seed: Seed of that split, so that a resumed run sees the same validation set.

    Raises:
        DatasetError: For a missing folder, no or a single class, empty classes, class sets of
            train/val/test that differ, or a ``val_fraction`` that cannot validate every class.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetError(f"dataset folder {root} does not exist; {EXPECTED_LAYOUT}")
    if not root.is_dir():
        raise DatasetError(f"dataset path {root} is not a directory; {EXPECTED_LAYOUT}")

    if (root / "train").is_dir():
        layout = {name: root / name for name in ("train", "test") if (root / name).is_dir()}
        val_dirs = [root / name for name in VAL_FOLDER_NAMES if (root / name).is_dir()]
        if len(val_dirs) > 1:
            raise DatasetError(f"found {' and '.join(f'{d.name}/' for d in val_dirs)} in {root}; keep one "
                               "validation folder")
        if val_dirs:
            layout["val"] = val_dirs[0]
        where = {name: f"{folder.name}/ ({folder})" for name, folder in layout.items()}
    else:
        subdirs = {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
        if subdirs and subdirs <= {*VAL_FOLDER_NAMES, "test"}:
            present = " and ".join(f"{d}/" for d in sorted(subdirs))
            raise DatasetError(f"found {present} but no train/ in {root}; {EXPECTED_LAYOUT}")
        layout = {"train": root}
        where = {"train": f"the dataset folder ({root})"}
    found = {name: _scan_classes(folder, where[name]) for name, folder in layout.items()}
    train_by_class, val_by_class, test_by_class = (found.get(n) for n in ("train", "val", "test"))
    assert train_by_class is not None

    classes = sorted(train_by_class)
    if len(classes) == 1:
        raise DatasetError(
            f"found a single class folder {classes[0]!r} in {where['train']}; classification needs at least "
            f"two class folders; {EXPECTED_LAYOUT}"
        )
    for name, other in (("val", val_by_class), ("test", test_by_class)):
        if other is not None:
            _check_same_classes(classes, sorted(other), name)
    for name, by_class in found.items():
        _check_not_empty(by_class, where[name])

    if val_by_class is None:
        train_by_class, val_by_class = _stratified_split(train_by_class, val_fraction, seed)

    def samples(by_class: dict[str, list[Path]]) -> list[Sample]:
        return [Sample(path, label) for label, name in enumerate(classes) for path in by_class[name]]

    return DatasetSplits(
        root=root,
        classes=classes,
        train=samples(train_by_class),
        val=samples(val_by_class),
        test=samples(test_by_class) if test_by_class is not None else None,
    )


def _scan_classes(folder: Path, where: str) -> dict[str, list[Path]]:
    """Map each visible sub-folder of ``folder`` to its sorted image files; no sub-folder is an error."""
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        loose = sum(1 for p in folder.iterdir() if is_image_file(p))
        found = f"{loose} loose image file(s) and no class folders" if loose else "no class folders"
        raise DatasetError(f"found {found} in {where}; {EXPECTED_LAYOUT}")
    return {d.name: sorted(p for p in d.iterdir() if is_image_file(p)) for d in class_dirs}


def _check_not_empty(by_class: dict[str, list[Path]], where: str) -> None:
    empty = [name for name, files in by_class.items() if not files]
    if empty:
        exts = ", ".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))
        raise DatasetError(
            f"class folder(s) without images in {where}: {_names(empty)}; "
            f"add images ({exts}) or remove the folder(s)"
        )


def _check_same_classes(train: Sequence[str], other: Sequence[str], split: str) -> None:
    missing = sorted(set(train) - set(other))
    extra = sorted(set(other) - set(train))
    if not (missing or extra):
        return
    parts = []
    if missing:
        parts.append(f"in train/ but not in {split}/: {_names(missing)}")
    if extra:
        parts.append(f"in {split}/ but not in train/: {_names(extra)}")
    raise DatasetError(
        f"class folders of train/ and {split}/ differ ({'; '.join(parts)}); "
        f"both must hold the same class folders"
    )


def _stratified_split(
    by_class: dict[str, list[Path]], val_fraction: float, seed: int
) -> tuple[dict[str, list[Path]], dict[str, list[Path]]]:
    """Move ``round(val_fraction * n)`` images of each class to validation, at least one per class.

    Each class is shuffled by its own generator derived from ``seed`` and the class name, so adding a
    class does not reshuffle the others.
    """
    if not 0.0 < val_fraction < 1.0:
        raise DatasetError(f"val_fraction must be strictly between 0 and 1, got {val_fraction}")
    train: dict[str, list[Path]] = {}
    val: dict[str, list[Path]] = {}
    too_small = []
    for name, files in by_class.items():
        n_val = round(val_fraction * len(files))
        if n_val < 1 or n_val >= len(files):
            too_small.append(f"{name!r} ({len(files)} image(s))")
            continue
        rng = np.random.default_rng([seed, *name.encode()])
        order = rng.permutation(len(files))
        val[name] = sorted(files[i] for i in order[:n_val])
        train[name] = sorted(files[i] for i in order[n_val:])
    if too_small:
        raise DatasetError(
            f"val_fraction={val_fraction} cannot put at least one image of every class in validation and "
            f"keep one for training: {_names(too_small, quote=False)}; raise val_fraction, add images, "
            f"or provide a val/ folder next to train/"
        )
    return train, val


def _names(names: Sequence[str], *, limit: int = 10, quote: bool = True) -> str:
    shown = [repr(n) if quote else n for n in names[:limit]]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(shown) + more
