"""What a run's results are valid for: the classes and the files of each split.

A run's pipelines are trained on one set of classes and images; resuming them on a changed folder (a class
added, images added or removed) would mix results of different tasks in one store and export a model whose
head does not match the class list. The identity is taken from the file listing only (relative path, class
and size of every file, no pixel is read), so it is cheap enough to check before every resume, and unlike the
cache's fingerprint it ignores modification times: a copied dataset is still the same dataset.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from .discovery import DatasetSplits

_SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class DatasetIdentity:
    sha256: str
    classes: list[str]
    counts: dict[str, int]  # images per split (test: 0 when absent)

    @classmethod
    def of(cls, splits: DatasetSplits) -> DatasetIdentity:
        h = hashlib.sha256(json.dumps({"classes": splits.classes}).encode())
        counts = {}
        for name in _SPLITS:
            samples = getattr(splits, name) or []
            counts[name] = len(samples)
            for sample in samples:
                try:
                    size = str(sample.path.stat().st_size)
                except OSError:
                    size = "missing"
                relative = sample.path.relative_to(splits.root).as_posix() if sample.path.is_relative_to(
                    splits.root) else sample.path.as_posix()
                h.update(f"{name}\0{relative}\0{sample.label}\0{size}\n".encode())
        return cls(h.hexdigest(), list(splits.classes), counts)

    def to_json(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "classes": self.classes, "counts": self.counts}

    def changes_since(self, saved: dict[str, Any] | None, saved_classes: list[str]) -> list[str]:
        """How the dataset differs from the one a run was made on (empty when it is the same).

        ``saved`` is the identity stored in run.json; runs of an older qtt have none, and only their
        class list (``saved_classes``) can be compared.
        """
        changes = []
        added = [c for c in self.classes if c not in saved_classes]
        removed = [c for c in saved_classes if c not in self.classes]
        if added:
            changes.append(f"class(es) added: {', '.join(added)}")
        if removed:
            changes.append(f"class(es) removed: {', '.join(removed)}")
        if not added and not removed and self.classes != list(saved_classes):
            changes.append("the classes are in a different order")
        if saved is None or changes:
            return changes
        for name in _SPLITS:
            before, now = int(saved.get("counts", {}).get(name, 0)), self.counts[name]
            if before != now:
                changes.append(f"{name} has {now} images, the run was made on {before}")
        if not changes and saved.get("sha256") != self.sha256:
            changes.append("images were replaced, renamed or moved between classes")
        return changes
