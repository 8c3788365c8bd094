"""HVP (hard views): several views of one cached image, the kept view is the hardest, the selection pass
leaves BatchNorm and train/eval modes alone, and with one view a step is exactly the plain step. Unit tests on a
random-weights timm model; worker tests on 200 digits at 32 px."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from torch import nn
from torch.nn import functional as F
from worker_helpers import MODEL, SIDE, make_worker

from qtt_cli.data import make_loader, train_transform
from qtt_cli.data.cache import CachedImages
from qtt_cli.hub import preprocessing_for
from qtt_cli.space import PipelineConfig, build_space, encode, load_space, sample_configs
from qtt_cli.space.spacefile import SpaceFileError
from qtt_cli.worker import epoch_path
from qtt_cli.worker import extensions as extensions_module
from qtt_cli.worker.strategies.hvp import HardViewSelection, view_losses


@pytest.fixture
def cache(digits_cache):
    return digits_cache


def cfg(**kwargs) -> PipelineConfig:
    return PipelineConfig(**{"model": MODEL, "batch_size": 32, "lr": 3e-3, **kwargs})


def checkpoint(root: Path, pid: str, epoch: int) -> dict:
    return torch.load(epoch_path(root, pid, epoch), map_location="cpu", weights_only=True)


def trained_model() -> nn.Module:
    """A BatchNorm + dropout model whose running statistics are not at their initial values."""
    torch.manual_seed(0)
    model = timm.create_model("mobilenetv3_small_050", num_classes=10, drop_rate=0.3)
    model.train()
    with torch.no_grad():
        model(torch.randn(8, 3, SIDE, SIDE))
    return model


# --- the data path ----------------------------------------------------------------------------------------


def test_views_are_different_augmentations_of_one_cached_read(cache, monkeypatch):
    reads = []
    original = CachedImages.image

    def counting(self, i):
        reads.append(i)
        return original(self, i)

    monkeypatch.setattr(CachedImages, "image", counting)
    pre = preprocessing_for(timm.create_model("mobilenetv3_small_050", num_classes=10), SIDE)
    loader = make_loader(cache.train, train_transform(pre, cfg()), 8, shuffle=False, generator=None, views=3)
    torch.manual_seed(0)
    x, y = next(iter(loader))
    assert x.shape == (8, 3, 3, SIDE, SIDE) and y.shape == (8,)
    assert reads == list(range(8))  # one read of the decoded image per sample, whatever the views
    for i in range(8):
        assert not torch.equal(x[i, 0], x[i, 1]) and not torch.equal(x[i, 1], x[i, 2])
    single, _ = next(iter(make_loader(cache.train, train_transform(pre, cfg()), 8, shuffle=False,
                                      generator=None)))
    assert single.shape == (8, 3, SIDE, SIDE)


# --- the selection --------------------------------------------------------------------------------------


def test_kept_view_is_the_per_image_argmax_of_the_loss():
    model = trained_model()
    torch.manual_seed(1)
    views, labels = torch.randn(12, 4, 3, SIDE, SIDE), torch.randint(0, 10, (12,))
    kept = HardViewSelection(4).select_inputs(model, views, labels)
    model.eval()
    with torch.no_grad():  # each view scored on its own, independently of the batched pass
        losses = torch.stack([F.cross_entropy(model(views[:, k]), labels, reduction="none") for k in range(4)], 1)
    hardest = losses.argmax(dim=1)
    assert len(set(hardest.tolist())) > 1  # the hardest view is not always the same index
    for i in range(12):
        assert torch.equal(kept[i], views[i, hardest[i]])
    assert torch.allclose(view_losses(model, views, labels), losses, atol=1e-5)


def test_selection_pass_leaves_batchnorm_statistics_and_modes():
    model = trained_model()
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    norms[0].eval()  # a frozen normalisation layer (partial freezing keeps it in eval mode)
    modes = [m.training for m in model.modules()]
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    views, labels = torch.randn(6, 3, 3, SIDE, SIDE), torch.randint(0, 10, (6,))
    rng = torch.get_rng_state()
    HardViewSelection(3).select_inputs(model, views, labels)
    for k, v in model.named_buffers():
        assert torch.equal(v, buffers[k]), k
    assert [m.training for m in model.modules()] == modes
    assert torch.equal(torch.get_rng_state(), rng)  # no dropout draws either
    with torch.no_grad():  # (a train-mode pass, as in the reference code, would have changed them)
        model(torch.randn(18, 3, SIDE, SIDE))
    assert not torch.equal(norms[1].running_mean, buffers[f"{_name(model, norms[1])}.running_mean"])


def _name(model: nn.Module, module: nn.Module) -> str:
    return next(name for name, m in model.named_modules() if m is module)


def test_every_kth_step_selects_and_the_others_take_the_first_view():
    model = trained_model()
    torch.manual_seed(3)
    views, labels = torch.randn(16, 4, 3, SIDE, SIDE), torch.randint(0, 10, (16,))
    hardest = HardViewSelection(4).select_inputs(model, views, labels)
    assert not torch.equal(hardest, views[:, 0])
    hvp = HardViewSelection(4, every=2)
    assert torch.equal(hvp.select_inputs(model, views, labels), hardest)  # step 0
    assert torch.equal(hvp.select_inputs(model, views, labels), views[:, 0])  # step 1
    assert torch.equal(hvp.select_inputs(model, views, labels), hardest)  # step 2
    assert hvp.state_dict() == {"steps": 3}


# --- in the worker ----------------------------------------------------------------------------------------


def test_single_view_step_equals_the_plain_step(cache, tmp_path, monkeypatch, deterministic):
    # the whole HVP path with one view: loader, eval-mode scoring pass, selection, then mixup and the step
    config = cfg(drop=0.2, mixup=0.8, mixup_prob=1.0, smoothing=0.1, batch_size=27)
    plain = make_worker(cache, tmp_path / "plain")
    assert plain.step("p", config, 0, 2).status == "ok"
    monkeypatch.setattr(extensions_module, "_FACTORIES", [("hvp", lambda context: HardViewSelection(1))])
    hvp = make_worker(cache, tmp_path / "hvp")
    result = hvp.step("p", config, 0, 2)
    assert result.status == "ok"
    a, b = checkpoint(tmp_path / "plain", "p", 2), checkpoint(tmp_path / "hvp", "p", 2)
    assert b["extensions"] == {"hvp": {"steps": 12}}  # it did run on every step (2 epochs x 6 batches)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["history"][-1]["val_loss"] == b["history"][-1]["val_loss"]


def test_two_steps_equal_one_step_with_hvp(cache, tmp_path, deterministic):
    config = cfg(hvp_views=3, hvp_every=2, mixup=0.8, mixup_prob=1.0, batch_size=27)
    whole, split = make_worker(cache, tmp_path / "whole"), make_worker(cache, tmp_path / "split")
    assert whole.step("h", config, 0, 2).status == "ok"
    assert split.step("h", config, 0, 1).status == "ok"
    assert split.step("h", config, 1, 2).status == "ok"
    a, b = checkpoint(tmp_path / "whole", "h", 2), checkpoint(tmp_path / "split", "h", 2)
    assert a["extensions"] == b["extensions"] == {"hvp": {"steps": 12}}
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


# --- search space -----------------------------------------------------------------------------------------


def test_hvp_is_searchable_and_forceable(tmp_path):
    configs = sample_configs(build_space([MODEL]), 300, seed=0)
    assert {c.hvp_views for c in configs} == {1, 2, 3, 4}
    assert all((c.hvp_every is None) == (c.hvp_views == 1) for c in configs)
    path = tmp_path / "space.yaml"
    path.write_text("hvp_views: 4\nhvp_every: [1, 2]\n")
    forced = sample_configs(load_space(path, [MODEL]), 20, seed=0)
    assert {c.hvp_views for c in forced} == {4} and {c.hvp_every for c in forced} == {1, 2}
    for text, message in [("hvp_views: 5\n", "at most 4"), ("hvp_views: 0\n", "integer >= 1"),
                          ("hvp_views: 1\nhvp_every: 2\n", "hvp_every is only used when hvp_views")]:
        path.write_text(text)
        with pytest.raises(SpaceFileError, match=message):
            load_space(path, [MODEL])


def test_the_table_encoding_ignores_hvp():
    plain = PipelineConfig(model="dla46x_c.in1k")
    assert encode([plain]).equals(encode([PipelineConfig(model="dla46x_c.in1k", hvp_views=4, hvp_every=2)]))


# --- the minimum crop scale of hard views ------------------------------------------------------------------


def _crop_scales(transform) -> list[tuple[float, float]]:
    return [tuple(op.scale) for op in transform.transforms if hasattr(op, "scale")]


def test_hard_views_draw_crops_of_at_least_the_minimum_scale():
    from qtt_cli.data.views import HARD_VIEW_MIN_SCALE, MultiView, with_min_crop_scale

    pre = preprocessing_for(timm.create_model("mobilenetv3_small_050", num_classes=10), SIDE)
    single = train_transform(pre, cfg())
    assert _crop_scales(single) == [(0.08, 1.0)]  # timm's training crop, untouched for one view
    assert _crop_scales(MultiView(single, 3).transform) == [(HARD_VIEW_MIN_SCALE, 1.0)]
    assert _crop_scales(MultiView(single, 3, min_scale=None).transform) == [(0.08, 1.0)]
    assert MultiView(single, 1).transform is single  # one view: the plain training transform
    assert _crop_scales(single) == [(0.08, 1.0)]  # the original is never modified
    assert with_min_crop_scale(single, None) is single
    with pytest.raises(ValueError, match="min_scale"):
        with_min_crop_scale(single, 1.5)


def test_small_crops_can_lose_a_centred_object_and_the_guard_keeps_it():
    """The failure the guard exists for: a 32 px image, black but for a centred white square (a tenth of the
    area, like a small garment or digit). Among 1000 random-resized crops of 8-100 % of the area some show no
    white pixel at all -- the hardest view HVP would pick, a label-free patch; with the minimum scale every
    crop shows part of the object (a crop of >= 35 % of the area cannot fit beside a centred 10 px square)."""
    import numpy as np
    from torchvision import transforms as T

    from qtt_cli.data.transforms import ArrayToPIL
    from qtt_cli.data.views import HARD_VIEW_MIN_SCALE, MultiView

    image = np.zeros((32, 32, 3), dtype=np.uint8)
    image[11:21, 11:21] = 255
    transform = T.Compose([ArrayToPIL(), T.RandomResizedCrop(32, scale=(0.08, 1.0)), T.ToTensor()])
    torch.manual_seed(0)
    raw = MultiView(transform, 1000, min_scale=None)(image)
    guarded = MultiView(transform, 1000, min_scale=HARD_VIEW_MIN_SCALE)(image)
    lost = lambda views: int((views.flatten(1).amax(dim=1) == 0).sum())  # noqa: E731
    assert lost(raw) >= 5
    assert lost(guarded) == 0
