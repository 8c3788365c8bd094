"""Quick-Tune: meta-learned freeze-thaw Bayesian optimisation (Algorithm 1 of the Quick-Tune paper).

Each ``ask`` (1) lays the run's history and the candidates out as one :class:`CurveSet`, (2) refits the
surrogate (deep-kernel GP + cost MLP) on the run's observations, warm-started from the meta-learned
priors, (3) predicts every candidate's accuracy at its next fidelity ``τ = epochs + Δt`` and the seconds of
those Δt epochs, and (4) proposes the candidate with the highest expected improvement per second
(equation 3, :mod:`qtt_cli.optimizer.acquisition`). The very first pipeline is drawn at random
(Algorithm 1, line 1): with nothing observed there is no incumbent to improve on.

Candidates are every started pipeline that may still be continued (not finished, failed or diverged; a
first transient failure such as "out of memory" is retried once) plus the configurations not started yet:
a pool sampled once per run from the search space (``qtt tune``), or the dataset's recorded configurations
(replay).

The optimizer keeps no private history: ``ask`` rebuilds everything from the pipelines it is given, so
resuming a run is reloading the store. What it does carry between asks, the fitted surrogate and the refit
schedule's counters, is saved by ``save_state`` (safetensors + JSON, in ``RUNDIR/optimizer``) after every
ask and restored by ``load_state``, so a resumed run makes the decisions the uninterrupted one would have.

Refit schedule (:class:`FitSchedule`), after the paper's reference code (DyHPO's schedule):

- the first ``full_refits`` asks with new observations reset the surrogate to the priors (or to its fresh
  initialisation without meta-learning) and fit ``full_steps`` steps;
- afterwards the surrogate is refined for ``refine_steps`` steps once the observations have grown by
  ``refit_fraction`` (25 %) since the last fit: every new observation while the run is small, rarely
  when it is large, where a fit costs the most and one more point changes the least (the predictions
  still condition on the latest observations at every ask);
- when the best accuracy has not improved for ``stall_patience`` asks, the surrogate is reset to the
  priors and fitted fully once (a refinement that drifted is the likeliest culprit of a stall).

Each fit samples batches of at most the surrogate's ``batch_size`` observations per step (Algorithm 2's
batches), so a fit's cost stops growing with the run.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
from ConfigSpace import ConfigurationSpace

from qtt_cli.metadataset import CurveSet
from qtt_cli.optimizer.acquisition import best_at_fidelity, cost_aware_score, expected_improvement
from qtt_cli.optimizer.base import BudgetStatus, Optimizer, PipelineState, Suggestion, next_pipeline_id
from qtt_cli.optimizer.candidates import sampled_pool, started_configs
from qtt_cli.optimizer.pending import kriging_believer
from qtt_cli.space.config import PipelineConfig
from qtt_cli.space.encoding import encode
from qtt_cli.store.rundir import write_json_atomic

__all__ = ["AcquisitionSettings", "FitSchedule", "QuickTune", "SurrogateLike"]


class SurrogateLike(Protocol):
    """What QuickTune needs from a surrogate (``qtt_cli.surrogate.Surrogate`` in practice)."""

    def copy(self) -> SurrogateLike: ...

    def fit(
        self, curvesets: Sequence[CurveSet], *, steps: int, lr: float = ..., seed: int = ...,
        noise_lr: float | None = ...,
    ) -> dict: ...

    def predict(
        self, curveset: CurveSet, rows: np.ndarray, target_epochs: np.ndarray, from_epochs: np.ndarray
    ) -> Any: ...  # a Prediction: .mean, .std (percent), .cost_s (seconds of the extra epochs)


@dataclass(frozen=True)
class FitSchedule:
    """When and how long the surrogate is fitted during the search (see the module docstring).

    ``lr`` None: 1e-4 from meta-learned priors (the paper's BO-step rate: adapt without forgetting the
    priors), 1e-3 from scratch (DyHPO's rate: there is nothing to forget). ``stall_patience`` None:
    ``1.2 · max_epochs / Δt`` asks, DyHPO's threshold.

    ``noise_lr``: a separate, faster rate for the GP's observation noise, so that it follows the run's own
    data (None: ``lr``, the noise stays near the priors', the meta-dataset's average of about 6 points).
    Measured as the bench ablation ``quicktune-run-noise`` (1e-2; README "Replay benchmark"): it stops
    plateaued pipelines from running on a latent spread made of the priors' noise, and gains at 4 h and
    16 h, but it also makes two flat early epochs of a slow starter look conclusive, drops such pipelines
    and loses at 1 h by more than it gains later; so it is off by default.
    """

    full_refits: int = 10
    full_steps: int = 100
    refine_steps: int = 50
    refit_fraction: float = 0.25
    stall_patience: int | None = None
    lr: float | None = None
    noise_lr: float | None = None


@dataclass(frozen=True)
class AcquisitionSettings:
    """Exploration knobs of equation 3 (see :mod:`qtt_cli.optimizer.acquisition`).

    ``cost_cooling`` (off by default): when the budget is known, the cost exponent is scaled by the fraction
    of the budget left (CArBO's cost cooling, Lee et al. 2020): EI per second at the start, plain EI at the
    end. It targets a known weakness of EI per second: it keeps favouring cheap steps for the whole run,
    and on datasets where the good models are the expensive ones a long budget goes to cheap, weaker
    pipelines. In the replay benchmark it did worse at every budget (README "Replay benchmark"), so equation 3 stays the
    default.

    ``skip_unaffordable`` (off by default): when the budget is known, a step whose predicted cost exceeds
    the budget left is not proposed while an affordable one exists (it would be cut off at the deadline).
    It is only as good as the cost predictor, which under-predicts on datasets unlike its meta-data.

    The incumbent ``y*_τ`` is read from the recorded accuracies, as in the paper. A plug-in incumbent (the
    surrogate's latent mean at every recorded epoch, which a lucky reading does not lift) was measured and
    removed: on the replay it was worse at every budget (docs/bench/replay-history.md).
    """

    xi: float = 0.0  # EI margin in accuracy points
    cost_exponent: float = 1.0  # 1: EI per second (equation 3); 0: plain EI
    cost_floor: float = 0.01  # costs are clipped below at this fraction of the median predicted cost
    cost_cooling: bool = False
    skip_unaffordable: bool = False

    def exponent(self, budget: BudgetStatus | None) -> float:
        """The cost exponent for a search at ``budget`` (None: budget unknown, no cooling)."""
        if budget is None or not self.cost_cooling:
            return self.cost_exponent
        return self.cost_exponent * budget.fraction_left


@dataclass(frozen=True)
class _Candidates:
    """The rows of a curve set that ``ask`` may propose, and what proposing each would mean."""

    rows: np.ndarray  # row index in the curve set
    pipeline_ids: list[str | None]  # None: a fresh pool configuration (gets the next pipeline id)
    configs: list[PipelineConfig | None]
    epochs: np.ndarray  # epochs trained so far
    targets: np.ndarray  # τ: epochs after the step
    limits: np.ndarray  # the most epochs each candidate may be trained to


class QuickTune(Optimizer):
    """Quick-Tune over a search space (``qtt tune``) or over recorded configurations (replay).

    Build it with :meth:`for_space` or :meth:`for_recorded`.

    Args:
        priors: the meta-learned surrogate to start from; None = no meta-learning (``new_surrogate`` builds a
            fresh one, fitted on the run's observations only).
        use_cost: False = plain EI at the next fidelity (the cost exponent is set to 0).
        new_surrogate: ``(columns, seed) -> surrogate`` for runs without priors; default
            ``qtt_cli.surrogate.Surrogate.new`` with a constant GP mean.
    """

    def __init__(
        self,
        layout: _SpaceLayout | _RecordedLayout,
        *,
        max_epochs: int,
        delta_t: int,
        priors: SurrogateLike | None,
        use_cost: bool = True,
        seed: int = 0,
        schedule: FitSchedule | None = None,
        acquisition: AcquisitionSettings | None = None,
        new_surrogate: Callable[[Sequence[str], int], SurrogateLike] | None = None,
        epoch_limits: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__(max_epochs=max_epochs, delta_t=delta_t, epoch_limits=epoch_limits)
        self.layout = layout
        self.seed = seed
        self.use_meta = priors is not None
        self.use_cost = use_cost
        self.schedule = schedule or FitSchedule()
        acquisition = acquisition or AcquisitionSettings()
        self.acquisition = acquisition if use_cost else replace(acquisition, cost_exponent=0.0)
        if priors is None:
            if new_surrogate is None:
                from qtt_cli.surrogate import Surrogate

                def new_surrogate(columns: Sequence[str], seed: int) -> SurrogateLike:
                    # a constant mean: the learnt mean is the meta-data's expectation, and without meta-data
                    # there is nothing to learn it from but the run's observations, which the GP conditions on
                    return Surrogate.new(columns, seed=seed, mean="constant")
            priors = new_surrogate(list(layout.columns), seed)
        self._start = priors  # reset point: the priors, or the fresh initialisation
        self._model: SurrogateLike | None = None
        self._full_fits = 0
        self._fitted_n = -1
        self._best = -math.inf
        self._since_best = 0
        self.last_fit: dict | None = None  # the latest fit's report (for logs and tests)

    # ------------------------------------------------------------------ construction

    @classmethod
    def for_space(
        cls,
        space: ConfigurationSpace,
        *,
        meta_features: Sequence[float],
        model_names_map: Mapping[str, str] | None,
        model_column_names: Sequence[str] | None,
        max_epochs: int,
        delta_t: int,
        priors: SurrogateLike | None,
        pool_size: int = 512,
        name: str = "run",
        **kwargs: Any,
    ) -> QuickTune:
        """``qtt tune``: candidates from a pool of ``pool_size`` configurations sampled once per run."""
        layout = _SpaceLayout(
            sampled_pool(space, pool_size, kwargs.get("seed", 0)), meta_features, model_names_map,
            model_column_names, max_epochs, name,
        )  # fmt: skip
        return cls(layout, max_epochs=max_epochs, delta_t=delta_t, priors=priors, **kwargs)

    @classmethod
    def for_recorded(
        cls, curveset: CurveSet, *, delta_t: int, priors: SurrogateLike | None, **kwargs: Any
    ) -> QuickTune:
        """Replay: candidates are the curve set's configurations, each trainable up to its recorded length."""
        limits = dict(zip(curveset.config_ids, (int(n) for n in curveset.lengths), strict=True))
        layout = _RecordedLayout(curveset, kwargs.get("seed", 0))
        return cls(
            layout, max_epochs=curveset.max_epochs, delta_t=delta_t, priors=priors, epoch_limits=limits, **kwargs
        )

    # ------------------------------------------------------------------ ask

    def ask(self, pipelines: Mapping[str, PipelineState], budget: BudgetStatus | None = None) -> Suggestion | None:
        curveset, candidates = self.layout.build(pipelines, self)
        if len(candidates.rows) == 0:
            return None
        if curveset.num_observations == 0:
            # Algorithm 1, line 1: the first pipeline is drawn at random (the candidates are in a seeded random
            # order). With nothing observed there is no incumbent, so EI is undefined; with a constant prior
            # mean (no priors) every candidate is also predicted alike. The learnt mean of meta-learned
            # priors could rank them here; that has not been measured, so the paper's rule stays.
            return self._suggest(candidates, 0, pipelines)
        model = self._fitted(curveset, pipelines)
        # steps in flight on other workers: condition on the GP mean at their epochs (kriging believer,
        # qtt_cli.optimizer.pending); the fit above saw real observations only
        curveset = kriging_believer(model, curveset, pipelines)
        prediction = model.predict(curveset, candidates.rows, candidates.targets, candidates.epochs)
        scores, z = self.scores(curveset, candidates, prediction, budget)
        if self.use_cost and self.acquisition.skip_unaffordable and budget is not None:
            affordable = np.asarray(prediction.cost_s, dtype=np.float64) <= budget.left_s
            if affordable.any():
                scores, z = np.where(affordable, scores, -np.inf), np.where(affordable, z, -np.inf)
        best = int(np.argmax(scores)) if scores.max() > 0 else int(np.argmax(z))  # EI underflow: best z
        return replace(
            self._suggest(candidates, best, pipelines),
            predicted_val_top1=float(np.asarray(prediction.mean)[best]),
            predicted_val_std=float(np.asarray(prediction.std)[best]),
            predicted_cost_s=float(np.asarray(prediction.cost_s)[best]),
        )

    def scores(
        self, curveset: CurveSet, candidates: _Candidates, prediction: Any, budget: BudgetStatus | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Equation 3 for every candidate (cost exponent cooled with the budget), and the standardised
        improvement ``z`` (the tie-breaker)."""
        incumbent = best_at_fidelity(curveset.curves, candidates.targets)
        mean = np.asarray(prediction.mean, dtype=np.float64)
        std = np.asarray(prediction.std, dtype=np.float64)
        a = self.acquisition
        ei = expected_improvement(mean, std, incumbent, xi=a.xi)
        score = cost_aware_score(ei, prediction.cost_s, cost_exponent=a.exponent(budget), cost_floor=a.cost_floor)
        z = (mean - incumbent - a.xi) / np.maximum(std, 1e-12)
        return score, z

    def _suggest(self, candidates: _Candidates, i: int, pipelines: Mapping[str, PipelineState]) -> Suggestion:
        pid = candidates.pipeline_ids[i] or next_pipeline_id(pipelines)
        return Suggestion(pid, candidates.configs[i], int(candidates.epochs[i]), int(candidates.targets[i]))

    # ------------------------------------------------------------------ persistence

    def save_state(self, directory: Path) -> None:
        """The fitted surrogate in ``directory/surrogate-<observations>/`` and the schedule's counters in
        ``directory/state.json``, which is replaced atomically and written last: a crash mid-save leaves
        the previous state in force."""
        if self._model is None or not hasattr(self._model, "save"):
            return
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        name = f"surrogate-{self._fitted_n:06d}"
        if not (directory / name / "surrogate.json").is_file():
            self._model.save(directory / f"{name}.tmp")
            if (directory / name).exists():
                shutil.rmtree(directory / name)
            os.replace(directory / f"{name}.tmp", directory / name)
        state = {"surrogate": name, "full_fits": self._full_fits, "fitted_n": self._fitted_n,
                 "best": self._best if math.isfinite(self._best) else None, "since_best": self._since_best}  # fmt: skip
        write_json_atomic(directory / "state.json", state)
        for old in directory.glob("surrogate-*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)

    def load_state(self, directory: Path) -> bool:
        """Restore ``save_state``'s surrogate and counters; False (and a fresh start from the priors) when
        ``directory`` holds no readable state."""
        directory = Path(directory)
        try:
            state = json.loads((directory / "state.json").read_text())
            model = type(self._start).load(directory / str(state["surrogate"]))
            counters = (int(state["full_fits"]), int(state["fitted_n"]), int(state["since_best"]))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return False
        self._model = model
        self._full_fits, self._fitted_n, self._since_best = counters
        self._best = -math.inf if state.get("best") is None else float(state["best"])
        return True

    # ------------------------------------------------------------------ the refit schedule

    def _fitted(self, curveset: CurveSet, pipelines: Mapping[str, PipelineState]) -> SurrogateLike:
        """The surrogate, refitted on the run's observations as the schedule says."""
        n = curveset.num_observations
        if n == 0:
            return self._model or self._start
        if n == self._fitted_n and self._model is not None:
            return self._model  # nothing new since the last ask (e.g. the same history asked twice)
        s = self.schedule
        best = max((max(p.curve) for p in pipelines.values() if p.curve), default=-math.inf)
        if best > self._best:
            self._best, self._since_best = best, 0
        else:
            self._since_best += 1
        patience = s.stall_patience or math.ceil(1.2 * self.max_epochs / self.delta_t)
        stalled = self._since_best >= patience

        lr = s.lr if s.lr is not None else (1e-4 if self.use_meta else 1e-3)
        noise_lr = None if s.noise_lr is None else max(lr, s.noise_lr)
        observed = curveset.subset(np.flatnonzero(curveset.lengths > 0))
        fit_seed = self.seed * 100_003 + n
        if self._model is None or self._full_fits < s.full_refits or stalled:
            self._model = self._start.copy()
            self.last_fit = self._model.fit([observed], steps=s.full_steps, lr=lr, seed=fit_seed, noise_lr=noise_lr)
            self._full_fits += 1
            self._since_best = 0 if stalled else self._since_best
            self._fitted_n = n
        elif n - self._fitted_n >= max(1, math.ceil(s.refit_fraction * self._fitted_n)):
            self.last_fit = self._model.fit([observed], steps=s.refine_steps, lr=lr, seed=fit_seed, noise_lr=noise_lr)
            self._fitted_n = n
        return self._model


class _SpaceLayout:
    """``qtt tune``: rows = every started pipeline (context and candidates), then the unstarted pool."""

    def __init__(
        self,
        pool: Sequence[PipelineConfig],
        meta_features: Sequence[float],
        model_names_map: Mapping[str, str] | None,
        model_column_names: Sequence[str] | None,
        max_epochs: int,
        name: str,
    ) -> None:
        self.pool = list(pool)
        self.meta_features = np.asarray(meta_features, dtype=np.float64)
        self.names_map = dict(model_names_map or {})
        self.model_columns = list(model_column_names or [])
        self.max_epochs = max_epochs
        self.name = name
        self.pool_features = self._encode(self.pool)
        self.columns = tuple(self.pool_features.columns)
        self._encoded: dict[PipelineConfig, pd.DataFrame] = {}

    def _encode(self, configs: Sequence[PipelineConfig]) -> pd.DataFrame:
        return encode(configs, self.model_columns, model_names_map=self.names_map, methods=True)

    def build(self, pipelines: Mapping[str, PipelineState], opt: Optimizer) -> tuple[CurveSet, _Candidates]:
        started = list(pipelines.values())
        taken = started_configs(pipelines)
        fresh = [i for i, c in enumerate(self.pool) if c not in taken]
        for p in started:
            if p.config not in self._encoded:
                self._encoded[p.config] = self._encode([p.config]).reindex(columns=self.columns, fill_value=0)
        features = pd.concat(
            [*(self._encoded[p.config] for p in started), self.pool_features.iloc[fresh]], ignore_index=True
        )
        empty = np.zeros(0)
        curveset = CurveSet(
            self.name,
            tuple([p.pipeline_id for p in started] + [f"pool-{i}" for i in fresh]),
            features,
            tuple([np.asarray(p.curve) for p in started] + [empty] * len(fresh)),
            tuple([np.asarray(p.costs) for p in started] + [empty] * len(fresh)),
            self.meta_features,
            self.max_epochs,
        )
        open_ = [(row, p) for row, p in enumerate(started) if opt.can_continue(p)]
        rows = [row for row, _ in open_] + list(range(len(started), len(started) + len(fresh)))
        epochs = np.array([p.epochs for _, p in open_] + [0] * len(fresh), dtype=np.int64)
        limits = np.array([opt.limit(p.pipeline_id) for _, p in open_] + [opt.max_epochs] * len(fresh))
        return curveset, _Candidates(
            rows=np.array(rows, dtype=np.int64),
            pipeline_ids=[p.pipeline_id for _, p in open_] + [None] * len(fresh),
            configs=[p.config for _, p in open_] + [self.pool[i] for i in fresh],
            epochs=epochs,
            targets=np.minimum(epochs + opt.delta_t, limits),
            limits=limits,
        )


class _RecordedLayout:
    """Replay: rows = the dataset's recorded configurations in a seeded order, with what the run observed."""

    def __init__(self, curveset: CurveSet, seed: int) -> None:
        from qtt_cli.optimizer.candidates import derive_seed

        order = np.random.default_rng(derive_seed(seed, "recorded-order")).permutation(len(curveset))
        self.curveset = curveset.subset(order)  # ties in the acquisition then break at random, not by file order
        self.columns = tuple(self.curveset.features.columns)
        self.ids = self.curveset.config_ids
        self._empty = np.zeros(0)

    def build(self, pipelines: Mapping[str, PipelineState], opt: Optimizer) -> tuple[CurveSet, _Candidates]:
        curves, costs, rows, epochs, limits = [], [], [], [], []
        for row, cid in enumerate(self.ids):
            p = pipelines.get(cid)
            curves.append(np.asarray(p.curve) if p else self._empty)
            costs.append(np.asarray(p.costs) if p else self._empty)
            if p is None or opt.can_continue(p):
                rows.append(row)
                epochs.append(p.epochs if p else 0)
                limits.append(opt.limit(cid))
        epochs_arr = np.array(epochs, dtype=np.int64)
        return self.curveset.with_observations(curves, costs), _Candidates(
            rows=np.array(rows, dtype=np.int64),
            pipeline_ids=[self.ids[r] for r in rows],
            configs=[pipelines[self.ids[r]].config if self.ids[r] in pipelines else None for r in rows],
            epochs=epochs_arr,
            targets=np.minimum(epochs_arr + opt.delta_t, np.array(limits, dtype=np.int64)),
            limits=np.array(limits, dtype=np.int64),
        )
