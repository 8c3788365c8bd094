"""SPG (Sequential Policy Gradient): replica modules, positional masks, the loss, cold start, and that the
modules stay out of evaluation and export while surviving freeze-thaw continuation. Unit tests on tiny
hand-made tensors and random-weights timm models; worker tests on 200 digits at 32 px."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from torch import nn
from torch.nn import functional as F
from worker_helpers import MODEL, SIDE, make_worker

from qtt_cli.export.trained import load_weights_file
from qtt_cli.space import PipelineConfig, build_space, encode, load_space, sample_configs
from qtt_cli.space.config import ConfigError
from qtt_cli.space.spacefile import SpaceFileError
from qtt_cli.worker import FinetuneWorker, build_optimizer, epoch_path
from qtt_cli.worker.extensions import TrainBatch
from qtt_cli.worker.strategies.spg import (
    REPLICA_WEIGHTS,
    ReplicaModule,
    SequentialPolicyGradient,
    apply_head,
    positional_masks,
    replica_logits,
    shared_head,
    spg_loss,
)

SPG = dict(spg=True, spg_modules=3, spg_drop=0.2, spg_cold_start=0)


@pytest.fixture
def cache(digits_cache):
    return digits_cache


def cfg(**kwargs) -> PipelineConfig:
    return PipelineConfig(**{"model": MODEL, "batch_size": 32, "lr": 3e-3, **SPG, **kwargs})


def checkpoint(root: Path, pid: str, epoch: int) -> dict:
    return torch.load(epoch_path(root, pid, epoch), map_location="cpu", weights_only=True)


class PooledLinear(nn.Module):
    """The smallest model with timm's head API: features are the input, the classifier a Linear."""

    def __init__(self, weight, bias) -> None:
        super().__init__()
        self.fc = nn.Linear(len(weight[0]), len(weight))
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor(weight))
            self.fc.bias.copy_(torch.tensor(bias))

    def forward_features(self, x):
        return x

    def forward_head(self, x, pre_logits: bool = False):
        return x if pre_logits else self.fc(x)

    def get_classifier(self):
        return self.fc


# --- the modules --------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["mobilenetv3_small_050", "dla46x_c", "edgenext_xx_small"])
def test_zero_initialised_replicas_are_the_shared_head_on_dropped_out_features(arch):
    # three heads: Linear after the pre-logits (mobilenetv3), a 1x1 conv (dla), a norm+Linear head (edgenext)
    model = timm.create_model(arch, num_classes=7).eval()
    spg = SequentialPolicyGradient(model, modules=3, drop=0.3)
    with torch.no_grad():
        h0 = model.forward_head(model.forward_features(torch.randn(6, 3, SIDE, SIDE)), pre_logits=True)
        assert spg.width == h0.shape[1]  # the width comes from the model
        torch.manual_seed(5)
        got = replica_logits(spg.replicas, shared_head(model), h0)
        torch.manual_seed(5)
        h, expected = h0, []
        for _ in range(3):
            h = F.dropout(h, 0.3, training=True)
            expected.append(apply_head(model.get_classifier(), h))
    for g, e in zip(got, expected, strict=True):
        assert torch.equal(g, e)
    assert not torch.equal(got[0], got[1])  # each module drops out again


def test_effective_drop_rates_compound():
    replicas = nn.ModuleList(ReplicaModule(50, 0.2) for _ in range(3))
    torch.manual_seed(0)
    h = torch.ones(4000, 50)
    for t, module in enumerate(replicas, start=1):
        with torch.no_grad():
            h = module(h)
        assert (h == 0).float().mean().item() == pytest.approx(1 - 0.8**t, abs=0.01)  # 0.2, 0.36, 0.488


def test_replica_linears_receive_gradient():
    model = timm.create_model("mobilenetv3_small_050", num_classes=5).eval()
    spg = SequentialPolicyGradient(model, modules=3, drop=0.1)
    x = torch.randn(16, 3, SIDE, SIDE)
    features = model.forward_features(x)
    logits = model.forward_head(features)
    labels = logits.argmax(dim=1).detach()  # the base head is right everywhere, so every replica has a mask
    spg.loss(TrainBatch(model, x, labels, labels, features, logits)).backward()
    for replica in spg.replicas:
        assert replica.linear.weight.grad.abs().sum() > 0
        assert replica.linear.bias.grad.abs().sum() > 0


# --- masks and loss -----------------------------------------------------------------------------------


def test_mask_is_the_running_product_of_correctness():
    torch.manual_seed(1)
    base, reps = torch.randn(200, 3), [torch.randn(200, 3) for _ in range(3)]
    labels = torch.randint(0, 3, (200,))
    masks = positional_masks(base, reps, labels)
    for i in range(200):
        alive = int(base[i].argmax() == labels[i])
        for t in range(3):
            assert masks[t][i].item() == alive
            alive *= int(reps[t][i].argmax() == labels[i])
    assert masks[2].sum() > 0 and masks[2].sum() < masks[0].sum()  # the test exercises both outcomes


# A 2-d representation, 3 classes, 4 samples, dropout 0: replica t is h + A_t h + c_t, logits are W h + b.
W, B = [[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]], [0.0, 0.0, 0.5]
A = [[[0.0, 1.0], [0.0, 0.0]], [[-1.0, 0.0], [0.0, 0.5]], [[0.5, 0.5], [0.0, -2.0]]]
C = [[0.0, 0.0], [0.2, 0.0], [0.0, 0.3]]
H0 = [[2.0, 0.5], [0.3, 1.0], [1.0, 1.2], [-1.0, -0.5]]
Y = [0, 1, 0, 2]


def _by_hand() -> tuple[float, list[list[int]]]:
    """The SPG term computed with Python floats only."""

    def matvec(m, v):
        return [sum(m[i][j] * v[j] for j in range(len(v))) for i in range(len(m))]

    def logits(h):
        return [z + b for z, b in zip(matvec(W, h), B, strict=True)]

    def ce(z, k):
        return math.log(sum(math.exp(v) for v in z)) - z[k]

    def argmax(z):
        return max(range(len(z)), key=z.__getitem__)

    alive = [int(argmax(logits(h)) == y) for h, y in zip(H0, Y, strict=True)]
    total, masks, hs = 0.0, [], H0
    for t in range(3):
        hs = [[x + a + c for x, a, c in zip(h, matvec(A[t], h), C[t], strict=True)] for h in hs]
        masks.append(list(alive))
        kept = [ce(logits(h), y) for h, y, m in zip(hs, Y, alive, strict=True) if m]
        total += REPLICA_WEIGHTS[t] * sum(kept) / len(kept)
        alive = [m * int(argmax(logits(h)) == y) for h, y, m in zip(hs, Y, alive, strict=True)]
    return total, masks


def test_loss_by_hand_on_a_tiny_batch():
    expected, masks = _by_hand()
    assert masks == [[1, 1, 0, 1], [1, 0, 0, 1], [0, 0, 0, 1]]  # base wrong on #2; the chain narrows
    model = PooledLinear(W, B)
    spg = SequentialPolicyGradient(model, modules=3, drop=0.0)
    with torch.no_grad():
        for replica, a, c in zip(spg.replicas, A, C, strict=True):
            replica.linear.weight.copy_(torch.tensor(a))
            replica.linear.bias.copy_(torch.tensor(c))
    x, y = torch.tensor(H0), torch.tensor(Y)
    batch = TrainBatch(model, x, y, y, model.forward_features(x), model.forward_head(x))
    assert spg.loss(batch).item() == pytest.approx(expected, rel=1e-6)
    # mixup-style soft targets: the mask uses their argmax class, the loss the soft targets themselves
    soft = 0.7 * F.one_hot(y, 3).float() + 0.3 * F.one_hot((y + 1) % 3, 3).float()
    logits = replica_logits(spg.replicas, model.fc, x)
    masks_soft = positional_masks(batch.logits, logits, soft.argmax(dim=1))
    by_soft = sum(w * ((-(soft * F.log_softmax(z, 1)).sum(1)) * m).sum() / m.sum()
                  for w, z, m in zip(REPLICA_WEIGHTS, logits, masks_soft, strict=True))
    soft_batch = TrainBatch(model, x, y, soft, batch.features, batch.logits)
    assert spg.loss(soft_batch).item() == pytest.approx(by_soft.item(), rel=1e-6)


def test_replica_losses_match_the_base_loss_definitions_in_float32():
    torch.manual_seed(2)
    z, y = torch.randn(8, 5), torch.randint(0, 5, (8,))
    soft = torch.softmax(torch.randn(8, 5), dim=1)
    # with every sample kept, one replica of weight 1 is exactly the worker's base loss of that kind
    base_logits = F.one_hot(y, 5).float()  # the base head is right everywhere
    assert spg_loss(base_logits, [z], y, (1.0,)).item() == pytest.approx(F.cross_entropy(z, y).item(), rel=1e-6)
    assert spg_loss(base_logits, [z], y, (1.0,), smoothing=0.1).item() == pytest.approx(
        LabelSmoothingCrossEntropy(0.1)(z, y).item(), rel=1e-6)
    soft_base = F.one_hot(soft.argmax(1), 5).float()
    assert spg_loss(soft_base, [z], soft, (1.0,)).item() == pytest.approx(
        SoftTargetCrossEntropy()(z, soft).item(), rel=1e-6)
    # half-precision logits (AMP) give a float32 loss
    assert spg_loss(base_logits.half(), [z.half()], y, (1.0,)).dtype == torch.float32


def test_an_empty_mask_adds_nothing():
    z = torch.randn(4, 3)
    wrong = F.one_hot(torch.tensor([1, 2, 0, 1]), 3).float() * 10  # base wrong on every sample
    assert spg_loss(wrong, [z, z], torch.tensor([0, 0, 1, 0]), (0.4, 0.2)).item() == 0.0


# --- cold start -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("opt", ["sgd", "momentum", "adam", "adamw", "adamp"])
def test_learning_rate_zero_moves_no_weight_under_any_optimizer(opt):
    model = timm.create_model("mobilenetv3_small_050", num_classes=5)
    config = PipelineConfig(model=MODEL, opt=opt, momentum=0.9 if opt == "momentum" else None,
                            opt_betas="[0.9, 0.999]" if opt.startswith("adam") else None, weight_decay=0.1, lr=0.1)
    optimizer = build_optimizer(model, config)
    for group in optimizer.param_groups:
        group["lr"] = 0.0
    before = {k: v.clone() for k, v in model.named_parameters()}
    for _ in range(2):
        optimizer.zero_grad()
        model(torch.randn(4, 3, SIDE, SIDE)).square().mean().backward()
        optimizer.step()
    for k, v in model.named_parameters():
        assert torch.equal(v, before[k]), k
    if opt != "sgd":  # plain SGD has no state to fill
        assert len(optimizer.state) == len(before)


def test_cold_start_fills_the_optimizer_state_and_moves_no_weight(cache, tmp_path, monkeypatch):
    seen = {}
    original = FinetuneWorker._cold_start

    def spy(self, run, config, deadline, notes):
        params = list(run.model.parameters()) + [p for ext in run.extensions for p in ext.parameters()]
        norm = next(m for m in run.model.modules() if isinstance(m, nn.BatchNorm2d))
        seen.update(params=params, before=[p.detach().clone() for p in params],
                    bn_before=norm.running_mean.clone(), lr_before=[g["lr"] for g in run.optimizer.param_groups])
        cost = original(self, run, config, deadline, notes)
        seen.update(after=[p.detach().clone() for p in params], bn_after=norm.running_mean.clone(),
                    state=[{k: torch.as_tensor(v).clone() for k, v in run.optimizer.state[p].items()}
                           for p in params if p in run.optimizer.state],
                    lr_after=[g["lr"] for g in run.optimizer.param_groups])
        return cost

    monkeypatch.setattr(FinetuneWorker, "_cold_start", spy)
    config = cfg(opt="adamw", weight_decay=0.05, spg_cold_start=2)
    result = make_worker(cache, tmp_path).step("cold", config, 0, 1)
    assert result.status == "ok", result
    assert [e.epoch for e in result.epochs] == [1]  # cold start is not a fidelity epoch
    assert any("cold start: 2 epoch(s)" in note for note in result.notes)
    for a, b in zip(seen["before"], seen["after"], strict=True):
        assert torch.equal(a, b)
    assert len(seen["state"]) == len(seen["params"])  # every parameter (replicas included) has moments
    steps = 2 * math.ceil(160 / 32)
    assert all(int(state["step"]) == steps for state in seen["state"])
    assert sum(bool(s["exp_avg_sq"].abs().sum() > 0) for s in seen["state"]) > len(seen["state"]) / 2
    assert seen["lr_after"] == seen["lr_before"]  # the schedule's LR is back for epoch 1
    assert not torch.equal(seen["bn_before"], seen["bn_after"])  # statistics adapt in train mode (as the paper)


def test_cold_start_keeps_the_schedule_and_is_paid_once(cache, tmp_path):
    worker = make_worker(cache, tmp_path, keep_epoch_checkpoints=True)
    warm = cfg(sched="cosine", warmup_epochs=0)
    assert worker.step("warm", warm, 0, 2).status == "ok"
    r1 = worker.step("cold", cfg(sched="cosine", warmup_epochs=0, spg_cold_start=1), 0, 1)
    r2 = worker.step("cold", cfg(sched="cosine", warmup_epochs=0, spg_cold_start=1), 1, 2)
    assert r1.status == r2.status == "ok"
    assert any("cold start" in n for n in r1.notes) and not any("cold start" in n for n in r2.notes)
    lrs = [h["lr"] for h in checkpoint(tmp_path, "cold", 2)["history"]]
    assert lrs == [h["lr"] for h in checkpoint(tmp_path, "warm", 2)["history"]]


# --- training only: export and continuation ---------------------------------------------------------------


def test_export_has_exactly_the_base_model(cache, tmp_path):
    worker = make_worker(cache, tmp_path)
    assert worker.step("x", cfg(lr=1e-2), 0, 2).status == "ok"
    best = load_file(str(tmp_path / "x" / "best.safetensors"))
    plain = timm.create_model("mobilenetv3_small_050", num_classes=10)
    plain.load_state_dict(best, strict=True)  # no replica key, none missing
    assert set(best) == set(plain.state_dict())
    assert sum(v.numel() for v in best.values()) == sum(v.numel() for v in plain.state_dict().values())
    exported = load_weights_file(MODEL, 10, tmp_path / "x" / "best.safetensors")  # what export/predict load
    assert sum(p.numel() for p in exported.parameters()) == sum(p.numel() for p in plain.parameters())
    # ... while the checkpoint carries the trained replicas, which did learn
    replicas = checkpoint(tmp_path, "x", 2)["extensions"]["spg"]["replicas"]
    assert len([k for k in replicas if k.endswith("linear.weight")]) == 3
    assert all(v.abs().sum() > 0 for k, v in replicas.items() if k.endswith("linear.weight"))


def test_two_steps_equal_one_step_with_spg(cache, tmp_path, deterministic):
    config = cfg(spg_cold_start=1, drop=0.2, mixup=0.8, mixup_prob=1.0, smoothing=0.1, batch_size=27,
                 opt="adamw", weight_decay=0.05)
    whole, split = make_worker(cache, tmp_path / "whole"), make_worker(cache, tmp_path / "split")
    assert whole.step("s", config, 0, 2).status == "ok"
    assert split.step("s", config, 0, 1).status == "ok"
    assert split.step("s", config, 1, 2).status == "ok"
    a, b = checkpoint(tmp_path / "whole", "s", 2), checkpoint(tmp_path / "split", "s", 2)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    ra, rb = a["extensions"]["spg"]["replicas"], b["extensions"]["spg"]["replicas"]
    assert ra.keys() == rb.keys() and all(torch.equal(ra[k], rb[k]) for k in ra)
    assert any(v.abs().sum() > 0 for k, v in ra.items() if k.endswith("weight"))
    for i, s in a["optimizer"]["state"].items():
        for k, v in s.items():
            assert torch.equal(v, b["optimizer"]["state"][i][k]), (i, k)


def test_a_model_without_a_single_head_fails_clearly(cache, tmp_path, monkeypatch):
    from qtt_cli.worker import worker as worker_module

    def two_heads(*args, **kwargs):
        model = timm.create_model("mobilenetv3_small_050", num_classes=10)
        model.get_classifier = lambda: (model.classifier, model.classifier)
        return model

    monkeypatch.setattr(worker_module, "create_model", two_heads)
    result = make_worker(cache, tmp_path).step("two", cfg(), 0, 1)
    assert result.status == "failed" and "single classifier head" in result.error


# --- search space -----------------------------------------------------------------------------------------


def test_spg_is_searchable_and_conditional():
    configs = sample_configs(build_space([MODEL]), 300, seed=0)
    on = [c for c in configs if c.spg]
    assert 0 < len(on) < len(configs)
    assert {c.spg_modules for c in on} == {1, 2, 3} and {c.spg_cold_start for c in on} == {0, 1, 2}
    assert all(c.spg_modules is None and c.spg_drop is None for c in configs if not c.spg)
    with pytest.raises(ConfigError, match="spg needs spg_modules"):
        PipelineConfig(model=MODEL, spg=True)
    with pytest.raises(ConfigError, match="spg_modules must be in 1..3"):
        PipelineConfig(model=MODEL, spg=True, spg_modules=4, spg_drop=0.2, spg_cold_start=0)


def test_user_can_force_spg_with_the_space_file(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("spg: true\nspg_modules: 2\nspg_drop: [0.1]\nspg_cold_start: 1\n")
    configs = sample_configs(load_space(path, [MODEL]), 20, seed=0)
    assert {(c.spg, c.spg_modules, c.spg_drop, c.spg_cold_start) for c in configs} == {(True, 2, 0.1, 1)}
    for text, message in [("spg_modules: 4\n", "at most 3"), ("spg_drop: 1\n", "between 0 and 1"),
                          ("spg: false\nspg_modules: 2\n", "spg_modules is only used when spg")]:
        path.write_text(text)
        with pytest.raises(SpaceFileError, match=message):
            load_space(path, [MODEL])


def test_the_table_encoding_ignores_spg():
    plain = PipelineConfig(model="dla46x_c.in1k")
    with_spg = PipelineConfig(model="dla46x_c.in1k", **SPG)
    assert encode([plain]).equals(encode([with_spg]))


# --- wide heads: low-rank replicas -------------------------------------------------------------------------


def test_wide_heads_get_low_rank_replicas_that_start_as_the_model():
    from qtt_cli.worker.strategies import spg as spg_module

    wide = timm.create_model("mobilenetv3_small_050", num_classes=5).eval()  # pre-logits width 1024
    spg = SequentialPolicyGradient(wide, modules=3, drop=0.2)
    r = spg_module.REPLICA_RANK
    assert spg.width == 1024 and spg.rank == r and r is not None and r < 1024
    assert sum(p.numel() for p in spg.parameters()) == 3 * (1024 * r + r * 1024 + 1024)  # vs 3 * (1024^2 + 1024)
    h = torch.randn(4, 1024)
    for replica in spg.replicas:
        replica.eval()  # no dropout: a fresh replica is exactly the identity, as a full-rank one
        with torch.no_grad():
            assert torch.equal(replica(h), h)
    narrow = timm.create_model("edgenext_xx_small", num_classes=5)  # width 168: the full Linear
    assert SequentialPolicyGradient(narrow, modules=3, drop=0.2).rank is None


def test_a_checkpoint_with_other_replica_shapes_is_refused():
    wide = timm.create_model("mobilenetv3_small_050", num_classes=5)
    low = SequentialPolicyGradient(wide, modules=2, drop=0.2)
    full = {"replicas": {f"{i}.linear.{p}": torch.zeros(1024, 1024) if p == "weight" else torch.zeros(1024)
                         for i in range(2) for p in ("weight", "bias")}}
    with pytest.raises(ValueError, match="another shape"):
        low.load_state_dict(full)
    low.load_state_dict(low.state_dict())  # its own state loads
