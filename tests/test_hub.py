"""qtt_cli.hub: hub definitions resolve in timm, models build, weights come from where they should.

No test downloads anything: pretrained weights are simulated with local checkpoint files and an empty cache.
"""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

import pytest
import torch

from qtt_cli.hub import (
    Hub,
    HubError,
    ModelSpec,
    Preprocessing,
    Weights,
    WeightsUnavailableError,
    create_model,
    describe_hub,
    ensure_weights_available,
    find_checkpoint,
    load_hub,
    parse_weights,
    preprocessing_for,
)

timm = pytest.importorskip("timm")
warnings.filterwarnings("ignore", category=UserWarning)

TABLE = Path(__file__).parents[2] / "shared/data/quicktune-extended/table.csv"
RANDOM = Weights("random")


# --- hub definitions -------------------------------------------------------------------------------------


@pytest.mark.parametrize("hub_name", ["quicktune", "tiny"])
def test_builtin_hub_names_are_timm_pretrained_names(hub_name):
    hub = load_hub(hub_name)
    for spec in hub.models:
        arch, _, tag = spec.name.partition(".")
        assert tag, f"{spec.name} should carry its pretrained tag"
        assert timm.is_model(arch), spec.name
        assert spec.name in timm.list_pretrained(spec.name), f"{spec.name} has no pretrained weights in timm"


def test_quicktune_hub_is_table_8_mapped_through_timm_deprecations():
    hub = load_hub("quicktune")
    assert len(hub) == 24
    deprecated = timm.models.get_deprecated_models()
    for spec in hub.models:
        old = spec.table_name
        if old in deprecated:
            # timm's own deprecation table says where the old name went
            assert deprecated[old] == spec.name, old
        else:
            # the old name is still the architecture, and it has exactly this one pretrained tag
            assert spec.arch == old
            assert timm.list_pretrained(f"{old}.*") == [spec.name]
        # input size and parameter count as timm knows them
        assert timm.models.get_pretrained_cfg(spec.name).input_size[-1] == spec.input_size


def test_quicktune_hub_covers_the_meta_dataset_models():
    if not TABLE.is_file():
        pytest.skip(f"meta-dataset table not found at {TABLE}")
    header = TABLE.read_text().split("\n", 1)[0].split(",")
    table_models = {c.split(":", 2)[2] for c in header if c.startswith("cat:model:")}
    assert set(load_hub("quicktune").table_names.values()) == table_models


def test_hub_get_and_helpful_error():
    hub = load_hub("tiny")
    assert hub.get("dla46x_c.in1k").table_name == "dla46x_c"
    assert hub.get("dla46x_c").name == "dla46x_c.in1k"  # unambiguous bare architecture
    with pytest.raises(HubError, match="not in hub 'tiny'.*tf_efficientnet_lite0.in1k"):
        hub.get("resnet50")
    with pytest.raises(HubError, match="twice"):
        Hub("dup", (ModelSpec("a.x"), ModelSpec("a.x")))
    with pytest.raises(HubError, match="unknown hub"):
        load_hub("no-such-hub")


def test_describe_hub_rows():
    rows = describe_hub(load_hub("quicktune"))
    assert rows[0] == {
        "name": "beit_large_patch16_512.in22k_ft_in22k_in1k",
        "table_name": "beit_large_patch16_512",
        "params_m": 305.67,
        "input_size": 512,
        "top1": 90.691,
    }


def test_tiny_hub_params_as_recorded():
    for spec in load_hub("tiny").models:
        model = create_model(spec.name, 1000, RANDOM)
        assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(spec.params_m, abs=0.01)
        assert spec.params_m < 5


@pytest.mark.parametrize("name", load_hub("tiny").names)
def test_tiny_models_forward_small_inputs(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, weights=RANDOM, drop_rate=0.1).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


def test_custom_hub_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        "models:\n  - dla46x_c.in1k\n  - name: resnet18.a1_in1k\n    input_size: 96\n    top1: 71.5\n"
    )
    hub = load_hub(str(path))
    assert hub.name == "mine"
    assert hub.get("dla46x_c.in1k").table_name == "dla46x_c"  # known from the quicktune hub
    spec = hub.get("resnet18.a1_in1k")
    assert (spec.input_size, spec.top1, spec.table_name) == (96, 71.5, None)


def test_custom_hub_file_with_unknown_model_fails_clearly(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("models:\n  - resnet18.a1_in1k\n  - resnet_18\n  - dla46x_c.no_such_tag\n")
    with pytest.raises(HubError) as info:
        load_hub(str(path))
    message = str(info.value)
    assert "'resnet_18' is not a timm model" in message and "resnet18" in message
    assert "no pretrained tag 'no_such_tag'" in message and "dla46x_c.in1k" in message
    (tmp_path / "typo.yaml").write_text("models:\n  - name: dla46x_c.in1k\n    inputsize: 3\n")
    with pytest.raises(HubError, match="unknown field.*inputsize"):
        load_hub(str(tmp_path / "typo.yaml"))
    with pytest.raises(HubError, match="does not exist"):
        load_hub(str(tmp_path / "missing.yaml"))


# --- weights -------------------------------------------------------------------------------------------


def test_parse_weights(tmp_path):
    assert parse_weights("pretrained") == Weights("pretrained")
    assert parse_weights("random") == RANDOM and not RANDOM.pretrained
    weights = parse_weights(str(tmp_path))
    assert weights == Weights.from_dir(tmp_path) and weights.kind == "dir"
    assert parse_weights(str(weights)) == weights
    with pytest.raises(ValueError, match="existing directory"):
        parse_weights(str(tmp_path / "nope"))


def _save_random_checkpoint(directory: Path, file_name: str, model_name: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import save_file

    torch.manual_seed(123)
    state = create_model(model_name, 1000, RANDOM).state_dict()
    state = {k: v.contiguous() for k, v in state.items()}
    save_file(state, str(directory / file_name))
    return state


@pytest.mark.parametrize("file_name", ["dla46x_c.in1k.safetensors", "dla46x_c.safetensors"])
def test_dir_weights_load_backbone_and_replace_head(tmp_path, file_name):
    saved = _save_random_checkpoint(tmp_path, file_name, "dla46x_c.in1k")
    torch.manual_seed(0)
    model = create_model("dla46x_c.in1k", num_classes=5, weights=Weights.from_dir(tmp_path))
    state = model.state_dict()
    head = {k for k in state if k.startswith("fc.")}
    assert head and state["fc.weight"].shape[0] == 5
    for key, value in state.items():
        if key not in head:
            assert torch.equal(value, saved[key]), key


def test_dir_weights_refuse_code_carrying_pickles(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo should-not-run",))

    with open(tmp_path / "dla46x_c.pth", "wb") as f:
        pickle.dump({"state_dict": Payload()}, f)
    with pytest.raises(Exception, match="weights_only"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        create_model("dla46x_c.in1k", num_classes=5, weights=Weights.from_dir(tmp_path))


def test_find_checkpoint_prefers_safetensors(tmp_path):
    (tmp_path / "mobilevit_xxs.pth").write_bytes(b"")
    assert find_checkpoint(tmp_path, "mobilevit_xxs.cvnets_in1k") == tmp_path / "mobilevit_xxs.pth"
    (tmp_path / "mobilevit_xxs.safetensors").write_bytes(b"")
    assert find_checkpoint(tmp_path, "mobilevit_xxs.cvnets_in1k") == tmp_path / "mobilevit_xxs.safetensors"
    assert find_checkpoint(tmp_path, "dla46x_c.in1k") is None


def test_dir_weights_missing_file_names_model_and_alternatives(tmp_path):
    hub = load_hub("tiny")
    import torch
    from safetensors.torch import save_file

    for name in hub.names[:-1]:
        save_file({"w": torch.zeros(1)}, str(tmp_path / f"{name}.safetensors"))
    with pytest.raises(WeightsUnavailableError) as info:
        ensure_weights_available(hub, Weights.from_dir(tmp_path))
    message = str(info.value)
    assert hub.names[-1] in message and hub.names[0] not in message.split("Alternatives")[0]
    assert "--weights random" in message and "--weights DIR" in message
    (tmp_path / f"{hub.names[-1]}.pth").write_bytes(b"")  # present but empty: unreadable, named
    with pytest.raises(WeightsUnavailableError, match=f"{hub.names[-1]}.pth"):
        ensure_weights_available(hub, Weights.from_dir(tmp_path))
    torch.save({"w": torch.zeros(1)}, tmp_path / f"{hub.names[-1]}.pth")
    ensure_weights_available(hub, Weights.from_dir(tmp_path))  # now complete and readable


def test_offline_pretrained_without_cache_fails_before_the_budget(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    hub = load_hub("tiny")
    with pytest.raises(WeightsUnavailableError) as info:
        ensure_weights_available(hub, Weights("pretrained"))
    message = str(info.value)
    assert "HF_HUB_OFFLINE" in message and "tf_efficientnet_lite0.in1k" in message
    assert "--weights random" in message and "--weights DIR" in message
    ensure_weights_available(hub, RANDOM)  # random needs nothing


def test_pretrained_weights_in_cache_need_no_network(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    hub = Hub("one", (ModelSpec("dla46x_c.in1k"),))
    # the layout huggingface_hub uses: models--org--name/{refs/main, snapshots/<rev>/<file>}
    repo = cache / "models--timm--dla46x_c.in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "model.safetensors").write_bytes(b"")
    ensure_weights_available(hub, Weights("pretrained"))


def test_unreachable_hub_fails(tmp_path, monkeypatch):
    import qtt_cli.hub._weights as weights_module

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(weights_module, "hub_reachable", lambda timeout_s: False)
    with pytest.raises(WeightsUnavailableError, match="cannot be reached.*dla46x_c.in1k"):
        ensure_weights_available(Hub("one", (ModelSpec("dla46x_c.in1k"),)), Weights("pretrained"))
    monkeypatch.setattr(weights_module, "hub_reachable", lambda timeout_s: True)
    ensure_weights_available(Hub("one", (ModelSpec("dla46x_c.in1k"),)), Weights("pretrained"))


# --- preprocessing -------------------------------------------------------------------------------------


def test_preprocessing_from_pretrained_cfg_and_capped():
    model = create_model("mobilevit_xxs.cvnets_in1k", 3, RANDOM)
    full = preprocessing_for(model, None)
    assert full.input_size == 256 and full.mean == (0.0, 0.0, 0.0) and full.interpolation == "bicubic"
    capped = preprocessing_for(model, 32)
    assert capped.input_size == 32 and capped.mean == full.mean and capped.crop_pct == full.crop_pct
    assert preprocessing_for(model, 1024).input_size == 256


@pytest.mark.parametrize("hub", ["quicktune", "tiny"])
def test_every_built_in_hub_model_gets_a_preprocessing_whose_eval_transform_works(hub):
    """From timm's own data config of each model, without building it: VOLO's crop_pct of 1.15 was refused, so
    every volo_d4/d5 pipeline of the quicktune hub failed before its first batch."""
    import numpy as np
    from timm.data import resolve_data_config
    from timm.models import get_pretrained_cfg

    from qtt_cli.data.transforms import eval_transform
    from qtt_cli.hub import preprocessing_of_config

    image = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    for spec in load_hub(hub).models:
        cfg = get_pretrained_cfg(spec.name)
        config = resolve_data_config(pretrained_cfg=cfg.to_dict())
        for cap in (None, 32):
            pre = preprocessing_of_config(config, bool(cfg.fixed_input_size), cap)
            assert pre.crop_pct == config["crop_pct"], spec.name
            assert pre.input_size == (32 if cap and not cfg.fixed_input_size else max(config["input_size"][-2:]))
            assert tuple(eval_transform(pre)(image).shape) == (3, pre.input_size, pre.input_size), spec.name


def test_preprocessing_json_round_trip():
    import json

    pre = Preprocessing(64, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "bicubic", 0.9)
    assert Preprocessing.from_dict(json.loads(json.dumps(pre.to_dict()))) == pre
    with pytest.raises(ValueError, match="unknown"):
        Preprocessing.from_dict({**pre.to_dict(), "size": 3})
