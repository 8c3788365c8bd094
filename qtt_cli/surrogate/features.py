"""From CurveSets to the predictors' input tensors: the feature layout and its scalers.

One input row describes "configuration x of dataset d at epoch t, having seen its curve up to epoch k":

    [ scaled numeric hyperparameters | categorical one-hots | model one-hot | training methods (0/1) | t / scale |
      scaled meta-features | curve prefix (/100, zero-padded to ``curve_length``) | k / scale |
      values in the prefix ]

packed in one flat float tensor (gpytorch's ExactGP stores its training inputs as one tensor); the networks
slice it with :class:`FeatureLayout` offsets. Numeric hyperparameters and meta-features are standardised
with statistics of the data the surrogate was (meta-)trained on; learning-rate-like columns are log-scaled
first, because their values span orders of magnitude. A column that was constant in that data gets scale 0:
the networks never learnt what it means, so it must not move them (e.g. the Meta-Album images all have
side 128 and 3 channels, so the priors ignore resolution and channels).

Fidelity is ``epoch / fidelity_scale`` with the scale stored in the layout (the epoch limit of the
meta-training data, 50 for the Quick-Tune meta-dataset), not the run's ``--max-epochs``: priors that learnt
"epoch 10 of 50" must see epoch 10 as 10/50 also in a run with ``--max-epochs 10``.

``RUN_LEARNT_COLUMNS`` are table columns the predictors learn from the run like the training methods (a
zero-initialised embedding, see ``networks``): in the Quick-Tune meta-dataset every linear-probing record
is one truncated epoch at near-chance accuracy (a broken run of the generating study), so meta-training
drops those records (``qtt_cli.metadataset.without_degenerate``) and the priors know nothing about linear
probing until the run shows what it does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from qtt_cli.metadataset import MODEL_PREFIX, CurveSet, model_columns
from qtt_cli.space.encoding import TABLE_COLUMNS, method_columns

__all__ = ["RUN_LEARNT_COLUMNS", "FeatureLayout", "Observations", "Scaler", "observations"]

NUMERIC_COLUMNS: tuple[str, ...] = tuple(c for c in TABLE_COLUMNS if not c.startswith("cat:"))
CATEGORICAL_COLUMNS: tuple[str, ...] = tuple(
    c for c in TABLE_COLUMNS if c.startswith("cat:") and not c.startswith(MODEL_PREFIX)
)
# log10(value + offset): hyperparameters whose sampled values span orders of magnitude (Table 7).
LOG_COLUMNS: dict[str, float] = {
    "lr": 0.0,
    "batch_size": 0.0,
    "weight_decay": 1e-6,
    "warmup_lr": 1e-7,
    "sp_reg": 1e-5,
    "delta_reg": 1e-5,
    "bss_reg": 1e-5,
}
_MIN_STD = 1e-8
RUN_LEARNT_COLUMNS: tuple[str, ...] = ("linear_probing",)
DEFAULT_FIDELITY_SCALE = 50.0  # the Quick-Tune meta-dataset's epoch limit


@dataclass
class Scaler:
    """Standardisation statistics (after the log transforms): ``(x - center) * scale``; scale 0 = ignored.

    ``cost_center``/``cost_scale`` standardise log seconds per epoch for the cost network.
    """

    hp_center: list[float]
    hp_scale: list[float]
    meta_center: list[float]
    meta_scale: list[float]
    cost_center: float = 0.0
    cost_scale: float = 1.0

    @classmethod
    def fit(cls, curvesets: Sequence[CurveSet]) -> Scaler:
        """Statistics of the configurations, datasets and epoch costs of ``curvesets``."""
        hp = np.concatenate([_hp_values(cs.features) for cs in curvesets])
        meta = np.stack([_meta_values(cs.meta_features) for cs in curvesets])
        costs = np.concatenate([np.log(np.concatenate(cs.costs)) for cs in curvesets if cs.num_observations])
        hp_center, hp_scale = _standardise(hp)
        meta_center, meta_scale = _standardise(meta)
        cost_center = float(costs.mean()) if costs.size else 0.0
        cost_scale = 1.0 / max(float(costs.std()), 0.25) if costs.size > 1 else 1.0
        return cls(hp_center, hp_scale, meta_center, meta_scale, cost_center, cost_scale)

    @classmethod
    def fit_configs(cls, features: pd.DataFrame) -> Scaler:
        """Hyperparameter statistics of ``features``; meta-features ignored (scale 0), as for a single run."""
        hp_center, hp_scale = _standardise(_hp_values(features))
        return cls(hp_center, hp_scale, [0.0] * 4, [0.0] * 4)

    def to_dict(self) -> dict:
        return asdict(self)


def _standardise(values: np.ndarray) -> tuple[list[float], list[float]]:
    center = values.mean(axis=0)
    std = values.std(axis=0)
    scale = np.where(std > _MIN_STD, 1.0 / np.maximum(std, _MIN_STD), 0.0)
    return center.tolist(), scale.tolist()


def _hp_values(features: pd.DataFrame) -> np.ndarray:
    values = features[list(NUMERIC_COLUMNS)].to_numpy(dtype=np.float64)
    for j, name in enumerate(NUMERIC_COLUMNS):
        if name in LOG_COLUMNS:
            values[:, j] = np.log10(np.maximum(values[:, j], 0.0) + LOG_COLUMNS[name] + 1e-12)
    return values


def _meta_values(meta: np.ndarray) -> np.ndarray:
    """num_samples, num_classes, resolution in log; channels as is."""
    meta = np.asarray(meta, dtype=np.float64)
    return np.array([np.log(max(meta[0], 1.0)), np.log(max(meta[1], 1.0)), np.log(max(meta[2], 1.0)), meta[3]])


@dataclass
class FeatureLayout:
    """Which columns the surrogate reads, in which order, and where each block sits in an input row."""

    model_columns: list[str]
    curve_length: int = 50
    numeric_columns: list[str] = field(default_factory=lambda: list(NUMERIC_COLUMNS))
    categorical_columns: list[str] = field(default_factory=lambda: list(CATEGORICAL_COLUMNS))
    method_columns: list[str] = field(default_factory=list)  # RUN_LEARNT_COLUMNS + METHOD_COLUMNS it embeds
    fidelity_scale: float = DEFAULT_FIDELITY_SCALE  # epochs are shown as epoch / fidelity_scale

    @classmethod
    def for_columns(
        cls, columns: Sequence[str], curve_length: int = 50, fidelity_scale: float = DEFAULT_FIDELITY_SCALE
    ) -> FeatureLayout:
        models = model_columns(columns)
        if not models:
            raise ValueError("the columns name no cat:model:* column: the surrogate needs the model one-hot")
        learnt = [c for c in RUN_LEARNT_COLUMNS if c in set(columns)]
        return cls(models, curve_length, method_columns=learnt + method_columns(columns),
                   fidelity_scale=float(fidelity_scale))  # fmt: skip

    @property
    def sizes(self) -> dict[str, int]:
        return {
            "hp": len(self.numeric_columns) + len(self.categorical_columns),
            "model": len(self.model_columns),
            "method": len(self.method_columns),
            "fidelity": 1,
            "meta": 4,
            "prefix": self.curve_length,
            "prefix_len": 2,  # k / max_epochs, and how many of the prefix slots hold values
        }

    @property
    def slices(self) -> dict[str, slice]:
        out, start = {}, 0
        for name, size in self.sizes.items():
            out[name] = slice(start, start + size)
            start += size
        return out

    @property
    def width(self) -> int:
        return sum(self.sizes.values())

    def config_matrix(self, features: pd.DataFrame, scaler: Scaler) -> np.ndarray:
        """Per configuration: [scaled numerics | categorical one-hots | model one-hot | methods] (float32)."""
        unknown = [c for c in model_columns(features.columns) if c not in self.model_columns]
        if unknown and (features[unknown].to_numpy() != 0).any():
            used = [c for c in unknown if (features[c] != 0).any()]
            raise ValueError(
                f"the surrogate does not know model column(s) {used}; extend it with "
                "Surrogate.with_columns(curveset.features.columns) first"
            )
        numeric = (_hp_values(features) - np.asarray(scaler.hp_center)) * np.asarray(scaler.hp_scale)
        cats = features.reindex(columns=self.categorical_columns, fill_value=0).to_numpy(dtype=np.float64)
        models = features.reindex(columns=self.model_columns, fill_value=0).to_numpy(dtype=np.float64)
        methods = features.reindex(columns=self.method_columns, fill_value=0).to_numpy(dtype=np.float64)
        return np.concatenate([numeric, cats, models, methods], axis=1).astype(np.float32)

    def meta_vector(self, meta: np.ndarray, scaler: Scaler) -> np.ndarray:
        return ((_meta_values(meta) - np.asarray(scaler.meta_center)) * np.asarray(scaler.meta_scale)).astype(
            np.float32
        )

    def rows(
        self,
        curveset: CurveSet,
        scaler: Scaler,
        config_rows: np.ndarray,
        epochs: np.ndarray,
        prefix_lengths: np.ndarray,
        config_matrix: np.ndarray | None = None,
    ) -> np.ndarray:
        """Input rows for configuration ``config_rows[i]`` at epoch ``epochs[i]`` having seen its first
        ``prefix_lengths[i]`` epochs (the caller keeps ``prefix_lengths[i] <= epochs[i] - 1``)."""
        config_rows = np.asarray(config_rows, dtype=np.int64)
        epochs = np.asarray(epochs, dtype=np.float64)
        prefix_lengths = np.asarray(prefix_lengths, dtype=np.int64)
        n, L = len(config_rows), self.curve_length
        if config_matrix is None:
            config_matrix = self.config_matrix(curveset.features, scaler)
        out = np.zeros((n, self.width), dtype=np.float32)
        s = self.slices
        out[:, s["hp"].start : s["method"].stop] = config_matrix[config_rows]
        out[:, s["fidelity"]] = (epochs / self.fidelity_scale)[:, None]
        out[:, s["meta"]] = self.meta_vector(curveset.meta_features, scaler)
        padded = _padded_curves(curveset, L)  # [configs, L] of the most recent L epochs' values / 100
        lengths = np.minimum(prefix_lengths, curveset.lengths[config_rows])
        out[:, s["prefix_len"]] = np.stack([lengths / self.fidelity_scale, np.minimum(lengths, L)], axis=1)
        window = np.maximum(lengths - L, 0)  # curves longer than L: the last L observed values
        pos = window[:, None] + np.arange(L)[None, :]
        values = np.take_along_axis(padded[config_rows], np.minimum(pos, padded.shape[1] - 1), axis=1)
        out[:, s["prefix"]] = np.where(pos < lengths[:, None], values, 0.0)
        return out


def _padded_curves(curveset: CurveSet, length: int) -> np.ndarray:
    width = max(length, int(curveset.lengths.max(initial=0)))
    padded = np.zeros((len(curveset), width), dtype=np.float32)
    for i, curve in enumerate(curveset.curves):
        padded[i, : len(curve)] = curve / 100.0
    return padded


@dataclass
class Observations:
    """Every observed (configuration, epoch t) of one curve set as training rows: input = configuration +
    curve up to t-1, target = accuracy at t (in [0, 1]), cost target = standardised log seconds of epoch t."""

    name: str
    inputs: np.ndarray  # [n, layout.width] float32
    targets: np.ndarray  # [n] float32, accuracy / 100
    log_costs: np.ndarray  # [n] float32, log seconds
    config_rows: np.ndarray  # [n] which configuration
    epochs: np.ndarray  # [n] which epoch t

    def __len__(self) -> int:
        return len(self.targets)


def observations(curveset: CurveSet, layout: FeatureLayout, scaler: Scaler) -> Observations:
    lengths = curveset.lengths
    config_rows = np.repeat(np.arange(len(curveset)), lengths)
    epochs = np.concatenate([np.arange(1, k + 1) for k in lengths]) if lengths.sum() else np.zeros(0, np.int64)
    inputs = layout.rows(curveset, scaler, config_rows, epochs, epochs - 1)
    targets = np.concatenate(curveset.curves) / 100.0 if lengths.sum() else np.zeros(0)
    costs = np.concatenate(curveset.costs) if lengths.sum() else np.ones(0)
    return Observations(
        curveset.name,
        inputs,
        targets.astype(np.float32),
        np.log(np.maximum(costs, 1e-6)).astype(np.float32),
        config_rows,
        epochs.astype(np.int64),
    )
