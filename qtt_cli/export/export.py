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
import os
import shutil
import tempfile
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
    read_meta,
)
from qtt_cli.hub import Preprocessing
from qtt_cli.store import HYPERPARAMETER_COLUMNS, RunDir
from qtt_cli.store.files import DiskFullError, is_disk_full

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
    out = Path(out)
    _check_out(out, overwrite)
    # Written into a temporary sibling folder and moved into place at the end: a failed export (a missing
    # optional package, a full disk, Ctrl-C) leaves the previous export or nothing, never a partial folder.
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".qtt-export.tmp", dir=out.parent))
    try:
        meta = _write_export(trained, run_dir, pid, format, staging)
        _make_readable(staging)
        _move_into_place(staging, out)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if is_disk_full(exc, out.parent):
            raise DiskFullError(out) from exc
        raise
    return meta


def _write_export(trained: TrainedModel, run_dir: Path, pid: str, format: str, out: Path) -> dict[str, Any]:
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
    save_file({k: v.contiguous() for k, v in trained.model.state_dict().items()}, str(out / WEIGHTS_FILE))
    if format == "torchscript":
        meta["files"]["torchscript"] = _torchscript(trained, out)
    elif format == "onnx":
        meta["files"]["onnx"] = _onnx(trained, out)
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    (out / "README.md").write_text(_readme(meta))
    return meta


def _make_readable(folder: Path) -> None:
    """Files as the user's umask would make them (mkdtemp and some writers use 0600/0700)."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _move_into_place(staging: Path, out: Path) -> None:
    if out.is_dir() and any(out.iterdir()):  # an earlier export, replaced with --overwrite
        old = out.with_name(f".{out.name}.{os.getpid()}.qtt-export-old.tmp")
        os.replace(out, old)
        os.replace(staging, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        if out.is_dir():
            out.rmdir()
        os.replace(staging, out)


def load_export(export_dir: Path) -> TrainedModel:
    """The model of an export folder, ready for inference."""
    meta_file = Path(export_dir) / META_FILE
    if not meta_file.exists():
        raise ExportError(f"{export_dir} is not a qtt export (no {META_FILE}); create one with `qtt export-best`")
    meta = read_meta(meta_file, "the export's description; export the run again with `qtt export-best`")
    try:
        weights = Path(export_dir) / meta["files"]["weights"]
        pre = dict(meta["preprocessing"])
        side = int(pre.pop("decode_side"))
        preprocessing = Preprocessing.from_dict(pre)
        model_name, num_classes = meta["model"], int(meta["num_classes"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ExportError(
            f"{meta_file} lacks or has a wrong {exc}; export the run again with `qtt export-best`") from None
    model = load_weights_file(model_name, num_classes, weights)
    return TrainedModel(model, meta, preprocessing, side)


def predict(export_dir: Path, images: list[Path]) -> list[dict[str, Any]]:
    """Class probabilities for each image, in the order given.

    An image that is missing or cannot be decoded gets an ``error`` entry instead of probabilities, and the
    others are still classified (one bad file in a batch of thousands must not cost the rest).
    """
    trained = load_export(export_dir)
    results: list[dict[str, Any]] = []
    readable: list[tuple[int, torch.Tensor]] = []
    for i, path in enumerate(images):
        results.append({"image": str(path)})
        if not Path(path).is_file():
            results[-1]["error"] = "file not found"
            continue
        try:
            readable.append((i, trained.preprocess(Path(path))))
        except ExportError as exc:
            results[-1]["error"] = str(exc)
    if readable:
        with torch.inference_mode():
            trained.model.eval()
            logits = torch.cat([trained.model(torch.stack([t for _, t in readable[k:k + 64]])).float()
                                for k in range(0, len(readable), 64)])
        for (i, _), row in zip(readable, logits.softmax(dim=1), strict=True):
            results[i]["label"] = trained.classes[int(row.argmax())]
            results[i]["probabilities"] = {name: round(float(p), 6)
                                           for name, p in zip(trained.classes, row, strict=True)}
    return results


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


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file; give a folder for the exported model")
    if out.is_dir() and any(out.iterdir()):
        if not (out / META_FILE).exists():
            raise ExportError(f"{out} is not empty and is not a qtt export; choose another --out")
        if not overwrite:
            raise ExportError(f"{out} already holds an export; add --overwrite to replace it")


def _hyperparameters(run_dir: Path, pid: str) -> dict[str, Any]:
    history = RunDir(Path(run_dir)).store.load()
    row = history[history["pipeline_id"] == pid].iloc[0]
    return {c: (None if pd.isna(row[c]) else (row[c].item() if hasattr(row[c], "item") else row[c]))
            for c in HYPERPARAMETER_COLUMNS}


def _example_input(trained: TrainedModel) -> torch.Tensor:
    return example_batch(trained.preprocessing.input_size)


def example_batch(side: int) -> torch.Tensor:
    """The input an export is traced with. Two images, not one: torch.export specialises a dimension of size 1
    to a constant, and an ONNX graph traced at batch 1 declared a dynamic batch but failed in onnxruntime for
    any batch above 1 (edgenext's reshapes)."""
    return torch.zeros(2, 3, side, side)


def _torchscript(trained: TrainedModel, out: Path) -> str:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated but still the portable format
        traced = torch.jit.trace(trained.model.eval(), _example_input(trained))
        traced.save(str(out / "model.torchscript.pt"))
    return "model.torchscript.pt"


def _onnx(trained: TrainedModel, out: Path) -> str:
    export_onnx(trained.model, trained.preprocessing.input_size, out / "model.onnx")
    return "model.onnx"


def export_onnx(model: torch.nn.Module, side: int, path: Path) -> str:
    """``model`` as ONNX with a dynamic batch dimension (input ``images``, output ``logits``); returns the exporter
    that wrote it.

    torch.export is tried first. It cannot yet take some timm models with a symbolic batch (BEiT's attention
    reshapes a transposed tensor, which its decomposition turns into an impossible view), so those fall back to
    torch's TorchScript exporter, which traces the batch dimension instead. Where onnxruntime is installed, the
    graph is then run at two batch sizes against the model itself: an export that declares a dynamic batch but
    cannot run one (as edgenext's once did) is refused here, not found by the user."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise ExportError("ONNX export needs the onnx and onnxscript packages: pip install 'qtt-cli[onnx]'") from None
    model = model.eval()
    try:
        _torch_onnx_export(model, side, path, dynamo=True)
        exporter = "torch.export"
    except torch.onnx.errors.OnnxExporterError as first:
        _remove_onnx(path)
        try:
            _torch_onnx_export(model, side, path, dynamo=False)
        except Exception as second:  # noqa: BLE001 - both of torch's exporters failed: say so, with both reasons
            _remove_onnx(path)
            raise ExportError(f"neither of torch's ONNX exporters could export this model: torch.export: "
                              f"{_first_line(first)}; TorchScript: {_first_line(second)}") from None  # fmt: skip
        exporter = "torchscript"
    _check_onnx_batches(model, side, path)
    return exporter


def _torch_onnx_export(model: torch.nn.Module, side: int, path: Path, dynamo: bool) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporters' advice on dynamic_axes and tracing is not for our users
        torch.onnx.export(
            model, (example_batch(side),), str(path), dynamo=dynamo, verbose=False, input_names=["images"],
            output_names=["logits"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
        )  # fmt: skip


def _check_onnx_batches(model: torch.nn.Module, side: int, path: Path) -> None:
    """Run the exported graph at batch 1 and 3 in onnxruntime (when installed) and compare with the model."""
    try:
        import onnxruntime
    except ImportError:
        return
    import numpy as np

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(0)
    for batch in (1, 3):
        images = torch.randn(batch, 3, side, side, generator=generator)
        try:
            logits = session.run(None, {"images": images.numpy()})[0]
        except Exception as e:  # noqa: BLE001 - onnxruntime's errors have no common base class
            _remove_onnx(path)
            raise ExportError(f"the ONNX export fails in onnxruntime at batch {batch}: {_first_line(e)}") from None
        with torch.inference_mode():
            expected = model(images).float().numpy()
        scale = max(1.0, float(np.abs(expected).max()))
        if logits.shape != expected.shape or not np.allclose(logits, expected, rtol=1e-3, atol=1e-3 * scale):
            _remove_onnx(path)
            gap = float(np.abs(logits - expected).max()) if logits.shape == expected.shape else float("nan")
            raise ExportError(f"the ONNX export gives other logits than the model at batch {batch} (shape "
                              f"{logits.shape} vs {expected.shape}, largest difference {gap:.3g})")  # fmt: skip


def _remove_onnx(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.with_name(path.name + ".data").unlink(missing_ok=True)  # external weights of a large model


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:300]


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
