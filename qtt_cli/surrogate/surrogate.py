"""The Quick-Tune predictors behind one object: a deep-kernel GP for accuracy and an MLP for cost.

``Surrogate.fit`` trains both on every observed (configuration, epoch t) of some curve sets (Equations 1
and 2 of the Quick-Tune chapter); ``predict`` conditions the GP on the observed points of the current
dataset and predicts the accuracy at a later epoch and the seconds needed to get there. Accuracies are in
percent outside and in [0, 1] inside; costs are learnt as standardised log seconds and returned as seconds,
so they are always positive (the reference code returned them standardised and clipped near 0).

The GP conditions on at most ``max_context`` observations (default 256): each curve's most recent epochs
first, then older ones. With 500 observations that keeps ``predict`` in tens of milliseconds; the
dropped points are old epochs of curves whose latest epochs are kept, so little information is lost.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from qtt_cli.metadataset import CurveSet, model_columns
from qtt_cli.space.encoding import method_columns

from ._gpytorch import gpytorch
from .features import DEFAULT_FIDELITY_SCALE, FeatureLayout, Observations, Scaler, observations
from .networks import Predictors

__all__ = ["DEFAULT_HYPER", "Prediction", "Surrogate", "SurrogateFileError"]

WEIGHTS_FILE = "surrogate.safetensors"
CONFIG_FILE = "surrogate.json"
FORMAT = "qtt-surrogate"
FORMAT_VERSION = 1

DEFAULT_HYPER: dict[str, Any] = {
    "feature_dim": 16,  # GP input dimension (output of the feature extractor)
    "hidden": [64, 64],  # hidden layers of the feature extractor and of the cost MLP
    "model_dim": 8,  # model embedding size
    "curve_dim": 8,  # curve-prefix embedding size
    "curve_length": 50,  # prefix slots of the curve CNN (longer prefixes keep their last values)
    "max_context": 256,  # observations the GP conditions on in predict()
    "batch_size": 256,  # observations per training step (Algorithm 2's batch)
    "horizon_targets": True,  # train on far-epoch targets too (see ``horizon_batch``), not only the next epoch
    "mean": "learnt",  # the GP's prior mean: "learnt" (MeanNet, trained on the meta-data) or "constant"
}


class SurrogateFileError(ValueError):
    """A directory that does not hold a readable surrogate."""


@dataclass(frozen=True)
class Prediction:
    """Predictions for the requested (configuration, target epoch) pairs.

    Args:
        mean: predicted validation top-1 (percent) at the target epoch.
        std: standard deviation (percent), > 0: of the latent accuracy by default (what the acquisition
            needs: the noise of a future observation is no improvement anyone can keep), of a noisy
            observation with ``predict(..., observation_noise=True)``.
        cost_s: predicted seconds for the epochs ``from_epochs + 1 .. target_epochs``, > 0.
    """

    mean: np.ndarray
    std: np.ndarray
    cost_s: np.ndarray


class Surrogate:
    """Performance deep-kernel GP + cost MLP + the scalers and column layout they read inputs with."""

    def __init__(
        self, layout: FeatureLayout, scaler: Scaler, hyper: dict[str, Any], nets: Predictors, info: dict
    ) -> None:
        self.layout = layout
        self.scaler = scaler
        self.hyper = hyper
        self.nets = nets
        self.info = info

    # --- construction, persistence -----------------------------------------------------------------

    @classmethod
    def new(
        cls, columns: Sequence[str], *, seed: int = 0, scaler: Scaler | None = None,
        fidelity_scale: float = DEFAULT_FIDELITY_SCALE, **hyper: Any,
    ) -> Surrogate:  # fmt: skip
        """An untrained surrogate for configurations encoded with ``columns`` (their ``cat:model:*`` columns
        decide which models it can embed).

        Args:
            fidelity_scale: epochs are shown to the networks as ``epoch / fidelity_scale`` (the epoch limit of
                the meta-training data; a fixed scale, so that a prediction at epoch k does not depend on
                the run's ``--max-epochs``).
            scaler: standardisation statistics; by default those of configurations sampled from the
                Quick-Tune space (the distribution the meta-dataset was drawn from) with no meta-feature
                information (one run = one dataset, so meta-features cannot be learnt from it).
            hyper: overrides of ``DEFAULT_HYPER``.
        """
        unknown = sorted(set(hyper) - set(DEFAULT_HYPER))
        if unknown:
            raise ValueError(f"unknown surrogate setting(s) {unknown}; known: {sorted(DEFAULT_HYPER)}")
        settings = {**DEFAULT_HYPER, **hyper}
        layout = FeatureLayout.for_columns(columns, settings["curve_length"], fidelity_scale)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            nets = Predictors(layout, settings)
        return cls(layout, copy.deepcopy(scaler) if scaler else space_scaler(), settings, nets, {"trained_steps": 0})

    def save(self, directory: Path) -> None:
        """``surrogate.safetensors`` (every weight) + ``surrogate.json`` (layout, scalers, settings)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._forget_data()
        state = {k: v.detach().contiguous().clone() for k, v in self.nets.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_FILE))
        payload = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "layout": asdict(self.layout),
            "scaler": self.scaler.to_dict(),
            "hyper": self.hyper,
            "info": self.info,
        }
        (directory / CONFIG_FILE).write_text(json.dumps(payload, indent=1))

    @classmethod
    def load(cls, directory: Path) -> Surrogate:
        """A surrogate written by ``save``: the weights go into a freshly built model (no pickles)."""
        directory = Path(directory)
        weights, config = directory / WEIGHTS_FILE, directory / CONFIG_FILE
        if not weights.is_file() or not config.is_file():
            raise SurrogateFileError(f"{str(directory)!r} holds no surrogate ({WEIGHTS_FILE} + {CONFIG_FILE})")
        try:
            payload = json.loads(config.read_text())
            if payload.get("format") != FORMAT or payload.get("version") != FORMAT_VERSION:
                raise SurrogateFileError(f"{str(config)!r} is not a {FORMAT} v{FORMAT_VERSION} file")
            layout = FeatureLayout(**payload["layout"])
            scaler = Scaler(**payload["scaler"])
            # files written before a setting existed were trained without it
            hyper = {**DEFAULT_HYPER, "horizon_targets": False, "mean": "constant", **payload["hyper"]}
            nets = Predictors(layout, hyper)
            nets.load_state_dict(_with_method_defaults(load_file(str(weights)), nets))
        # ValueError: a setting this version does not know (e.g. a GP mean written by another qtt)
        except (KeyError, TypeError, ValueError, json.JSONDecodeError, RuntimeError) as exc:
            raise SurrogateFileError(f"cannot read the surrogate in {str(directory)!r}: {exc}") from exc
        return cls(layout, scaler, hyper, nets, dict(payload.get("info") or {}))

    def copy(self) -> Surrogate:
        """An independent copy (e.g. to go back to the priors after a stall)."""
        self._forget_data()
        return Surrogate(
            copy.deepcopy(self.layout), copy.deepcopy(self.scaler), dict(self.hyper), copy.deepcopy(self.nets),
            copy.deepcopy(self.info),
        )  # fmt: skip

    def covers(self, columns: Sequence[str]) -> bool:
        """Whether every model column of ``columns`` has a (trained) embedding here."""
        return not self.unknown_models(columns)

    def unknown_models(self, columns: Sequence[str]) -> list[str]:
        """The ``cat:model:*`` columns of ``columns`` this surrogate has no embedding for."""
        return [c for c in model_columns(columns) if c not in self.layout.model_columns]

    def with_columns(self, columns: Sequence[str]) -> Surrogate:
        """A copy that also embeds the models and training methods (``METHOD_COLUMNS``) of ``columns`` it
        does not know, with zero embeddings (no specific knowledge: predictions do not change) that ``fit``
        can then learn. Returns ``self`` when nothing is new."""
        new = self.unknown_models(columns)
        new_methods = [c for c in method_columns(columns) if c not in self.layout.method_columns]
        if not new and not new_methods:
            return self
        self._forget_data()
        layout = FeatureLayout(
            self.layout.model_columns + new, self.layout.curve_length, list(self.layout.numeric_columns),
            list(self.layout.categorical_columns), self.layout.method_columns + new_methods,
            self.layout.fidelity_scale,
        )  # fmt: skip
        nets = Predictors(layout, self.hyper)
        state = self.nets.state_dict()
        for key, value in state.items():
            if key.endswith("model_embedding.weight"):
                state[key] = torch.cat([value, value.new_zeros(value.shape[0], len(new))], dim=1)
            elif key.endswith("method_embedding"):
                state[key] = torch.cat([value, value.new_zeros(len(new_methods), value.shape[1])], dim=0)
        nets.load_state_dict(state)
        info = copy.deepcopy(self.info)
        if new:
            info["untrained_models"] = [c[len("cat:model:") :] for c in new]
        return Surrogate(layout, copy.deepcopy(self.scaler), dict(self.hyper), nets, info)

    # --- training ---------------------------------------------------------------------------------

    def fit(
        self, curvesets: Sequence[CurveSet], *, steps: int, lr: float = 1e-3, seed: int = 0,
        batch_size: int | None = None, noise_lr: float | None = None,
    ) -> dict:  # fmt: skip
        """Train on every observed (configuration, epoch t) of ``curvesets`` for ``steps`` Adam steps.

        Each step picks one curve set and a batch of at most ``batch_size`` of its observations (all of them
        when fewer), conditions the GP on it and descends −mll + the cost MSE, as in Algorithm 2. An
        untrained surrogate first takes the mean accuracy and the cost scale from the data.

        ``noise_lr``: learning rate of the GP's observation noise (default ``lr``). A search refits the
        meta-learned priors at a small ``lr`` so as not to forget them, but the noise is a property of the
        one dataset being searched (its validation-set size, how much its accuracy jitters from epoch to
        epoch), which the priors only know as an average over the meta-dataset (about 6 points); a faster
        rate lets the run's own observations set it.
        """
        obs = [observations(cs, self.layout, self.scaler) for cs in curvesets if cs.num_observations]
        if not obs or steps < 1:
            return {"steps": 0, "loss": None}
        if not self.info.get("trained_steps"):
            self._initialise_from(obs)
        trainer = _Trainer(self, lr, noise_lr)
        rng = np.random.default_rng(seed)
        batch = int(batch_size or self.hyper["batch_size"])
        losses = []
        with torch.random.fork_rng(), _gp_settings():
            torch.manual_seed(seed)
            for _ in range(steps):
                o = obs[int(rng.integers(len(obs)))]
                losses.append(trainer.step(o, *training_batch(o, rng, batch, self.hyper["horizon_targets"])))
        self.info["trained_steps"] = int(self.info.get("trained_steps", 0)) + steps
        return {"steps": steps, "loss_first": losses[0], "loss_last": float(np.mean(losses[-10:]))}

    def _initialise_from(self, obs: Sequence[Observations]) -> None:
        targets = np.concatenate([o.targets for o in obs])
        log_costs = np.concatenate([o.log_costs for o in obs])
        self.nets.gp.set_mean_level(float(targets.mean()))
        self.scaler.cost_center = float(log_costs.mean())
        self.scaler.cost_scale = 1.0 / max(float(log_costs.std()), 0.25)

    # --- prediction --------------------------------------------------------------------------------

    def predict(
        self, curveset: CurveSet, rows: np.ndarray, target_epochs: np.ndarray, from_epochs: np.ndarray,
        *, observation_noise: bool = False,
    ) -> Prediction:  # fmt: skip
        """Accuracy of configuration ``rows[i]`` at ``target_epochs[i]`` and the seconds of epochs
        ``from_epochs[i] + 1 .. target_epochs[i]``, the GP conditioned on ``curveset``'s observations.

        The input of row i sees its curve up to ``min(from_epochs[i], observed epochs)``.

        ``observation_noise``: False (default) = the latent posterior ``gp(x)``, which the acquisition uses:
        with the learnt noise (about 4 points on the meta-dataset) in every candidate's spread, a plateaued
        pipeline kept an EI made of noise alone, which divided by a small cost won. True = the predictive
        distribution of an observation, ``likelihood(gp(x))`` (held-out likelihood and calibration).
        """
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        target = np.asarray(target_epochs, dtype=np.int64).reshape(-1)
        start = np.asarray(from_epochs, dtype=np.int64).reshape(-1)
        if not (len(rows) == len(target) == len(start)):
            raise ValueError("rows, target_epochs and from_epochs must have the same length")
        if len(rows) and (start.min() < 0 or (target <= start).any()):
            raise ValueError("need 0 <= from_epochs < target_epochs for every requested row")
        if len(rows) and (rows.min() < 0 or rows.max() >= len(curveset)):
            raise ValueError(f"rows must index the curve set's {len(curveset)} configurations")
        if not len(rows):
            empty = np.zeros(0)
            return Prediction(empty, empty, empty)
        layout, scaler = self.layout, self.scaler
        configs = layout.config_matrix(curveset.features, scaler)
        seen = np.minimum(start, curveset.lengths[rows])
        queries = torch.from_numpy(layout.rows(curveset, scaler, rows, target, seen, configs))
        ctx_rows, ctx_epochs = self._context(curveset)
        self.nets.eval()
        with torch.no_grad(), _gp_settings():
            gp = self.nets.gp
            if len(ctx_rows):
                ctx = torch.from_numpy(layout.rows(curveset, scaler, ctx_rows, ctx_epochs, ctx_epochs - 1, configs))
                y = [curveset.curves[r][t - 1] / 100.0 for r, t in zip(ctx_rows, ctx_epochs, strict=True)]
                gp.set_train_data(ctx, torch.tensor(y, dtype=ctx.dtype), strict=False)
                posterior = gp(queries)
            else:
                self._forget_data()
                with gpytorch.settings.prior_mode(True):
                    posterior = gp(queries)
            if observation_noise:
                posterior = self.nets.likelihood(posterior)
            mean = posterior.mean.double().numpy() * 100.0
            std = posterior.variance.double().clamp_min(1e-12).sqrt().numpy() * 100.0
            cost = self._cost(curveset, rows, start, target, seen, configs)
        return Prediction(mean, std, cost)

    def _cost(self, curveset, rows, start, target, seen, configs) -> np.ndarray:
        """Seconds of epochs start+1 .. target: the sum of the per-epoch predictions."""
        spans = target - start
        which = np.repeat(np.arange(len(rows)), spans)
        offsets = np.arange(spans.sum()) - np.repeat(np.cumsum(spans) - spans, spans)
        epochs = start[which] + 1 + offsets
        prefix = np.minimum(seen[which], epochs - 1)
        x = torch.from_numpy(self.layout.rows(curveset, self.scaler, rows[which], epochs, prefix, configs))
        z = self.nets.cost(x).double().numpy()
        seconds = np.exp(np.clip(self.scaler.cost_center + z / self.scaler.cost_scale, -20.0, 20.0))
        return np.bincount(which, weights=seconds, minlength=len(rows))

    def _context(self, curveset: CurveSet) -> tuple[np.ndarray, np.ndarray]:
        """The observations the GP conditions on: all of them, or the ``max_context`` most recent epochs
        of the curves (each curve's last epoch first, then the one before, ...)."""
        lengths = curveset.lengths
        rows = np.repeat(np.arange(len(curveset)), lengths)
        if not len(rows):
            return rows, rows
        epochs = np.concatenate([np.arange(1, k + 1) for k in lengths])
        limit = int(self.hyper["max_context"])
        if len(rows) > limit:
            age = lengths[rows] - epochs  # 0 = the curve's latest epoch
            keep = np.sort(np.lexsort((rows, age))[:limit])
            rows, epochs = rows[keep], epochs[keep]
        return rows, epochs

    def nll(self, curvesets: Sequence[CurveSet], *, seed: int = 0, targets_per_set: int = 256) -> float:
        """Mean held-out negative log-likelihood per point (accuracy in [0, 1]); see ``evaluate``. With
        ``horizon_targets`` the mean of the next-epoch and the far-epoch NLL: both are what a search asks."""
        scores = self.evaluate(curvesets, seed=seed, targets_per_set=targets_per_set, latent=False)
        if self.hyper.get("horizon_targets") and "nll_horizon" in scores:
            return 0.5 * (scores["nll"] + scores["nll_horizon"])
        return scores["nll"]

    def evaluate(
        self, curvesets: Sequence[CurveSet], *, seed: int = 0, targets_per_set: int = 256, latent: bool = True
    ) -> dict:
        """Held-out scores on curves the surrogate was not trained on, asked as a search asks.

        For each curve set: ``targets_per_set`` configurations, each cut after a random number k of its
        epochs (k = 0 included: a configuration not started yet); the GP is conditioned on those prefixes
        only and predicts epoch k + 1 of each. Same ``seed``, same cuts.

        Returns:
            ``nll``: mean Gaussian negative log-likelihood per point, accuracy in [0, 1] (lower is better);
            ``mae``: mean absolute error of the predicted accuracy, in percentage points;
            ``cost_log_mae``: mean |log(predicted / recorded seconds)| of epoch k + 1;
            calibration of the observation's predictive distribution, for fresh (k = 0) and continued
            (k > 0) predictions: ``z_std_*`` (std of (y − μ) / σ; 1 when calibrated) and ``coverage90_*``
            (share inside the central 90 % interval; 0.9 when calibrated); ``latent_*`` the same with the
            latent σ the acquisition uses (only with ``latent``); ``nll_horizon``, ``mae_horizon``,
            ``z_std_horizon`` and ``coverage90_horizon``: the same cuts predicted at a random later epoch.
        """
        nll, err, cost_err, z, z_latent, fresh = [], [], [], [], [], []
        far_nll, far_err, far_z = [], [], []
        for cs in curvesets:
            rows, cuts = _random_cuts(cs, np.random.default_rng(seed), targets_per_set)
            if not len(rows):
                continue
            seen = _cut(cs, rows, cuts)
            pred = self.predict(seen, rows, cuts + 1, cuts, observation_noise=True)
            y = np.array([cs.curves[r][k] for r, k in zip(rows, cuts, strict=True)])
            if latent:
                lat = self.predict(seen, rows, cuts + 1, cuts)
                z_latent.append((y - lat.mean) / lat.std)
            seconds = np.array([cs.costs[r][k] for r, k in zip(rows, cuts, strict=True)])
            mu, sd = pred.mean / 100.0, pred.std / 100.0
            nll.append(0.5 * np.log(2 * math.pi * sd**2) + (y / 100.0 - mu) ** 2 / (2 * sd**2))
            err.append(np.abs(y - pred.mean))
            z.append((y - pred.mean) / pred.std)
            fresh.append(cuts == 0)
            cost_err.append(np.abs(np.log(pred.cost_s) - np.log(np.maximum(seconds, 1e-6))))
            # the same cuts predicted at a random later epoch τ in k+2 .. n: what a prediction beyond the next
            # step is asked (curves too short for that are left out)
            long_ = cs.lengths[rows] > cuts + 1
            if long_.any():
                r, k = rows[long_], cuts[long_]
                u = np.random.default_rng([seed, 1]).random(len(r))
                taus = k + 2 + (u * (cs.lengths[r] - k - 1)).astype(np.int64)
                far_pred = self.predict(seen, r, taus, k, observation_noise=True)
                y_far = np.array([cs.curves[i][t - 1] for i, t in zip(r, taus, strict=True)])
                mu, sd = far_pred.mean / 100.0, far_pred.std / 100.0
                far_nll.append(0.5 * np.log(2 * math.pi * sd**2) + (y_far / 100.0 - mu) ** 2 / (2 * sd**2))
                far_err.append(np.abs(y_far - far_pred.mean))
                far_z.append((y_far - far_pred.mean) / far_pred.std)
        if not nll:
            raise ValueError("no observed epochs to evaluate the predictors on")
        far = {}
        if far_nll:
            scores = np.concatenate(far_z)
            far = {
                "nll_horizon": float(np.concatenate(far_nll).mean()),
                "mae_horizon": float(np.concatenate(far_err).mean()),
                "z_std_horizon": float(scores.std()),
                "coverage90_horizon": float((np.abs(scores) <= _Z90).mean()),
            }
        is_fresh = np.concatenate(fresh)
        calibration = {}
        for name, parts in (("", z), ("latent_", z_latent)):
            if not parts:
                continue
            scores = np.concatenate(parts)
            for part, mask in (("fresh", is_fresh), ("continued", ~is_fresh)):
                if mask.any():
                    calibration[f"{name}z_std_{part}"] = float(scores[mask].std())
                    calibration[f"{name}coverage90_{part}"] = float((np.abs(scores[mask]) <= _Z90).mean())
        return {
            "nll": float(np.concatenate(nll).mean()),
            "mae": float(np.concatenate(err).mean()),
            "cost_log_mae": float(np.concatenate(cost_err).mean()),
            "points": int(sum(len(x) for x in nll)),
            **calibration,
            **far,
        }

    def _forget_data(self) -> None:
        """Drop the GP's conditioning data (not part of the model; keeps copies and files small)."""
        gp = self.nets.gp
        gp.train_inputs, gp.train_targets, gp.prediction_strategy = None, None, None


_Z90 = 1.6448536269514722  # the central 90 % interval of a standard normal


def curve_batch(obs: Observations, rng: np.random.Generator, size: int) -> np.ndarray:
    """A training batch shaped like a search's history: random configurations, each with its epochs
    1..k up to a random cut k, until ``size`` observations (all observations when there are fewer).

    Uniformly random observations would rarely put two epochs of one curve in a batch, so the GP would
    never learn how strongly a configuration's next epoch follows its own earlier ones -- which is what
    it is asked during a search, where it conditions on whole observed prefixes.
    """
    n = len(obs)
    if n <= size:
        return np.arange(n)
    starts = np.flatnonzero(np.r_[True, obs.config_rows[1:] != obs.config_rows[:-1]])
    lengths = np.diff(np.r_[starts, n])
    chosen: list[np.ndarray] = []
    total = 0
    for i in rng.permutation(len(starts)):
        k = int(rng.integers(1, lengths[i] + 1))
        chosen.append(starts[i] + np.arange(min(k, size - total)))
        total += len(chosen[-1])
        if total >= size:
            break
    return np.sort(np.concatenate(chosen))


def horizon_batch(obs: Observations, idx: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Far-epoch targets for a ``curve_batch``: what a search asks beyond the next epoch.

    Trained only on "epoch t, having seen epochs 1..t-1", the networks never see a target more than one
    epoch past the prefix, so a prediction at a longer horizon is extrapolation they were not taught: priors
    trained that way predicted an unstarted configuration's 50th epoch at its first epoch's accuracy, and a
    slow starter (near chance after one epoch, the best pipeline later) looked hopeless at every horizon.
    Run refits with at most ``batch_size`` observations train on all of them at once, so they add none.

    For every configuration of the batch cut after k < n of its n epochs, one target epoch τ uniform in
    k+1..n seen with the prefix 1..k; and for a quarter as many configurations not in the batch, one τ
    uniform in 1..n seen with no prefix (an unstarted configuration). The GP is fitted on them jointly with
    the batch's observations, so it also learns how a far epoch covaries with the observed prefix.

    Returns ``(rows, epochs)``: the observation row holding the prefix (that of epoch k+1, i.e. prefix 1..k)
    and the target epoch τ; the target value is observation ``row + τ - k - 1``.
    """
    if not len(idx):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts = np.flatnonzero(np.r_[True, obs.config_rows[1:] != obs.config_rows[:-1]])
    lengths = np.diff(np.r_[starts, len(obs)])
    which = np.searchsorted(starts, idx, side="right") - 1  # the configuration of every batch row
    chosen, cut = np.unique(which, return_counts=True)
    open_ = cut < lengths[chosen]
    chosen, cut = chosen[open_], cut[open_]
    others = np.setdiff1d(np.arange(len(starts)), which)
    count = min(len(others), max(1, len(chosen) // 4))
    fresh = rng.choice(others, size=count, replace=False) if count else others
    configs = np.r_[chosen, fresh].astype(np.int64)
    cuts = np.r_[cut, np.zeros(len(fresh), np.int64)].astype(np.int64)
    taus = cuts + 1 + (rng.random(len(configs)) * (lengths[configs] - cuts)).astype(np.int64)
    return starts[configs] + cuts, taus


def training_batch(
    obs: Observations, rng: np.random.Generator, size: int, horizon: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One training batch: ``curve_batch`` rows, plus ``horizon_batch`` targets when ``horizon``."""
    idx = curve_batch(obs, rng, size)
    rows, taus = horizon_batch(obs, idx, rng) if horizon else (np.zeros(0, np.int64), np.zeros(0, np.int64))
    return idx, rows, taus


def _cut(cs: CurveSet, rows: np.ndarray, cuts: np.ndarray) -> CurveSet:
    """``cs`` as a search would see it: configuration ``rows[i]`` observed for its first ``cuts[i]`` epochs,
    every other configuration not started."""
    observed = [np.zeros(0)] * len(cs)
    costs = [np.zeros(0)] * len(cs)
    for r, k in zip(rows, cuts, strict=True):
        observed[r], costs[r] = cs.curves[r][:k], cs.costs[r][:k]
    return cs.with_observations(observed, costs)


def _random_cuts(cs: CurveSet, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    candidates = np.flatnonzero(cs.lengths > 0)
    rows = np.sort(rng.choice(candidates, size=min(n, len(candidates)), replace=False))
    cuts = np.array([int(rng.integers(0, cs.lengths[r])) for r in rows], dtype=np.int64)
    return rows, cuts


class _Trainer:
    """One Adam optimiser over both predictors; a step = −mll of the GP on a batch + MSE of the cost net.

    The training-method embeddings learn at ``METHOD_LR`` at least: they start at zero in meta-learned
    priors, which are refitted at 1e-4 so as not to forget the meta-data, a rate at which 100 Adam steps
    move a weight by at most 0.01 — the run could never teach what SPG or HVP does. They hold nothing
    to forget.

    With a learnt mean (``MeanNet``), ``hold_offset=True`` (meta-training) keeps the GP's constant at 0: it
    is one dataset's offset from the meta-data's expectation, which has no meaning across datasets. Left
    free, the likelihood barely pins it (the kernel absorbs a shared offset within a batch), so it drifted
    with whichever datasets came last, to +0.2 (20 points) in one meta-training run, and every prediction
    of the priors moved with it while the mean network's own squared error looked fine. A search's refit
    (``Surrogate.fit``) lets it learn the run's offset.
    """

    METHOD_LR = 1e-2

    def __init__(
        self, surrogate: Surrogate, lr: float, noise_lr: float | None = None, *, hold_offset: bool = False
    ) -> None:
        self.surrogate = surrogate
        self.nets = surrogate.nets
        self.mll = gpytorch.mlls.ExactMarginalLogLikelihood(self.nets.likelihood, self.nets.gp)
        noise = list(self.nets.likelihood.parameters())
        taken = {id(p) for p in noise}
        if hold_offset and self.nets.gp.mean_net is not None:
            taken.add(id(self.nets.gp.mean_module.constant))
        named = [(name, p) for name, p in self.nets.named_parameters() if id(p) not in taken]
        methods = [p for name, p in named if name.endswith("method_embedding")]
        others = [p for name, p in named if not name.endswith("method_embedding")]
        self.optimizer = torch.optim.Adam(
            [{"params": others}, {"params": methods, "lr": max(lr, self.METHOD_LR)},
             {"params": noise, "lr": lr if noise_lr is None else noise_lr}], lr=lr
        )  # fmt: skip

    def step(
        self, obs: Observations, idx: np.ndarray, horizon_rows: np.ndarray | None = None,
        horizon_epochs: np.ndarray | None = None,
    ) -> float:  # fmt: skip
        """One Adam step on a batch (call inside ``_gp_settings()``): the GP on the observations ``idx`` and
        the far-epoch targets of ``horizon_batch``, the cost net on the observations."""
        scaler, layout = self.surrogate.scaler, self.surrogate.layout
        x_obs = obs.inputs[idx]
        y_obs = obs.targets[idx]
        z = (torch.from_numpy(obs.log_costs[idx]) - scaler.cost_center) * scaler.cost_scale
        if horizon_rows is not None and len(horizon_rows):
            far = obs.inputs[horizon_rows].copy()
            far[:, layout.slices["fidelity"]] = (horizon_epochs / layout.fidelity_scale)[:, None]
            target = obs.targets[horizon_rows + horizon_epochs - obs.epochs[horizon_rows]]
            x_all, y_all = np.concatenate([x_obs, far]), np.concatenate([y_obs, target])
        else:
            x_all, y_all = x_obs, y_obs
        x, y = torch.from_numpy(x_all), torch.from_numpy(y_all)
        self.nets.train()
        self.optimizer.zero_grad(set_to_none=True)
        self.nets.gp.set_train_data(x, y, strict=False)
        cost_x = torch.from_numpy(x_obs)
        loss = -self.mll(self.nets.gp(x), y) + torch.nn.functional.mse_loss(self.nets.cost(cost_x), z)
        if self.nets.gp.mean_net is not None:  # the prior mean is also a standalone predictor (MeanNet)
            loss = loss + torch.nn.functional.mse_loss(self.nets.gp.mean_net(x), y)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())


@contextlib.contextmanager
def _gp_settings() -> Iterator[None]:
    """Exact Cholesky solves (deterministic, fast at a few hundred points), no debug checks, one thread.

    One thread: the matrices are small (a few hundred rows), so a second thread saves little, and on a
    busy 2-core machine it makes each step up to 10x slower (measured 26 ms vs 350 ms per training step).
    The previous thread count is restored, so the in-process finetune worker keeps its own.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with (
            gpytorch.settings.max_cholesky_size(4096),
            gpytorch.settings.debug(False),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore", gpytorch.utils.warnings.GPInputWarning)
            # A run's own small noise (Surrogate.fit's noise_lr) can make a latent variance round below zero
            # at an observed point; gpytorch clamps it to 1e-6 and predict clamps again: nothing to report.
            warnings.simplefilter("ignore", gpytorch.utils.warnings.NumericalWarning)
            yield
    finally:
        torch.set_num_threads(threads)


@lru_cache(maxsize=1)
def _space_scaler_values() -> tuple:
    from qtt_cli.hub import load_hub
    from qtt_cli.space import build_space, encode, sample_configs

    hub = load_hub("quicktune")
    configs = sample_configs(build_space(hub.names), 500, seed=0)
    scaler = Scaler.fit_configs(encode(configs, model_names_map=hub.table_names))
    return tuple(asdict(scaler).items())


def space_scaler() -> Scaler:
    """Statistics of 500 configurations sampled from the default Quick-Tune space (computed once)."""
    return Scaler(**dict(copy.deepcopy(_space_scaler_values())))


def _with_method_defaults(state: dict[str, torch.Tensor], nets: Predictors) -> dict[str, torch.Tensor]:
    """``state`` plus the method embeddings of ``nets`` (empty for a layout without method columns) that it
    lacks: surrogates saved before training methods had embeddings load unchanged."""
    defaults = {k: v for k, v in nets.state_dict().items() if k.endswith("method_embedding")}
    return {**defaults, **state}
