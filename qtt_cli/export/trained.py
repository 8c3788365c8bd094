"""Loading the weights a run kept: the one reader of the worker's ``best.safetensors`` + ``best.json``.

Leaderboard ``--test``, ``export-best`` and ``predict`` all rebuild a model the same way: the timm
architecture with random initialisation, then the saved weights with ``strict=True`` (so a mismatch is
an error, not a half-loaded model), and the preprocessing that was used in training.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from qtt_cli.data import decode_image, eval_transform
from qtt_cli.hub import Preprocessing, Weights, create_model
from qtt_cli.report import leaderboard
from qtt_cli.store import RunDir


class ExportError(ValueError):
    """Nothing (or not the requested thing) can be exported or loaded."""


@dataclass
class TrainedModel:
    model: torch.nn.Module
    meta: dict[str, Any]  # best.json / qtt-model.json content
    preprocessing: Preprocessing
    decode_side: int  # side of the decoded (cached) image the eval transform starts from

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    def preprocess(self, path: Path) -> torch.Tensor:
        """Same path as in training: decode to the cache side, then the model's eval transform."""
        try:
            pixels = decode_image(Path(path), self.decode_side).pixels
        except (OSError, ValueError) as exc:
            raise ExportError(f"cannot read image {path}: {exc}") from None
        return eval_transform(self.preprocessing)(np.ascontiguousarray(pixels))

    @torch.inference_mode()
    def logits(self, images: list[Path], batch_size: int = 64) -> torch.Tensor:
        self.model.eval()
        out = []
        for i in range(0, len(images), batch_size):
            batch = torch.stack([self.preprocess(p) for p in images[i : i + batch_size]])
            out.append(self.model(batch).float())
        return torch.cat(out) if out else torch.empty(0, len(self.classes))


def read_meta(path: Path, remedy: str) -> dict[str, Any]:
    """A JSON description (best.json, qtt-model.json), or an ExportError naming the file."""
    try:
        meta = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExportError(f"{path} is missing; {remedy}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"{path} is not valid JSON ({exc}); {remedy}") from None
    if not isinstance(meta, dict):
        raise ExportError(f"{path} should hold a JSON object; {remedy}")
    return meta


def load_weights_file(model_name: str, num_classes: int, weights_file: Path) -> torch.nn.Module:
    """The timm model with the weights of ``weights_file`` (strict), or an ExportError naming the file."""
    if not Path(weights_file).is_file():
        raise ExportError(f"weights file {weights_file} is missing")
    model = create_model(model_name, num_classes, Weights("random"))
    try:
        state = load_file(str(weights_file))
        model.load_state_dict(state, strict=True)
    except Exception as exc:  # noqa: BLE001 -- garbage, truncated or mismatched weights: the file is unusable
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:300]
        raise ExportError(f"cannot load the weights in {weights_file} into {model_name} with {num_classes} "
                          f"classes: {first}") from None
    return model.eval()


def load_pipeline(run_dir: Path, pipeline_id: str) -> TrainedModel:
    """The best weights kept for ``pipeline_id`` in a run."""
    run = RunDir(Path(run_dir))
    info = run.read_run()
    folder = run.checkpoints / pipeline_id
    weights, meta_file = folder / "best.safetensors", folder / "best.json"
    if not meta_file.exists() or not weights.exists():
        raise ExportError(
            f"no kept weights for pipeline {pipeline_id} in {run.root} (only the best --keep-best pipelines "
            "keep their weights)"
        )
    meta = read_meta(meta_file, f"the run keeps no usable best weights for {pipeline_id}")
    model = load_weights_file(meta["model"], meta["num_classes"], weights)
    return TrainedModel(model, meta, Preprocessing.from_dict(meta["preprocessing"]), int(info["cache_side"]))


def ranked_with_weights(run_dir: Path) -> list[str]:
    """Pipeline ids by best validation top-1 whose best weights are still on disk."""
    run = RunDir(Path(run_dir))
    run.read_run()
    table = leaderboard(run.root)
    if table.empty:
        return []
    return [
        pid for pid in table.loc[table["best_val_top1"].notna(), "pipeline_id"]
        if (run.checkpoints / pid / "best.safetensors").exists()
    ]
