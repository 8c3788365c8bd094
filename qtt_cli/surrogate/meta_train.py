"""Meta-training the predictors on learning curves of other datasets (Algorithm 2 of the Quick-Tune appendix).

Repeatedly: pick one meta-training dataset uniformly at random, take a batch of its observations (random
curves cut at random epochs, see ``curve_batch``) plus far-epoch targets beyond each cut (``horizon_batch``:
without them the networks only ever learn the epoch right after a prefix), condition the GP on that batch
and take one Adam step on −mll + the cost MSE (learning rate decayed along a cosine). Every ``eval_every``
iterations the held-out meta-validation datasets' negative log-likelihood (``Surrogate.nll``) decides early
stopping; the best weights are kept.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qtt_cli.metadataset import CurveSet
from qtt_cli.space.encoding import TABLE_COLUMNS

from .features import Scaler, observations
from .surrogate import Surrogate, _gp_settings, _Trainer, training_batch

__all__ = [
    "REPORT_FILE",
    "ProgressCallback",
    "meta_train",
    "meta_train_directories",
    "split_validation",
    "union_columns",
]

REPORT_FILE = "meta-train.json"

ProgressCallback = Callable[[int, int, dict[str, Any]], None]


def union_columns(curvesets: Sequence[CurveSet]) -> list[str]:
    """The table's columns plus every extra model column of ``curvesets`` (first seen first)."""
    columns = list(TABLE_COLUMNS)
    for cs in curvesets:
        columns += [str(c) for c in cs.features.columns if c not in columns]
    return columns


def meta_train(
    train: Sequence[CurveSet],
    val: Sequence[CurveSet],
    *,
    iterations: int = 2000,
    batch_size: int = 256,
    lr: float = 1e-3,
    seed: int = 0,
    patience: int = 8,
    eval_every: int = 100,
    progress: ProgressCallback | None = None,
    hyper: dict[str, Any] | None = None,
) -> tuple[Surrogate, dict[str, Any]]:
    """Meta-train a new surrogate on ``train``, early-stopped on ``val`` (may be empty: no early stopping).

    Args:
        iterations: the most Adam steps (one dataset, one batch each).
        patience: evaluations without a better validation NLL before stopping.
        eval_every: iterations between validation evaluations.
        progress: called after every iteration as ``progress(iteration, iterations, metrics)``.
        hyper: surrogate settings overriding ``DEFAULT_HYPER``.

    Returns:
        The surrogate with the weights of its best validation NLL, and a report (validation NLL curve,
        untrained and best NLL, iterations run, seconds).
    """
    train = [cs for cs in train if cs.num_observations]
    if not train:
        raise ValueError("meta-training needs at least one dataset with observed learning curves")
    val = [cs for cs in val if cs.num_observations]
    started = time.perf_counter()
    scaler = Scaler.fit(train)
    # the epoch limit of the training data becomes the surrogate's fidelity scale, kept with its weights
    scale = float(max(cs.max_epochs for cs in train))
    surrogate = Surrogate.new(
        union_columns([*train, *val]), seed=seed, scaler=scaler, fidelity_scale=scale, **(hyper or {})
    )
    obs = [observations(cs, surrogate.layout, scaler) for cs in train]
    surrogate.nets.gp.set_mean_level(float(np.concatenate([o.targets for o in obs]).mean()))

    untrained_scores = surrogate.evaluate(val, seed=seed) if val else None
    untrained = untrained_scores["nll"] if val else None
    best_nll, best_iteration = untrained, 0
    best_state = _snapshot(surrogate)
    curve: list[list[float]] = [[0, untrained]] if val else []
    train_curve: list[list[float]] = []
    trainer = _Trainer(surrogate, lr, hold_offset=True)  # the GP constant stays 0 (see _Trainer)
    # Cosine decay to 5% of lr: switching datasets every step makes late full-rate steps jump between
    # dataset-specific optima (the validation NLL then oscillates instead of settling).
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(trainer.optimizer, T_max=iterations, eta_min=0.05 * lr)
    rng = np.random.default_rng(seed)
    losses: list[float] = []
    stale, iteration = 0, 0
    with torch.random.fork_rng(), _gp_settings():
        torch.manual_seed(seed)
        for iteration in range(1, iterations + 1):
            o = obs[int(rng.integers(len(obs)))]
            losses.append(trainer.step(o, *training_batch(o, rng, batch_size, surrogate.hyper["horizon_targets"])))
            schedule.step()
            metrics: dict[str, Any] = {"loss": float(np.mean(losses[-50:]))}
            if iteration % eval_every == 0 or iteration == iterations:
                train_curve.append([iteration, metrics["loss"]])
                if val:
                    nll = surrogate.nll(val, seed=seed)
                    curve.append([iteration, nll])
                    metrics["val_nll"] = nll
                    if nll < best_nll:
                        best_nll, best_iteration, stale = nll, iteration, 0
                        best_state = _snapshot(surrogate)
                    else:
                        stale += 1
            if progress is not None:
                progress(iteration, iterations, metrics)
            if val and stale >= patience:
                break
    if val:
        surrogate.nets.load_state_dict(best_state)
    else:
        best_iteration = iteration
    report = {
        "val_scores": {"untrained": untrained_scores, "best": surrogate.evaluate(val, seed=seed) if val else None},
        "iterations_run": iteration,
        "best_iteration": best_iteration,
        "untrained_val_nll": untrained,
        "best_val_nll": best_nll,
        "val_nll_curve": curve,
        "train_loss_curve": train_curve,
        "seconds": round(time.perf_counter() - started, 1),
        "train_datasets": [cs.name for cs in train],
        "val_datasets": [cs.name for cs in val],
        "settings": {
            "iterations": iterations,
            "batch_size": batch_size,
            "lr": lr,
            "seed": seed,
            "patience": patience,
            "eval_every": eval_every,
        },  # fmt: skip
    }
    surrogate.info.update({"trained_steps": best_iteration, "meta_training": report})
    return surrogate, report


def _snapshot(surrogate: Surrogate) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in surrogate.nets.state_dict().items()}


def split_validation(
    curvesets: Sequence[CurveSet], count: int, seed: int, *, candidates: Sequence[str] | None = None
) -> tuple[list[CurveSet], list[CurveSet]]:
    """(train, val): ``count`` datasets drawn at random (seeded) for meta-validation, from ``candidates``
    (dataset names; default: all). At least one dataset always stays for training."""
    names = [cs.name for cs in curvesets if candidates is None or cs.name in set(candidates)]
    count = max(0, min(count, len(names), len(curvesets) - 1))
    chosen = set(np.random.default_rng(seed).choice(sorted(names), size=count, replace=False).tolist())
    return [cs for cs in curvesets if cs.name not in chosen], [cs for cs in curvesets if cs.name in chosen]


def meta_train_directories(
    meta_datasets: Sequence[Path],
    runs: Sequence[Path],
    out: Path,
    *,
    val_datasets: int = 3,
    seed: int = 0,
    progress: ProgressCallback | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Read meta-dataset and run directories, meta-train (``options`` go to :func:`meta_train`), save the
    surrogate and ``meta-train.json`` (the report) to ``out``. Validation datasets come from the
    meta-datasets only; runs always train."""
    from qtt_cli.metadataset import load_meta_dataset, load_run, without_degenerate

    # the meta-dataset's broken linear-probing records are left out (qtt_cli.metadataset.degenerate); runs
    # are real measurements and train as they are
    sets = [without_degenerate(cs) for root in meta_datasets for cs in load_meta_dataset(root)]
    names = [cs.name for cs in sets]
    run_sets = [load_run(run) for run in runs]
    train, val = split_validation([*sets, *run_sets], val_datasets, seed, candidates=names)
    surrogate, report = meta_train(train, val, seed=seed, progress=progress, **options)
    report["sources"] = {"meta_datasets": [str(p) for p in meta_datasets], "runs": [str(p) for p in runs]}
    surrogate.info["meta_training"] = report
    surrogate.save(out)
    (Path(out) / REPORT_FILE).write_text(json.dumps(report, indent=1))
    return report
