"""The in-process finetuning worker: one freeze-thaw step of one pipeline.

The predecessor started a new training process per epoch and read the score back from a CSV, paying process
start, model build and loader start every step and turning every error into a score of 0. Here a step runs in
the tuner's process: it builds (or restores) the pipeline, trains the requested epochs, evaluates and
checkpoints after each, and returns a :class:`StepResult` whose status says what happened. A bad pipeline
never raises; a wrong call (e.g. ``end_epoch > max_epochs``) does.

Continuation is exact: a step that resumes from ``epoch-<s>.pt`` restores weights, optimizer, schedule, AMP
scaler and RNG state and reseeds every generator per epoch from (seed, configuration, epoch), so k steps of one
epoch give the same weights as one step of k epochs (bit for bit on a deterministic device). When the same
worker trained epoch ``s`` of the pipeline in its previous step, it continues from the run still in memory
instead of reading that checkpoint back (``warm.py``); the checkpoint is written all the same.
"""

from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import clip_grad_norm_

from qtt_cli.data import ImageCache, eval_transform, make_loader, train_transform
from qtt_cli.hub import Weights, create_model, parse_weights, preprocessing_for
from qtt_cli.space.config import PipelineConfig
from qtt_cli.store.files import DiskFullError

from . import checkpoint, recipe, seeding, strategies  # noqa: F401 -- strategies register their extensions
from .extensions import Extension, ExtensionContext, TrainBatch, build_extensions
from .freezing import FreezePlan, apply_freezing, set_train_mode
from .results import EpochResult, StepResult
from .strategies.stochnorm import stoch_norm_notes
from .warm import WarmRun


class _Interrupted(Exception):
    """The deadline passed inside an epoch (internal control flow)."""


class _Diverged(Exception):
    """The loss became NaN or infinite (internal control flow)."""


@dataclass
class _Run:
    """Everything a step trains with; built fresh or restored from a checkpoint."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler
    losses: recipe.LossRecipe
    plan: FreezePlan
    preprocessing: object
    train_loader: torch.utils.data.DataLoader
    val_loader: torch.utils.data.DataLoader
    generator: torch.Generator
    use_amp: bool
    best_epoch: int | None = None
    best_top1: float = -math.inf
    history: list | None = None
    extensions: list[Extension] = field(default_factory=list)
    batch_size: int = 0  # the one trained with: the configured one, or smaller after running out of memory
    build_notes: list[str] = field(default_factory=list)  # what building it said; repeated by warm steps


class FinetuneWorker:
    """Trains pipelines on one cached dataset, a few epochs at a time.

    Args:
        cache: the decoded dataset (``qtt_cli.data.build_cache``); trains on ``train``, scores on ``val``.
        weights: where pretrained weights come from (``qtt_cli.hub.parse_weights``).
        checkpoint_root: folder of the per-pipeline checkpoint folders.
        max_epochs: the maximum fidelity; LR schedules span it, and no step may go beyond it.
        max_input_size: cap on the model input side (``qtt_cli.hub.preprocessing_for``).
        device: ``"cuda"``, ``"cuda:1"``, ``"cpu"``...; default CUDA when available, else CPU.
        seed: base seed; each pipeline's randomness derives from (seed, its configuration, epoch), not from
            its id (``seeding.config_stream``).
        num_workers: data loader processes (0 = load in this process).
        keep_epoch_checkpoints: keep every epoch checkpoint instead of only the latest of each pipeline.
        warm: continue a pipeline from memory when its previous step ran on this worker (``warm.py``); False
            restores every continued step from its checkpoint.
    """

    def __init__(
        self,
        cache: ImageCache,
        weights: Weights,
        checkpoint_root: Path,
        *,
        max_epochs: int = 50,
        max_input_size: int | None = None,
        device: str | None = None,
        seed: int = 0,
        num_workers: int = 0,
        keep_epoch_checkpoints: bool = False,
        warm: bool = True,
    ) -> None:
        if max_epochs < 1:
            raise ValueError(f"max_epochs must be >= 1, got {max_epochs}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.cache = cache
        self.weights = weights
        self.checkpoint_root = Path(checkpoint_root)
        self.max_epochs = max_epochs
        self.max_input_size = max_input_size
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.seed = seed
        self.num_workers = num_workers
        self.keep_epoch_checkpoints = keep_epoch_checkpoints
        self.num_classes = len(cache.classes)
        self.warm = WarmRun(enabled=warm)

    # ------------------------------------------------------------------ public API

    def step(
        self,
        pipeline_id: str,
        config: PipelineConfig,
        start_epoch: int,
        end_epoch: int,
        deadline: float | None = None,
    ) -> StepResult:
        """Train ``pipeline_id`` from ``start_epoch`` to ``end_epoch`` completed epochs.

        Args:
            pipeline_id: names the checkpoint folder; a plain name (letters, digits, ``._-``).
            config: the pipeline.
            start_epoch: epochs already trained (0 = start from the pretrained model).
            end_epoch: epochs trained when the step ends (<= ``max_epochs``).
            deadline: a ``time.monotonic()`` value; past it, the running epoch is discarded and the step ends
                with status ``interrupted``.

        Returns:
            The completed epochs and the status. Never raises for a bad pipeline.

        Raises:
            ValueError/TypeError: for impossible arguments (not for a pipeline that fails to train).
        """
        checkpoint.check_pipeline_id(pipeline_id)
        if not isinstance(config, PipelineConfig):
            raise TypeError(f"config must be a PipelineConfig, got {type(config).__name__}")
        if not 0 <= start_epoch <= end_epoch <= self.max_epochs:
            raise ValueError(f"need 0 <= start_epoch <= end_epoch <= max_epochs ({self.max_epochs}), "
                             f"got start_epoch={start_epoch}, end_epoch={end_epoch}")
        epochs: list[EpochResult] = []
        notes: list[str] = []
        started = time.perf_counter()
        status, error = "ok", None
        try:
            run = self._train(pipeline_id, config, start_epoch, end_epoch, deadline, epochs, notes)
            if run is not None:  # completed: its state is the checkpoint of end_epoch, just written
                self.warm.keep(pipeline_id, config, end_epoch, run, self.checkpoint_path(pipeline_id, end_epoch))
            run = None
        except _Interrupted:
            status = "interrupted"
        except _Diverged as e:
            status, error = "diverged", str(e)
        except DiskFullError:
            raise  # not the pipeline's fault: the tuner stops the run (the previous checkpoint is intact)
        except Exception as e:  # a bad pipeline (or an OOM) must not take the tuner down
            status, error = "failed", f"{type(e).__name__}: {e}"
        finally:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        # Everything else the step spent (model build, checkpoint restore and writes, DELTA's attention,
        # Co-Tuning's relationship, out-of-memory retries, an epoch cut at the deadline): the budget charges
        # it, so the store records it and the cost predictor learns it.
        overhead = max(0.0, time.perf_counter() - started - sum(e.cost_s for e in epochs))
        return StepResult(pipeline_id, epochs, status, error, notes, overhead_s=overhead)

    def prune_checkpoints(self, pipeline_id: str, keep_epoch: int | None) -> list[int]:
        """Delete the epoch checkpoints of ``pipeline_id`` except ``keep_epoch``; return those deleted."""
        return checkpoint.prune_checkpoints(self.checkpoint_root, pipeline_id, keep_epoch)

    def remove_pipeline(self, pipeline_id: str, keep_best: bool) -> None:
        """Delete all checkpoints of ``pipeline_id``; with ``keep_best`` its ``best.*`` files stay."""
        self.warm.forget(pipeline_id)
        checkpoint.remove_pipeline(self.checkpoint_root, pipeline_id, keep_best)

    def checkpoint_path(self, pipeline_id: str, epoch: int) -> Path:
        return checkpoint.epoch_path(self.checkpoint_root, pipeline_id, epoch)

    # ------------------------------------------------------------------ the step

    def _train(self, pid, config, start_epoch, end_epoch, deadline, epochs, notes) -> _Run | None:
        """Epochs ``start_epoch + 1 .. end_epoch``; returns the run (None when no epoch was asked for). One
        out-of-memory handler covers all of the step's work: building or restoring the run (DELTA's attention
        and Co-Tuning's relationship pass run there), the SPG cold start, training and evaluation. Out of
        memory anywhere halves the batch size and redoes the work since the last completed epoch from that
        epoch's state (or from scratch before epoch 1).

        The run kept in memory by this worker's previous step is taken first (and so released before any other
        run is built); it is used only if it is this pipeline's state at ``start_epoch``."""
        run: _Run | None = self._warm_run(pid, config, start_epoch, notes)
        batch_size: int | None = None  # None: the configured one, or the smaller one a checkpoint carries
        cold_start_cost = 0.0
        e = start_epoch
        while e < end_epoch:
            _check_deadline(deadline)
            try:
                if run is None:
                    run = self._prepare(pid, config, e, notes, batch_size=batch_size)
                    cold_start_cost = self._cold_start(run, config, deadline, notes) if e == 0 else 0.0
                seeding.reseed(self._seed(config, "epoch", e), run.generator)
                group = run.optimizer.param_groups[0]
                lr = float(group["lr"]) / group.get("lr_scale", 1.0)  # the schedule's LR, before layer decay
                t0 = time.perf_counter()
                train_loss = self._train_epoch(run, config, deadline)
                if not math.isfinite(train_loss):
                    raise _Diverged(f"training loss is {train_loss} in epoch {e + 1}")
                val_top1, val_loss = self._evaluate(run, deadline)
                failed = None
            except torch.OutOfMemoryError:
                # handled below, once the exception no longer holds the failed work's tensors
                failed = run.batch_size if run is not None else self._tried_batch_size(pid, config, e, batch_size)
            if failed is not None:
                run = None  # free the failed run before rebuilding it
                batch_size = self._smaller(failed, e, notes)
                continue
            cost = time.perf_counter() - t0 + (cold_start_cost if e == 0 else 0.0)
            if not math.isfinite(val_loss):
                raise _Diverged(f"validation loss is {val_loss} after epoch {e + 1}")
            run.scheduler.step(e + 1, val_top1)
            run.history.append({"epoch": e + 1, "lr": lr, "train_loss": train_loss, "val_top1": val_top1,
                                "val_loss": val_loss, "cost_s": cost})
            self._save(pid, config, run, e + 1, val_top1, val_loss)
            epochs.append(EpochResult(e + 1, val_top1, val_loss, train_loss, cost))
            e += 1
        return run

    def _warm_run(self, pid: str, config: PipelineConfig, start_epoch: int, notes: list[str]) -> _Run | None:
        """The run this worker kept after training epoch ``start_epoch`` of ``pid``, if its checkpoint is still
        the one it wrote; its build notes are repeated, as a restore would say them again."""
        run = self.warm.take(pid, config, start_epoch, self.checkpoint_path(pid, start_epoch))
        if run is not None:
            notes.extend(run.build_notes)
            if run.batch_size != config.batch_size:  # halved after running out of memory in an earlier step
                notes.append(_smaller_batch_note(run.batch_size, config))
        return run

    def _cold_start(self, run: _Run, config: PipelineConfig, deadline: float | None,
                    notes: list[str]) -> float:
        """Optimizer cold start (SPG paper, Sec. 4.1): the extensions' ``cold_start_epochs`` epochs of training
        with learning rate 0, so that Adam-type moment estimates settle on the new task before any weight
        moves. Returns its seconds.

        How it is counted: it runs once per pipeline, before epoch 1 of a step that starts from the pretrained
        model; a continued step finds its effect in the checkpoint's optimizer state, so splitting the epochs
        into freeze-thaw steps does not change it. It is not a fidelity epoch: nothing is evaluated or
        checkpointed, and the epoch count and the LR schedule over ``max_epochs`` are unchanged (epoch 1 trains
        at the schedule's first LR). Its time is added to epoch 1's cost, so that cost predictions and the
        budget see it. With LR 0 no parameter moves under any optimizer of the space (decoupled weight decay is
        scaled by the LR, coupled weight decay only enters the moments); normalisation statistics adapt, as in
        the paper (train mode). Each cold-start epoch is seeded from (seed, configuration, "cold-start", i).
        """
        epochs = max((ext.cold_start_epochs for ext in run.extensions), default=0)
        if epochs == 0:
            return 0.0
        t0 = time.perf_counter()
        groups = run.optimizer.param_groups
        scheduled = [group["lr"] for group in groups]
        for group in groups:
            group["lr"] = 0.0
        try:
            for i in range(epochs):
                _check_deadline(deadline)
                seeding.reseed(self._seed(config, "cold-start", i), run.generator)
                train_loss = self._train_epoch(run, config, deadline)
                if not math.isfinite(train_loss):
                    raise _Diverged(f"training loss is {train_loss} in cold-start epoch {i + 1}")
        finally:
            for group, lr in zip(groups, scheduled, strict=True):
                group["lr"] = lr
        cost = time.perf_counter() - t0
        notes.append(f"optimizer cold start: {epochs} epoch(s) at learning rate 0 before epoch 1 "
                     f"({cost:.2f} s, counted in epoch 1's cost)")
        return cost

    def _seed(self, config: PipelineConfig, *parts: object) -> int:
        """The seed of one use of ``config``'s random stream (keyed by configuration, not pipeline id)."""
        return seeding.stable_seed(self.seed, seeding.config_stream(config), *parts)

    def _smaller(self, failed: int, epoch: int, notes: list[str]) -> int:
        """Half the batch size ``failed`` that ran out of memory, after freeing what the failed work held; the
        run is then rebuilt as it was before ``epoch`` (from its checkpoint, or fresh at epoch 0). The smaller
        size is saved in the checkpoints and kept on continuation."""
        smaller = _halved(failed)
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        notes.append(f"batch size {failed} does not fit in {self.device.type} memory: halved to {smaller}, "
                     f"epoch {epoch + 1} restarted; the pipeline continues with {smaller}")
        return smaller

    def _tried_batch_size(self, pid: str, config: PipelineConfig, epoch: int, batch_size: int | None) -> int:
        """The batch size a ``_prepare`` that ran out of memory was building with (a rare path: it reads the
        checkpoint's saved size again)."""
        if batch_size is not None:
            return batch_size
        if epoch == 0:
            return config.batch_size
        state = checkpoint.load_epoch(checkpoint.epoch_path(self.checkpoint_root, pid, epoch))
        return int(state.get("batch_size", config.batch_size))

    def _prepare(self, pid: str, config: PipelineConfig, start_epoch: int, notes: list[str],
                 batch_size: int | None = None) -> _Run:
        """Build the run, or restore it from the checkpoint of ``start_epoch``; ``batch_size`` overrides the
        configured one (and the smaller one a checkpoint may carry after running out of memory)."""
        first_note = len(notes)
        state = None
        if start_epoch > 0:
            state = checkpoint.load_epoch(checkpoint.epoch_path(self.checkpoint_root, pid, start_epoch))
            self._check_compatible(state, config, start_epoch)
        if batch_size is None:
            batch_size = int(state.get("batch_size", config.batch_size)) if state is not None else config.batch_size
            if batch_size != config.batch_size:
                notes.append(_smaller_batch_note(batch_size, config))
        seeding.reseed(self._seed(config, "init"))
        weights = parse_weights("random") if state is not None else self.weights
        model = create_model(config.model, self.num_classes, weights, drop_rate=config.drop)
        if state is not None:
            model.load_state_dict(state["model"])
        if config.stoch_norm:  # before freezing and the optimizer; keeps parameters and state_dict keys
            notes.extend(stoch_norm_notes(model))
        pre = preprocessing_for(model, self.max_input_size)
        plan = apply_freezing(model, config.pct_to_freeze, config.linear_probing)
        model.to(self.device)

        extensions = build_extensions(ExtensionContext(
            config=config,
            model=model,
            num_classes=self.num_classes,
            device=self.device,
            reference_model=lambda: self._reference_model(config),
            train_loader=lambda: make_loader(self.cache.train, eval_transform(pre), batch_size,
                                             shuffle=False, generator=None, num_workers=self.num_workers),
            resumed=state is not None,
            source_model=lambda: self._source_model(config),
            note=notes.append,
        ))
        optimizer = recipe.build_optimizer(model, config)
        extra = [p for ext in extensions for p in ext.parameters()]
        if extra:  # before the scheduler, so that it schedules this group too
            optimizer.add_param_group({"params": extra, "weight_decay": config.weight_decay})
        scheduler = recipe.build_scheduler(optimizer, config, self.max_epochs)
        use_amp = config.amp and self.device.type == "cuda"
        if config.amp and not use_amp:
            notes.append(f"amp requested but not used on {self.device.type}: trained in float32")
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
        if state is not None:
            saved = state.get("extensions", {})
            for ext in extensions:
                ext.load_state_dict(saved[ext.name])
            optimizer.load_state_dict(state["optimizer"])
            recipe.load_scheduler_state(scheduler, state["scheduler"])
            if use_amp and state["scaler"]:
                scaler.load_state_dict(state["scaler"])

        generator = torch.Generator()
        if state is not None:
            seeding.restore(state["rng"], generator)
        train_images, val_images = self.cache.train, self.cache.val
        if batch_size > len(train_images):
            notes.append(f"batch_size {batch_size} > {len(train_images)} training images: "
                         "one batch per epoch")
        pin = self.device.type == "cuda"
        # a last batch of one image breaks BatchNorm in train mode; drop it (timm drops every last batch)
        drop_last = len(train_images) > batch_size and len(train_images) % batch_size == 1
        views = max((ext.views_per_image for ext in extensions), default=1)
        train_loader = make_loader(train_images, train_transform(pre, config), batch_size, shuffle=True,
                                   generator=generator, num_workers=self.num_workers, drop_last=drop_last,
                                   pin_memory=pin, views=views)
        val_loader = make_loader(val_images, eval_transform(pre), batch_size, shuffle=False, generator=None,
                                 num_workers=self.num_workers, pin_memory=pin)
        losses = recipe.build_loss(config, self.num_classes)
        run = _Run(model, optimizer, scheduler, scaler, losses, plan, pre, train_loader, val_loader, generator,
                   use_amp, history=[], extensions=extensions, batch_size=batch_size,
                   build_notes=notes[first_note:])
        if state is not None:
            run.best_epoch = state["best"]["epoch"]
            run.best_top1 = state["best"]["val_top1"]
            run.history = list(state["history"])
        return run

    def _reference_model(self, config: PipelineConfig) -> nn.Module:
        """The pipeline's initial model (pretrained weights, or the same random init), frozen, for
        regularisers that compare against where finetuning started."""
        with torch.random.fork_rng(devices=[]):
            seeding.reseed(self._seed(config, "init"))
            model = create_model(config.model, self.num_classes, self.weights, drop_rate=0.0)
        model.requires_grad_(False)
        return model.eval().to(self.device)

    def _source_model(self, config: PipelineConfig) -> tuple[nn.Module | None, str]:
        """The initial model with the classifier of its source task (e.g. the 1000 ImageNet classes), frozen, for
        Co-Tuning; or (None, why not)."""
        if not self.weights.pretrained:
            return None, "random weights"
        import timm

        source_classes = getattr(timm.models.get_pretrained_cfg(config.model), "num_classes", 0)
        if not source_classes:
            return None, "its pretrained configuration has no classifier"
        try:
            with torch.random.fork_rng(devices=[]):
                model = create_model(config.model, source_classes, self.weights, drop_rate=0.0)
        except Exception as e:  # noqa: BLE001 - e.g. a weights file without the classifier
            return None, f"no {source_classes}-class classifier in the weights: {type(e).__name__}: {e}"
        model.requires_grad_(False)
        return model.eval().to(self.device), ""

    def _check_compatible(self, state: dict, config: PipelineConfig, start_epoch: int) -> None:
        expected = {"epoch": start_epoch, "config": config.to_dict(), "num_classes": self.num_classes,
                    "max_epochs": self.max_epochs, "seed": self.seed}
        wrong = [k for k, v in expected.items() if state.get(k) != v]
        if wrong:
            raise ValueError(f"checkpoint of epoch {start_epoch} does not match this step "
                             f"(differs in: {', '.join(wrong)}); continuing it would not be the same run")

    def _train_epoch(self, run: _Run, config: PipelineConfig, deadline: float | None) -> float:
        set_train_mode(run.model, run.plan)
        device = self.device
        trainable = [p for group in run.optimizer.param_groups for p in group["params"]]  # with extensions
        total = torch.zeros((), dtype=torch.float64, device=device)
        seen = 0
        for x, y in run.train_loader:
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            for ext in run.extensions:
                x = ext.select_inputs(run.model, x, y)
            target = y
            if run.losses.mixup is not None:
                x, target = recipe.mix_batch(run.losses.mixup, x, y)
            with torch.autocast(device.type, dtype=torch.float16, enabled=run.use_amp):
                if run.extensions:
                    features = run.model.forward_features(x)
                    out = run.model.forward_head(features)
                    loss = run.losses.train_loss(out, target)
                    batch = TrainBatch(run.model, x, y, target, features, out)
                    for ext in run.extensions:
                        term = ext.loss(batch)
                        if term is not None:
                            loss = loss + term
                else:
                    out = run.model(x)
                    loss = run.losses.train_loss(out, target)
            run.optimizer.zero_grad(set_to_none=True)
            run.scaler.scale(loss).backward()
            if config.clip_grad is not None:
                run.scaler.unscale_(run.optimizer)
                clip_grad_norm_(trainable, config.clip_grad)
            run.scaler.step(run.optimizer)
            run.scaler.update()
            total += loss.detach().double() * len(x)
            seen += len(x)
            _check_deadline(deadline)
        if seen == 0:
            raise RuntimeError("the training split gave no batches")
        return float(total.item() / seen)

    def _evaluate(self, run: _Run, deadline: float | None) -> tuple[float, float]:
        run.model.eval()
        device = self.device
        correct = torch.zeros((), dtype=torch.int64, device=device)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        seen = 0
        with torch.inference_mode():
            for x, y in run.val_loader:
                x = x.to(device, non_blocking=True)
                y = y.to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=torch.float16, enabled=run.use_amp):
                    out = run.model(x)
                out = out.float()
                loss_sum += nn.functional.cross_entropy(out, y, reduction="sum").double()
                correct += (out.argmax(dim=1) == y).sum()
                seen += len(y)
                _check_deadline(deadline)
        if seen == 0:
            raise RuntimeError("the validation split is empty")
        return 100.0 * float(correct.item()) / seen, float(loss_sum.item()) / seen

    def _save(self, pid: str, config: PipelineConfig, run: _Run, epoch: int, val_top1: float,
              val_loss: float) -> None:
        improved = val_top1 > run.best_top1
        if improved:
            run.best_epoch, run.best_top1 = epoch, val_top1
        model_state = {k: v.detach().cpu() for k, v in run.model.state_dict().items()}
        state = {
            "pipeline_id": pid,
            "epoch": epoch,
            "config": config.to_dict(),
            "model_name": config.model,
            "num_classes": self.num_classes,
            "max_epochs": self.max_epochs,
            "seed": self.seed,
            "model": model_state,
            "optimizer": run.optimizer.state_dict(),
            "scheduler": recipe.scheduler_state(run.scheduler),
            "scaler": run.scaler.state_dict() if run.use_amp else {},
            "rng": seeding.capture(run.generator),
            "best": {"epoch": run.best_epoch, "val_top1": run.best_top1},
            "history": run.history,
            "extensions": {ext.name: ext.state_dict() for ext in run.extensions},
            "batch_size": run.batch_size,
        }
        checkpoint.save_epoch(checkpoint.epoch_path(self.checkpoint_root, pid, epoch), state)
        if improved:
            checkpoint.save_best(self.checkpoint_root, pid, model_state, {
                "pipeline_id": pid,
                "epoch": epoch,
                "val_top1": val_top1,
                "val_loss": val_loss,
                "model": config.model,
                "num_classes": self.num_classes,
                "classes": list(self.cache.classes),
                "preprocessing": run.preprocessing.to_dict(),
            })
        if not self.keep_epoch_checkpoints:
            for old in checkpoint.epochs_on_disk(self.checkpoint_root, pid):
                if old < epoch:
                    checkpoint.epoch_path(self.checkpoint_root, pid, old).unlink(missing_ok=True)


def _halved(batch_size: int) -> int:
    """Half of ``batch_size`` after it ran out of memory; a batch of one that does not fit is a failure."""
    if batch_size <= 1:
        raise torch.OutOfMemoryError("a batch of one image does not fit in memory")
    return batch_size // 2


def _check_deadline(deadline: float | None) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise _Interrupted


def _smaller_batch_note(batch_size: int, config: PipelineConfig) -> str:
    return f"trained with batch size {batch_size}: {config.batch_size} did not fit in memory in an earlier step"
