"""FinetuneWorker on real (tiny) data: exact continuation, hyperparameters reaching training, freezing,
schedules, deadlines, failures and checkpoint files. A random-weights MobileNetV3 at 32 px on 200 digits."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from worker_helpers import MODEL, SIDE, assert_same_state, make_worker

from qtt_cli.space.config import PipelineConfig
from qtt_cli.worker import apply_freezing, build_optimizer, build_scheduler, epoch_path
from qtt_cli.worker import worker as worker_module
from qtt_cli.worker.recipe import LossRecipe


@pytest.fixture
def cache(digits_cache):
    return digits_cache


def cfg(**kwargs) -> PipelineConfig:
    return PipelineConfig(**{"model": MODEL, "batch_size": 32, **kwargs})


def state_of(root: Path, pid: str, epoch: int) -> dict:
    return torch.load(epoch_path(root, pid, epoch), map_location="cpu", weights_only=True)


def test_two_steps_equal_one_uninterrupted_step(cache, tmp_path, deterministic):
    # mixup+cutmix with an odd last batch (160 % 27 = 25), dropout, smoothing, RNG-driven augmentation,
    # AdamW with cosine after warm-up: every source of state and randomness that continuation must carry.
    config = cfg(batch_size=27, opt="adamw", opt_betas="[0.9, 0.99]", weight_decay=0.05, sched="cosine",
                 warmup_epochs=1, warmup_lr=1e-4, lr=3e-3, drop=0.3, smoothing=0.1, mixup=0.8, cutmix=1.0,
                 mixup_prob=0.8, data_augmentation="trivial_augment", clip_grad=1.0)
    whole = make_worker(cache, tmp_path / "whole")
    split = make_worker(cache, tmp_path / "split")

    r_whole = whole.step("p1", config, 0, 2)
    r_a = split.step("p1", config, 0, 1)
    split.step("other", cfg(lr=0.05, opt="sgd", opt_betas=None), 0, 1)  # disturbs every global RNG
    r_b = split.step("p1", config, 1, 2)

    assert r_whole.status == r_a.status == r_b.status == "ok", (r_whole, r_a, r_b)
    assert [e.epoch for e in r_whole.epochs] == [e.epoch for e in r_a.epochs + r_b.epochs] == [1, 2]
    for x, y in zip(r_whole.epochs, r_a.epochs + r_b.epochs, strict=True):
        assert (x.val_top1, x.val_loss, x.train_loss) == (y.val_top1, y.val_loss, y.train_loss)
    assert_same_state(tmp_path / "whole", tmp_path / "split", "p1", 2)
    # the previous epoch's checkpoint is gone once the next is written
    assert not epoch_path(tmp_path / "split", "p1", 1).exists()


def test_a_configuration_trains_the_same_whatever_its_pipeline_id(cache, tmp_path, deterministic):
    # Pipeline ids are numbered in the order an optimizer starts pipelines; if they seeded training, one
    # different early decision would reshuffle the noise of every later pipeline (and two optimizers could not
    # be compared pipeline by pipeline). The random stream is the configuration's.
    config = cfg(lr=3e-3, drop=0.3, mixup=0.8, mixup_prob=1.0, data_augmentation="trivial_augment")
    first = make_worker(cache, tmp_path / "a").step("p0001", config, 0, 1)
    later = make_worker(cache, tmp_path / "b").step("p0007", config, 0, 1)
    other_seed = make_worker(cache, tmp_path / "c", seed=1).step("p0001", config, 0, 1)

    assert first.status == later.status == other_seed.status == "ok"
    assert first.epochs[0].train_loss == later.epochs[0].train_loss
    assert first.epochs[0].val_loss == later.epochs[0].val_loss
    assert_same_state(tmp_path / "a", tmp_path / "b", "p0001", 1, other_pid="p0007")
    assert other_seed.epochs[0].train_loss != first.epochs[0].train_loss  # the run's seed still matters


def test_a_configuration_keeps_its_random_stream_through_the_results_store(tmp_path):
    # A resumed run rebuilds configurations from Parquet rows; their stream must not change on the way.
    import pandas as pd

    from qtt_cli.worker.seeding import config_stream

    configs = [cfg(lr=3e-3, opt="sgd", opt_betas=None, momentum=0.9, weight_decay=1e-5),
               cfg(lr=1e-4, linear_probing=True, sched="step", decay_rate=0.1, decay_epochs=5, clip_grad=1.0)]
    pd.DataFrame([c.to_dict() for c in configs]).to_parquet(tmp_path / "c.parquet")
    back = [PipelineConfig.from_dict(row) for row in pd.read_parquet(tmp_path / "c.parquet").to_dict("records")]
    assert [config_stream(c) for c in back] == [config_stream(c) for c in configs]
    assert config_stream(configs[0]) != config_stream(configs[1])
    # ...and not through a batch size halved after running out of memory
    assert config_stream(configs[0]) == config_stream(dataclasses.replace(configs[0], batch_size=8))
    assert config_stream(configs[0]) != config_stream(cfg(lr=3e-3 * (1 + 1e-12), opt="sgd", opt_betas=None,
                                                          momentum=0.9, weight_decay=1e-5))


def test_optimizer_choices_reach_training(cache, tmp_path):
    from timm import create_model

    model = create_model("mobilenetv3_small_050", num_classes=10)
    sgd = build_optimizer(model, cfg(opt="sgd", opt_betas=None))
    assert isinstance(sgd, torch.optim.SGD)
    assert all(g["momentum"] == 0 and not g["nesterov"] for g in sgd.param_groups)
    mom = build_optimizer(model, cfg(opt="momentum", momentum=0.85, opt_betas=None))
    assert all(g["momentum"] == 0.85 and not g["nesterov"] for g in mom.param_groups)
    adamp = build_optimizer(model, cfg(opt="adamp", opt_betas="[0.0, 0.99]"))
    assert all(tuple(g["betas"]) == (0.0, 0.99) for g in adamp.param_groups)
    adam = build_optimizer(model, cfg(opt="adam", opt_betas="[0.9, 0.99]", weight_decay=1e-4))
    assert isinstance(adam, torch.optim.Adam)
    assert all(tuple(g["betas"]) == (0.9, 0.99) for g in adam.param_groups)
    assert {g["weight_decay"] for g in adam.param_groups} == {0.0, 1e-4}  # no decay on biases / norms
    # and through a real step: the trained optimizer state is classical momentum 0.85
    worker = make_worker(cache, tmp_path)
    assert worker.step("m", cfg(opt="momentum", momentum=0.85, opt_betas=None), 0, 1).status == "ok"
    groups = state_of(tmp_path, "m", 1)["optimizer"]["param_groups"]
    assert all(g["momentum"] == 0.85 and g["nesterov"] is False for g in groups)


def test_partial_freezing_keeps_the_earliest_share_fixed(cache, tmp_path):
    from timm import create_model

    model = create_model("mobilenetv3_small_050", num_classes=10)
    plan = apply_freezing(model, 0.5, linear_probing=False)
    largest = max(p.numel() for n, p in model.named_parameters() if n not in plan.head)
    assert abs(plan.frozen_numel - 0.5 * plan.backbone_numel) <= largest / 2
    names = [n for n, _ in model.named_parameters()]
    assert list(plan.frozen) == names[: len(plan.frozen)]  # a prefix, in the model's own order
    assert all(p.requires_grad for n, p in model.named_parameters() if n in plan.head)

    worker = make_worker(cache, tmp_path, keep_epoch_checkpoints=True)
    config = cfg(pct_to_freeze=0.5, opt="sgd", opt_betas=None, lr=0.1)
    assert worker.step("f", config, 0, 2).status == "ok"
    before, after = state_of(tmp_path, "f", 1)["model"], state_of(tmp_path, "f", 2)["model"]
    for n in plan.frozen:
        assert torch.equal(before[n], after[n]), n
    for norm in plan.frozen_norms:  # frozen BatchNorms keep their running statistics too
        assert torch.equal(before[f"{norm}.running_mean"], after[f"{norm}.running_mean"]), norm
    trained = [n for n in before if n not in plan.frozen and n.endswith("weight")]
    assert any(not torch.equal(before[n], after[n]) for n in trained)


def test_linear_probing_trains_only_the_head(cache, tmp_path):
    worker = make_worker(cache, tmp_path, keep_epoch_checkpoints=True)
    assert worker.step("lp", cfg(linear_probing=True, lr=0.01), 0, 2).status == "ok"
    before, after = state_of(tmp_path, "lp", 1)["model"], state_of(tmp_path, "lp", 2)["model"]
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"classifier.weight", "classifier.bias"}


def test_lr_follows_the_schedule_over_max_epochs_across_steps(cache, tmp_path):
    config = cfg(lr=0.01, sched="cosine", warmup_epochs=2, warmup_lr=1e-4, opt="sgd", opt_betas=None)
    worker = make_worker(cache, tmp_path, max_epochs=6)
    for start, end in [(0, 1), (1, 3), (3, 4)]:
        assert worker.step("s", config, start, end).status == "ok"
    used = [h["lr"] for h in state_of(tmp_path, "s", 4)["history"]]

    reference = build_scheduler(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.01), config, 6)
    expected = []
    for e in range(4):
        reference.step(e)
        expected.append(reference.optimizer.param_groups[0]["lr"])
    assert used == pytest.approx(expected, rel=1e-12)
    assert expected[0] == pytest.approx(1e-4)  # warm-up starts at warmup_lr
    assert expected[2] == pytest.approx(0.01 * (1 + math.cos(math.pi * 2 / 6)) / 2)  # cosine over 6 epochs


def test_deadline_in_the_past_interrupts_without_checkpoint(cache, tmp_path):
    result = make_worker(cache, tmp_path).step("d", cfg(), 0, 2, deadline=time.monotonic() - 1)
    assert result.status == "interrupted" and result.epochs == [] and result.error is None
    assert not epoch_path(tmp_path, "d", 1).exists()


def test_deadline_inside_an_epoch_discards_only_that_epoch(cache, tmp_path, monkeypatch):
    class Clock:  # advances one tick per deadline check, so the cut lands at a known batch
        calls = 0

        @staticmethod
        def monotonic():
            Clock.calls += 1
            return float(Clock.calls)

        perf_counter = staticmethod(time.perf_counter)

    monkeypatch.setattr(worker_module, "time", Clock)
    checks_per_epoch = 1 + math.ceil(len(cache.train) / 32) + math.ceil(len(cache.val) / 32)
    deadline = 1 + checks_per_epoch + 2.5  # inside the training batches of epoch 2
    result = make_worker(cache, tmp_path).step("d", cfg(), 0, 3, deadline=deadline)
    assert result.status == "interrupted", result
    assert [e.epoch for e in result.epochs] == [1]
    assert epoch_path(tmp_path, "d", 1).exists() and not epoch_path(tmp_path, "d", 2).exists()


def test_failures_are_reported_not_raised(cache, tmp_path):
    worker = make_worker(cache, tmp_path)
    bad = worker.step("x", cfg(model="no_such_model_anywhere"), 0, 1)
    assert bad.status == "failed" and "no_such_model_anywhere" in bad.error and bad.epochs == []
    missing = worker.step("y", cfg(), 2, 3)
    assert missing.status == "failed" and missing.error.startswith("FileNotFoundError")
    with pytest.raises(ValueError):
        worker.step("x", cfg(), 0, 5)  # beyond max_epochs: a programming error of the caller
    with pytest.raises(ValueError):
        worker.step("../escape", cfg(), 0, 1)


def test_nan_loss_is_diverged(cache, tmp_path, monkeypatch):
    class NanLoss(torch.nn.Module):
        def forward(self, out, target):
            return out.mean() * float("nan")

    monkeypatch.setattr(worker_module.recipe, "build_loss", lambda config, n: LossRecipe(NanLoss(), None))
    result = make_worker(cache, tmp_path).step("n", cfg(), 0, 2)
    assert result.status == "diverged" and "nan" in result.error and result.epochs == []
    assert not epoch_path(tmp_path, "n", 1).exists()


def test_checkpoint_files_and_retention(cache, tmp_path):
    worker = make_worker(cache, tmp_path)
    result = worker.step("c", cfg(amp=True), 0, 2)
    assert result.status == "ok"
    assert any("amp" in note for note in result.notes)  # CPU: amp requested but not used, and said so
    state = state_of(tmp_path, "c", 2)  # weights_only=True
    assert state["epoch"] == 2 and state["config"] == cfg(amp=True).to_dict()
    weights = load_file(tmp_path / "c" / "best.safetensors")
    assert weights.keys() == state["model"].keys()
    best = json.loads((tmp_path / "c" / "best.json").read_text())
    assert best["model"] == MODEL and best["num_classes"] == 10
    assert best["preprocessing"]["input_size"] == SIDE
    assert best["val_top1"] == max(e.val_top1 for e in result.epochs)
    assert all(0.0 <= e.val_top1 <= 100.0 and e.cost_s > 0 for e in result.epochs)

    worker.prune_checkpoints("c", keep_epoch=None)
    assert not epoch_path(tmp_path, "c", 2).exists()
    worker.remove_pipeline("c", keep_best=True)
    assert (tmp_path / "c" / "best.safetensors").exists()
    worker.remove_pipeline("c", keep_best=False)
    assert not (tmp_path / "c").exists()
