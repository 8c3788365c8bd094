"""`qtt bench`: replay every optimizer on every dataset of a meta-dataset and compare their regret over time.

Protocol (Section 6 and Appendix A.1 of the Quick-Tune paper):

- Leave-datasets-out meta-training: the datasets are split into ``folds`` folds; the priors used on a dataset
  are meta-trained on the other folds only (a few of those datasets held out for early stopping), so a
  dataset is never in the meta-training data of its own benchmark run. Each fold's surrogate is cached in
  ``OUT/priors/seed-S/fold-K`` and reused only when the fold, the meta-training settings, their defaults and
  the code that meta-trains are unchanged (a hash of the ``surrogate`` and ``metadataset`` sources is part of
  the key). Meta-training leaves out the meta-dataset's degenerate records (``qtt_cli.metadataset.degenerate``).
- Priors per seed (the default): search seed ``S`` uses fold priors meta-trained with seed ``1000 S + K``, so
  the seeds also sample the meta-training's randomness. Meta-training is deterministic on one machine but not
  across CPUs, and shared priors made every search of a bench depend on one draw of them: the same code rerun
  on another machine moved the mean regret by 0.015-0.020 (docs/bench/posterior-incumbent-paper-s012), more
  than the standard error over dataset x seed pairs said. ``shared_priors`` (``--shared-priors``) restores
  one set of fold priors for all seeds (meta seed ``K``, in ``OUT/priors/fold-K``; the protocol of the
  benchmarks before this option).
- ``drop_degenerate``: those records are also removed from the replayed candidates (and from the regret
  range), so that a gain cannot come from them; off by default (the paper's protocol).
- Each (dataset, optimizer, seed) search runs once with the largest budget, and the smaller budgets are read
  off the same trace, for optimizers that do not plan with the budget (a shorter search is then a prefix of
  a longer one). Quick-Tune with cost cooling (an ablation) plans with it, so it runs once per budget;
  between two budgets its curve is read off the run with the next larger budget.
- Metric: normalized regret of the best accuracy found so far, and the rank of the optimizers per
  (dataset, seed, budget); averaged over datasets and seeds.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from qtt_cli.bench.metrics import normalized_regret, paired_differences, regret_range, summarize
from qtt_cli.bench.replay import Trace, recorded_configs, replay
from qtt_cli.metadataset import CurveSet, load_meta_dataset, without_degenerate
from qtt_cli.optimizer import Optimizer, RandomSearch, SuccessiveHalving

__all__ = ["OPTIMIZERS", "BenchSettings", "BenchResult", "assign_folds", "make_optimizer", "run_bench"]

# name -> (label, uses meta-learned priors)
OPTIMIZERS: dict[str, tuple[str, bool]] = {
    "random": ("Random search", False),
    "asha": ("ASHA (η=3)", False),
    "dyhpo": ("QT −M −C (DyHPO-like)", False),
    "quicktune-no-cost": ("QT −C (no cost)", True),
    "quicktune-no-meta": ("QT −M (no meta-learning)", False),
    "quicktune": ("Quick-Tune", True),
    "quicktune-cooled": ("Quick-Tune + cost cooling", True),
    "quicktune-run-noise": ("Quick-Tune + run's noise", True),
}


class _Variant(NamedTuple):
    """A Quick-Tune variant: which of its parts are on (the ablations of the paper, and of this project)."""

    meta: bool  # meta-learned priors
    cost: bool  # EI per predicted second (else plain EI)
    cooling: bool = False  # cost cooling (planned with the budget)
    run_noise: bool = False  # the GP's noise learns at its own, faster rate (FitSchedule.noise_lr)


RUN_NOISE_LR = 1e-2  # the noise's rate in quicktune-run-noise (the method embeddings' rate; not tuned)

_VARIANTS: dict[str, _Variant] = {
    "dyhpo": _Variant(meta=False, cost=False),
    "quicktune-no-cost": _Variant(meta=True, cost=False),
    "quicktune-no-meta": _Variant(meta=False, cost=True),
    "quicktune": _Variant(meta=True, cost=True),
    "quicktune-cooled": _Variant(meta=True, cost=True, cooling=True),
    "quicktune-run-noise": _Variant(meta=True, cost=True, run_noise=True),
}

RESULTS_FILE = "results.csv"
SUMMARY_FILE = "summary.csv"
PAIRED_FILE = "paired.csv"
PLOT_FILE = "regret.png"
GRID_POINTS = 48


@dataclass(frozen=True)
class BenchSettings:
    """Arguments of :func:`run_bench` (the options of ``qtt bench``).

    Args:
        meta_dataset: a directory in the Quick-Tune meta-dataset format.
        out: output directory (results, plot, cached fold priors); nothing is written elsewhere.
        budgets_s: budgets of recorded seconds at which the table reports regret and rank.
        seeds: searches per (dataset, optimizer), seeds ``first_seed .. first_seed + seeds - 1``.
        first_seed: the first seed (a replication with seeds not looked at during development).
        optimizers: names from :data:`OPTIMIZERS`.
        datasets: the datasets to benchmark (all by default); meta-training may still use the others.
        folds: folds of the leave-datasets-out meta-training.
        delta_t: epochs per freeze-thaw step.
        meta_iterations: meta-training iterations per fold (Algorithm 2), with early stopping.
        jobs: parallel processes for the searches.
        workers: simulated parallel workers per search (``qtt tune --workers``): W steps in flight, the
            budget in wall-clock seconds of recorded cost (:mod:`qtt_cli.bench.parallel`).
        drop_degenerate: remove the meta-dataset's degenerate records from the replayed candidates.
        shared_priors: one set of fold priors for every seed (else each seed meta-trains its own).
    """

    meta_dataset: Path
    out: Path
    budgets_s: tuple[float, ...] = (3600.0, 4 * 3600.0, 16 * 3600.0)
    seeds: int = 3
    first_seed: int = 0
    optimizers: tuple[str, ...] = tuple(OPTIMIZERS)
    datasets: tuple[str, ...] | None = None
    folds: int = 6
    delta_t: int = 1
    meta_iterations: int = 2000
    jobs: int = 1
    meta_options: dict[str, Any] = field(default_factory=dict)
    drop_degenerate: bool = False
    workers: int = 1
    shared_priors: bool = False

    def __post_init__(self) -> None:
        problems = []
        unknown = [o for o in self.optimizers if o not in OPTIMIZERS]
        if unknown:
            problems.append(f"unknown optimizer(s) {unknown}; choose from {', '.join(OPTIMIZERS)}")
        if not self.optimizers:
            problems.append("choose at least one optimizer")
        if not self.budgets_s or min(self.budgets_s) <= 0:
            problems.append("budgets must be positive")
        if self.seeds < 1:
            problems.append("--seeds must be >= 1")
        if self.first_seed < 0:
            problems.append("--first-seed must be >= 0")
        if self.folds < 2:
            problems.append("--folds must be >= 2 (a dataset's priors must not have seen it)")
        if self.delta_t < 1:
            problems.append("--delta-t must be >= 1")
        if self.meta_iterations < 1:
            problems.append("--meta-iterations must be >= 1")
        if self.jobs < 1:
            problems.append("--jobs must be >= 1")
        if self.workers < 1:
            problems.append("--workers must be >= 1")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass(frozen=True)
class BenchResult:
    results: pd.DataFrame  # one row per dataset, optimizer, seed, budget on the grid
    summary: pd.DataFrame  # mean regret / rank per optimizer at the requested budgets
    files: dict[str, Path]


def assign_folds(names: Sequence[str], folds: int, seed: int = 0) -> list[list[str]]:
    """Datasets split into ``folds`` groups of (almost) equal size, in a seeded random order."""
    names = sorted(names)
    if folds > len(names):
        raise ValueError(f"--folds {folds} is more than the {len(names)} datasets of the meta-dataset")
    order = np.random.default_rng(seed).permutation(len(names))
    return [sorted(names[i] for i in chunk) for chunk in np.array_split(order, folds)]


def fold_split(names: Sequence[str], folds: list[list[str]], k: int, seed: int = 0) -> dict[str, list[str]]:
    """Fold ``k``: test = its datasets; of the others ~20 % validate (early stopping), the rest meta-train."""
    rest = sorted(n for n in names if n not in folds[k])
    rng = np.random.default_rng(seed + 1000 + k)
    n_val = max(1, round(0.2 * len(rest))) if len(rest) > 1 else 0
    val = sorted(rng.choice(rest, size=n_val, replace=False).tolist()) if n_val else []
    return {"test": list(folds[k]), "train": [n for n in rest if n not in val], "val": val}


def make_optimizer(name: str, curveset: CurveSet, *, priors: Any, seed: int, delta_t: int) -> Optimizer:
    """The optimizer ``name`` replaying ``curveset`` (priors: the fold's meta-trained surrogate)."""
    from qtt_cli.optimizer.quicktune import QuickTune

    if name == "random":
        return RandomSearch(recorded_configs(curveset), max_epochs=curveset.max_epochs, delta_t=delta_t, seed=seed)
    if name == "asha":
        return SuccessiveHalving(
            recorded_configs(curveset), max_epochs=curveset.max_epochs, delta_t=delta_t, eta=3, seed=seed
        )
    from qtt_cli.optimizer import AcquisitionSettings, FitSchedule

    if name not in _VARIANTS:
        raise ValueError(f"unknown optimizer {name!r}")
    variant = _VARIANTS[name]
    if variant.meta and priors is None:
        raise ValueError(f"{name} needs meta-learned priors")
    acquisition = AcquisitionSettings(cost_cooling=variant.cooling, skip_unaffordable=variant.cooling)
    schedule = FitSchedule(noise_lr=RUN_NOISE_LR) if variant.run_noise else FitSchedule()
    return QuickTune.for_recorded(
        curveset, delta_t=delta_t, priors=priors if variant.meta else None, use_cost=variant.cost, seed=seed,
        acquisition=acquisition, schedule=schedule,
    )


def plans_with_budget(name: str) -> bool:
    """Whether optimizer ``name`` runs once per budget (see the module docstring)."""
    variant = _VARIANTS.get(name)
    return variant is not None and variant.cost and variant.cooling


def run_bench(settings: BenchSettings, progress: Callable[[str, int, int], None] | None = None) -> BenchResult:
    """Meta-train the fold priors (cached), replay every search, write ``results.csv``, ``summary.csv``,
    ``regret.png`` and the page showing them (``index.html``) into ``settings.out``.
    ``progress(stage, done, total)`` is called as work completes."""
    progress = progress or (lambda stage, done, total: None)
    curvesets = load_meta_dataset(settings.meta_dataset)
    replayed = [without_degenerate(cs) for cs in curvesets] if settings.drop_degenerate else curvesets
    names = [cs.name for cs in curvesets]
    bench_names = list(settings.datasets) if settings.datasets else names
    unknown = sorted(set(bench_names) - set(names))
    if unknown:
        raise ValueError(f"dataset(s) {unknown} are not in {str(settings.meta_dataset)!r}; it has {names}")
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)

    folds = assign_folds(names, settings.folds)
    fold_of = {name: k for k, fold in enumerate(folds) for name in fold}
    seeds = range(settings.first_seed, settings.first_seed + settings.seeds)
    priors_dirs: dict[tuple[int, int | None], Path] = {}
    if any(OPTIMIZERS[o][1] for o in settings.optimizers):
        priors_seeds = [None] if settings.shared_priors else list(seeds)  # None: one set for all seeds
        needed = [(k, s) for k in sorted({fold_of[n] for n in bench_names}) for s in priors_seeds]
        jobs = [((k, s), (curvesets, folds, k, settings, _priors_dir(out, k, s), _meta_seed(k, s)))
                for k, s in needed]  # fmt: skip
        progress("meta-training", 0, len(needed))
        for i, (key, directory) in enumerate(_map(_fold_priors_job, jobs, settings.jobs)):
            priors_dirs[key] = directory
            progress("meta-training", i + 1, len(needed))

    def priors_of(name: str, seed: int) -> str:
        directory = priors_dirs.get((fold_of[name], None if settings.shared_priors else seed))
        return str(directory or "")

    tasks = [
        _Task(settings.meta_dataset, name, opt, seed, priors_of(name, seed), settings.delta_t,
              budget, settings.drop_degenerate, settings.workers)
        for name in bench_names for opt in settings.optimizers for seed in seeds
        for budget in (sorted(settings.budgets_s) if plans_with_budget(opt) else [max(settings.budgets_s)])
    ]  # fmt: skip
    # Longest first (the QuickTune variants on datasets with cheap epochs take the most steps).
    epoch_cost = {cs.name: float(np.median(np.concatenate(cs.costs))) for cs in curvesets}
    tasks.sort(key=lambda t: (t.optimizer in ("random", "asha"), t.budget_s < max(settings.budgets_s),
                              epoch_cost[t.dataset]))  # fmt: skip
    traces: list[dict] = []
    progress("searches", 0, len(tasks))
    for i, trace in enumerate(_map(_run_task, tasks, settings.jobs)):
        traces.append(trace)
        progress("searches", i + 1, len(tasks))

    by_name = {cs.name: cs for cs in replayed}
    results = regret_table(traces, by_name, settings.budgets_s)
    at_budgets = results[results["budget_s"].isin(settings.budgets_s)]
    summary = summarize(at_budgets)
    summary.insert(2, "label", summary["optimizer"].map(lambda o: OPTIMIZERS[o][0]))
    files = {"results": out / RESULTS_FILE, "summary": out / SUMMARY_FILE, "plot": out / PLOT_FILE}
    results.to_csv(files["results"], index=False)
    summary.to_csv(files["summary"], index=False)
    if "quicktune" in settings.optimizers and len(settings.optimizers) > 1:
        files["paired"] = out / PAIRED_FILE
        paired_differences(at_budgets, "quicktune").to_csv(files["paired"], index=False)
    (out / "bench.json").write_text(json.dumps(_settings_json(settings, folds), indent=1))
    from qtt_cli.bench.plot import plot_regret

    plot_regret(results, files["plot"], labels={o: OPTIMIZERS[o][0] for o in settings.optimizers},
                marks_h=[b / 3600 for b in settings.budgets_s])  # fmt: skip
    from qtt_cli.report.bench_page import write_bench_page

    files["page"] = write_bench_page(out)
    return BenchResult(results, summary, files)


def regret_table(traces: Sequence[dict], curvesets: dict[str, CurveSet], budgets_s: Sequence[float]) -> pd.DataFrame:
    """Normalized regret of every trace on a log-spaced budget grid that includes ``budgets_s``."""
    top = max(budgets_s)
    grid = np.unique(np.concatenate([np.geomspace(top / 320, top, GRID_POINTS), np.asarray(budgets_s, float)]))
    runs: dict[tuple, list[dict]] = {}
    for t in traces:
        runs.setdefault((t["dataset"], t["optimizer"], t["seed"]), []).append(t)
    rows = []
    for group in runs.values():
        # one run per budget (optimizers that plan with it) or one run for all: each grid point is read off
        # the run with the smallest budget that covers it
        group = sorted(group, key=lambda t: t.get("budget_s", top))
        budgets = np.array([t.get("budget_s", top) for t in group])
        which = np.minimum(np.searchsorted(budgets, grid - 1e-6), len(group) - 1)
        best = np.empty(len(grid))
        for i, t in enumerate(group):
            here = which == i
            best[here] = Trace(np.asarray(t["used_s"]), np.asarray(t["values"]), t["steps"]).best_by(grid[here])
        t = group[-1]
        y_min, y_max = regret_range(curvesets[t["dataset"]])
        regret = normalized_regret(best, y_min, y_max)
        for b, y, r in zip(grid, best, regret, strict=True):
            rows.append({"dataset": t["dataset"], "optimizer": t["optimizer"], "seed": t["seed"],
                         "budget_s": float(b), "budget_h": float(b) / 3600, "best_val_top1": y, "regret": r,
                         "steps": t["steps"], "ask_s": t["ask_s"]})  # fmt: skip
    return pd.DataFrame(rows)


def _map(function: Callable, items: Sequence, jobs: int) -> Iterator:
    """``function`` over ``items``, in this process or in ``jobs`` worker processes (results as they finish)."""
    if jobs == 1 or len(items) <= 1:
        yield from (function(item) for item in items)
        return
    with ProcessPoolExecutor(max_workers=min(jobs, len(items)), initializer=_init_worker) as pool:
        futures = [pool.submit(function, item) for item in items]
        for future in as_completed(futures):
            yield future.result()


# --------------------------------------------------------------------------- fold priors


def _priors_dir(out: Path, k: int, seed: int | None) -> Path:
    return out / "priors" / (f"fold-{k}" if seed is None else f"seed-{seed}/fold-{k}")


def _meta_seed(k: int, seed: int | None) -> int:
    """The meta-training seed of fold ``k``'s priors for search seed ``seed`` (None: shared priors)."""
    return k if seed is None else 1000 * seed + k


def _fold_priors_job(args: tuple) -> tuple[tuple, Path]:
    key, (curvesets, folds, k, settings, directory, seed) = args
    return key, fold_priors(curvesets, folds, k, settings, directory, seed=seed)


def fold_priors(curvesets: Sequence[CurveSet], folds: list[list[str]], k: int, settings: BenchSettings,
                directory: Path, *, seed: int | None = None) -> Path:  # fmt: skip
    """Meta-train fold ``k``'s priors on the datasets outside it, or reuse the cached ones. ``seed``: the
    meta-training seed (default ``k``, the shared priors')."""
    from qtt_cli.surrogate import Surrogate, SurrogateFileError

    seed = k if seed is None else seed
    split = fold_split([cs.name for cs in curvesets], folds, k)
    key = {"split": split, "iterations": settings.meta_iterations, "options": settings.meta_options,
           "meta_dataset": str(Path(settings.meta_dataset).resolve()), **meta_training_fingerprint()}  # fmt: skip
    if seed != k:  # the shared priors' key is unchanged, so their caches stay valid
        key["meta_seed"] = seed
    stamp = directory / "fold.json"
    if stamp.is_file() and json.loads(stamp.read_text()).get("key") == key:
        try:
            Surrogate.load(directory)
            return directory
        except SurrogateFileError:
            pass  # a broken cache: train again
    from qtt_cli.surrogate import meta_train

    by_name = {cs.name: without_degenerate(cs) for cs in curvesets}
    train = [by_name[n] for n in split["train"]]
    val = [by_name[n] for n in split["val"]]
    surrogate, report = meta_train(train, val, iterations=settings.meta_iterations, seed=seed, **settings.meta_options)
    surrogate.save(directory)
    stamp.write_text(json.dumps({"key": key, "report": _plain(report)}, indent=1))
    return directory


def meta_training_fingerprint() -> dict[str, Any]:
    """What else decides a fold's priors: the defaults of ``meta_train`` and of the surrogate's settings, and a
    hash of the code that reads the curves and meta-trains (every source file of ``qtt_cli.surrogate`` and
    ``qtt_cli.metadataset`` and the table encoding). A change to any of them retrains the cached priors."""
    import hashlib
    import inspect

    import qtt_cli.metadataset
    import qtt_cli.space.encoding
    import qtt_cli.surrogate
    from qtt_cli.surrogate import DEFAULT_HYPER, meta_train

    digest = hashlib.sha256()
    packages = (qtt_cli.surrogate, qtt_cli.metadataset)
    files = [*(p for package in packages for p in sorted(Path(package.__file__).parent.glob("*.py"))),
             Path(qtt_cli.space.encoding.__file__)]  # fmt: skip
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    defaults = {name: p.default for name, p in inspect.signature(meta_train).parameters.items()
                if p.default is not inspect.Parameter.empty}  # fmt: skip
    return {"code_sha256": digest.hexdigest(), "defaults": _plain({**defaults, "hyper": DEFAULT_HYPER})}


# --------------------------------------------------------------------------- one search (possibly in a worker)


@dataclass(frozen=True)
class _Task:
    meta_dataset: Path
    dataset: str
    optimizer: str
    seed: int
    priors_dir: str
    delta_t: int
    budget_s: float
    drop_degenerate: bool = False
    workers: int = 1


_CACHE: dict[str, Any] = {}


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _run_task(task: _Task) -> dict:
    import time

    key = ("cs", str(task.meta_dataset), task.dataset, task.drop_degenerate)
    if key not in _CACHE:
        loaded = load_meta_dataset(task.meta_dataset, datasets=[task.dataset])[0]
        _CACHE[key] = without_degenerate(loaded) if task.drop_degenerate else loaded
    curveset = _CACHE[key]
    priors = None
    if task.priors_dir and OPTIMIZERS[task.optimizer][1]:
        from qtt_cli.surrogate import Surrogate

        if ("priors", task.priors_dir) not in _CACHE:
            _CACHE[("priors", task.priors_dir)] = Surrogate.load(Path(task.priors_dir))
        priors = _CACHE[("priors", task.priors_dir)]
    optimizer = make_optimizer(task.optimizer, curveset, priors=priors, seed=task.seed, delta_t=task.delta_t)
    start = time.perf_counter()
    if task.workers > 1:
        from qtt_cli.bench.parallel import replay_parallel

        trace = replay_parallel(optimizer, curveset, task.budget_s, task.workers)
    else:
        trace = replay(optimizer, curveset, task.budget_s)
    elapsed = time.perf_counter() - start
    return {"dataset": task.dataset, "optimizer": task.optimizer, "seed": task.seed, "budget_s": task.budget_s,
            "steps": trace.steps,
            "used_s": trace.used_s.tolist(), "values": trace.values.tolist(),
            "ask_s": elapsed / max(trace.steps, 1)}  # fmt: skip


def _settings_json(settings: BenchSettings, folds: list[list[str]]) -> dict:
    data = asdict(settings)
    data["meta_dataset"], data["out"] = str(settings.meta_dataset), str(settings.out)
    data["folds_datasets"] = folds
    data["cpu_count"] = os.cpu_count()
    return data


def _plain(value: Any) -> Any:
    """A JSON-safe copy of a report (numpy numbers and arrays become plain)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
