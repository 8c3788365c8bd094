"""`qtt export-best` and `qtt predict`: the best model, out of the run and into use.

An export folder is self-describing and pickle-free::

    OUT/
      model.safetensors   weights (always)
      model.torchscript.pt | model.onnx   with --format torchscript | onnx
      qtt-model.json      model name, classes, preprocessing, hyperparameters, validation score
      README.md           how to load it with timm + safetensors, or with `qtt predict`
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from safetensors.torch import save_file

from qtt_cli import __version__
from qtt_cli.data import IMAGE_EXTENSIONS
from qtt_cli.export.trained import (
    ExportError,
    TrainedModel,
    load_pipeline,
    load_weights_file,
    ranked_with_weights,
)
from qtt_cli.hub import Preprocessing
from qtt_cli.store import HYPERPARAMETER_COLUMNS, RunDir

FORMATS = ("safetensors", "torchscript", "onnx")
META_FILE = "qtt-model.json"
WEIGHTS_FILE = "model.safetensors"


def export_best(
    run_dir: Path,
    out: Path,
    *,
    format: str = "safetensors",
    pipeline_id: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Export the best pipeline of a run (or ``pipeline_id``); returns the written metadata."""
    if format not in FORMATS:
        raise ExportError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    ranked = ranked_with_weights(run_dir)
    if not ranked:
        raise ExportError(f"{run_dir} has no pipeline with a validation score and kept weights yet")
    if pipeline_id is not None and pipeline_id not in ranked:
        raise ExportError(f"pipeline {pipeline_id!r} has no kept weights; exportable: {', '.join(ranked[:10])}")
    pid = pipeline_id or ranked[0]
    trained = load_pipeline(run_dir, pid)
    _prepare_out(Path(out), overwrite)

    meta = {
        "qtt_version": __version__,
        "pipeline_id": pid,
        "run_dir": str(Path(run_dir).resolve()),
        "model": trained.meta["model"],
        "num_classes": trained.meta["num_classes"],
        "classes": trained.classes,
        "epoch": trained.meta["epoch"],
        "val_top1": trained.meta["val_top1"],
        "preprocessing": {**trained.preprocessing.to_dict(), "decode_side": trained.decode_side},
        "hyperparameters": _hyperparameters(run_dir, pid),
        "files": {"weights": WEIGHTS_FILE},
    }
    save_file({k: v.contiguous() for k, v in trained.model.state_dict().items()}, str(Path(out) / WEIGHTS_FILE))
    if format == "torchscript":
        meta["files"]["torchscript"] = _torchscript(trained, Path(out))
    elif format == "onnx":
        meta["files"]["onnx"] = _onnx(trained, Path(out))
    (Path(out) / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    (Path(out) / "README.md").write_text(_readme(meta))
    return meta


def load_export(export_dir: Path) -> TrainedModel:
    """The model of an export folder, ready for inference."""
    meta_file = Path(export_dir) / META_FILE
    if not meta_file.exists():
        raise ExportError(f"{export_dir} is not a qtt export (no {META_FILE}); create one with `qtt export-best`")
    meta = json.loads(meta_file.read_text())
    model = load_weights_file(meta["model"], meta["num_classes"], Path(export_dir) / meta["files"]["weights"])
    pre = dict(meta["preprocessing"])
    side = int(pre.pop("decode_side"))
    return TrainedModel(model, meta, Preprocessing.from_dict(pre), side)


def predict(export_dir: Path, images: list[Path]) -> list[dict[str, Any]]:
    """Class probabilities for each image, in the order given."""
    missing = [str(p) for p in images if not Path(p).is_file()]
    if missing:
        raise ExportError(f"image file(s) not found: {', '.join(missing[:5])}")
    trained = load_export(export_dir)
    probabilities = trained.logits([Path(p) for p in images]).softmax(dim=1)
    return [
        {
            "image": str(path),
            "label": trained.classes[int(row.argmax())],
            "probabilities": {name: round(float(p), 6) for name, p in zip(trained.classes, row, strict=True)},
        }
        for path, row in zip(images, probabilities, strict=True)
    ]


def score_on_folder(run_dir: Path, test_dir: Path, pipeline_ids: list[str]) -> dict[str, float | None]:
    """Top-1 (percent) on a labelled folder ``test_dir/<class>/*`` for pipelines with kept weights."""
    classes = RunDir(Path(run_dir)).read_run()["classes"]
    images, labels = _labelled_images(Path(test_dir), classes)
    kept = set(ranked_with_weights(run_dir))
    scores: dict[str, float | None] = {}
    for pid in pipeline_ids:
        if pid not in kept:
            scores[pid] = None
            continue
        predicted = load_pipeline(run_dir, pid).logits(images).argmax(dim=1)
        scores[pid] = 100.0 * float((predicted == torch.tensor(labels)).float().mean())
    return scores


def _labelled_images(folder: Path, classes: list[str]) -> tuple[list[Path], list[int]]:
    if (folder / "test").is_dir():
        folder = folder / "test"
    if not folder.is_dir():
        raise ExportError(f"test folder {folder} does not exist")
    found = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    unknown = sorted(set(found) - set(classes))
    if not found or unknown:
        raise ExportError(
            f"test folder {folder} must hold one folder per class of the run ({', '.join(classes[:10])}); "
            + (f"unknown: {', '.join(unknown[:10])}" if unknown else "found none")
        )
    images, labels = [], []
    for name in found:
        for path in sorted((folder / name).iterdir()):
            if path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith("."):
                images.append(path)
                labels.append(classes.index(name))
    if not images:
        raise ExportError(f"no images in test folder {folder}")
    return images, labels


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not (out / META_FILE).exists():
            raise ExportError(f"{out} is not empty and is not a qtt export; choose another --out")
        if not overwrite:
            raise ExportError(f"{out} already holds an export; add --overwrite to replace it")
        for name in (WEIGHTS_FILE, META_FILE, "README.md", "model.torchscript.pt", "model.onnx"):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def _hyperparameters(run_dir: Path, pid: str) -> dict[str, Any]:
    history = RunDir(Path(run_dir)).store.load()
    row = history[history["pipeline_id"] == pid].iloc[0]
    return {c: (None if pd.isna(row[c]) else (row[c].item() if hasattr(row[c], "item") else row[c]))
            for c in HYPERPARAMETER_COLUMNS}


def _example_input(trained: TrainedModel) -> torch.Tensor:
    side = trained.preprocessing.input_size
    return torch.zeros(1, 3, side, side)


def _torchscript(trained: TrainedModel, out: Path) -> str:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated but still the portable format
        traced = torch.jit.trace(trained.model.eval(), _example_input(trained))
        traced.save(str(out / "model.torchscript.pt"))
    return "model.torchscript.pt"


def _onnx(trained: TrainedModel, out: Path) -> str:
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ExportError("ONNX export needs the onnx package: pip install 'qtt-cli[onnx]'") from None
    torch.onnx.export(
        trained.model.eval(), (_example_input(trained),), str(out / "model.onnx"),
        input_names=["images"], output_names=["logits"], dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
    )
    return "model.onnx"


def _readme(meta: dict[str, Any]) -> str:
    pre = meta["preprocessing"]
    return f"""# {meta['model']} finetuned by qtt

Pipeline {meta['pipeline_id']}, epoch {meta['epoch']}, validation top-1 {meta['val_top1']:.2f}%,
{meta['num_classes']} classes (`qtt-model.json` lists them in label order, with every hyperparameter).

## Predict with qtt

    qtt predict {'{this folder}'} image1.jpg image2.png [--json]

## Load with timm + safetensors

```python
import timm
from safetensors.torch import load_file

model = timm.create_model("{meta['model']}", pretrained=False, num_classes={meta['num_classes']})
model.load_state_dict(load_file("{WEIGHTS_FILE}"))
model.eval()
```

Preprocessing: decode to RGB, resize the shorter side to {pre['decode_side']} px and center-crop a square
(as the run's image cache did), then resize to {pre['input_size']}/{pre['crop_pct']} and center-crop
{pre['input_size']} px with `{pre['interpolation']}` interpolation, scale to [0, 1] and normalise with
mean {tuple(pre['mean'])} and std {tuple(pre['std'])}. `timm.data.create_transform(input_size={pre['input_size']},
crop_pct={pre['crop_pct']}, interpolation="{pre['interpolation']}", mean=..., std=...)` does the second part.
"""
