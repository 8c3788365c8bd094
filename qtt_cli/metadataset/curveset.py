"""Learning curves of pipelines on one dataset: the unit the predictors train on and predict for.

A :class:`CurveSet` is what the Quick-Tune meta-dataset holds per dataset and what a ``qtt tune`` run
holds about its own dataset, in one shape: encoded configurations (the meta-dataset table's columns),
their validation-accuracy and cost curves, the dataset's meta-features and the epoch limit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from qtt_cli.hub import Hub
from qtt_cli.space.config import PipelineConfig
from qtt_cli.space.encoding import TABLE_COLUMNS, encode

__all__ = ["META_FEATURE_NAMES", "MODEL_PREFIX", "CurveSet", "build_curveset", "hub_model_columns", "model_columns"]

MODEL_PREFIX = "cat:model:"
# Order of the meta-feature vector, as in the meta-dataset's descriptors.json and MetaFeatures.as_list().
META_FEATURE_NAMES = ("num_samples", "num_classes", "resolution", "channels")


@dataclass(frozen=True, eq=False)
class CurveSet:
    """Learning curves of pipelines on ONE dataset.

    Args:
        name: the dataset's name (a meta-dataset key or a run directory's name).
        config_ids: one id per row of ``features``.
        features: encoded hyperparameters, one row per configuration, with the table's columns
            (``TABLE_COLUMNS`` plus extra ``cat:model:*`` columns) and raw (unscaled) values.
        curves: per configuration, validation top-1 in PERCENT after epochs 1..k (k may be 0).
        costs: per configuration, seconds spent on each of those epochs (same lengths as ``curves``).
        meta_features: ``[num_samples, num_classes, resolution, channels]`` of the dataset.
        max_epochs: the epoch at which a pipeline is finished on this dataset.
    """

    name: str
    config_ids: tuple[str, ...]
    features: pd.DataFrame
    curves: tuple[np.ndarray, ...]
    costs: tuple[np.ndarray, ...]
    meta_features: np.ndarray
    max_epochs: int

    def __post_init__(self) -> None:
        n = len(self.config_ids)
        if len(self.features) != n or len(self.curves) != n or len(self.costs) != n:
            raise ValueError(
                f"curve set {self.name!r}: {n} config ids, {len(self.features)} feature rows, "
                f"{len(self.curves)} curves and {len(self.costs)} cost curves; they must match"
            )
        if len(set(self.config_ids)) != n:
            raise ValueError(f"curve set {self.name!r}: config ids are not unique")
        missing = [c for c in TABLE_COLUMNS if c not in self.features.columns]
        if missing:
            raise ValueError(f"curve set {self.name!r}: features lack table column(s) {missing[:5]}")
        curves = tuple(np.asarray(c, dtype=np.float64).reshape(-1) for c in self.curves)
        costs = tuple(np.asarray(c, dtype=np.float64).reshape(-1) for c in self.costs)
        for cid, curve, cost in zip(self.config_ids, curves, costs, strict=True):
            if len(curve) != len(cost):
                raise ValueError(
                    f"curve set {self.name!r}, config {cid}: {len(curve)} accuracies but {len(cost)} costs"
                )
        meta = np.asarray(self.meta_features, dtype=np.float64).reshape(-1)
        if meta.shape != (len(META_FEATURE_NAMES),):
            raise ValueError(f"curve set {self.name!r}: meta_features must be {list(META_FEATURE_NAMES)}")
        if int(self.max_epochs) < 1:
            raise ValueError(f"curve set {self.name!r}: max_epochs must be >= 1")
        object.__setattr__(self, "config_ids", tuple(str(c) for c in self.config_ids))
        object.__setattr__(self, "features", self.features.reset_index(drop=True))
        object.__setattr__(self, "curves", curves)
        object.__setattr__(self, "costs", costs)
        object.__setattr__(self, "meta_features", meta)
        object.__setattr__(self, "max_epochs", int(self.max_epochs))

    def __len__(self) -> int:
        return len(self.config_ids)

    @property
    def lengths(self) -> np.ndarray:
        """Observed epochs per configuration."""
        return np.array([len(c) for c in self.curves], dtype=np.int64)

    @property
    def num_observations(self) -> int:
        """Observed (configuration, epoch) pairs: the training samples this curve set gives."""
        return int(self.lengths.sum())

    def with_observations(self, curves: Sequence[np.ndarray], costs: Sequence[np.ndarray]) -> CurveSet:
        """The same configurations with other observed prefixes (e.g. what a replayed search has seen)."""
        return CurveSet(
            self.name, self.config_ids, self.features, tuple(curves), tuple(costs), self.meta_features,
            self.max_epochs,
        )  # fmt: skip

    def subset(self, rows: Sequence[int] | np.ndarray) -> CurveSet:
        """Only the configurations at ``rows`` (in that order)."""
        rows = [int(r) for r in rows]
        return CurveSet(
            self.name,
            tuple(self.config_ids[r] for r in rows),
            self.features.iloc[rows],
            tuple(self.curves[r] for r in rows),
            tuple(self.costs[r] for r in rows),
            self.meta_features,
            self.max_epochs,
        )

    def model_names(self) -> list[str]:
        """The (meta-dataset) model name of each configuration."""
        cols = model_columns(self.features.columns)
        hot = self.features[cols].to_numpy().argmax(axis=1)
        return [cols[i][len(MODEL_PREFIX) :] for i in hot]


def model_columns(columns: Sequence[str] | pd.Index) -> list[str]:
    """The ``cat:model:*`` columns among ``columns``, in order."""
    return [str(c) for c in columns if str(c).startswith(MODEL_PREFIX)]


def hub_model_columns(hub: Hub) -> list[str]:
    """One ``cat:model:*`` column per model of ``hub``, under its meta-dataset name where it has one."""
    return [MODEL_PREFIX + (spec.table_name or spec.name) for spec in hub.models]


def build_curveset(
    name: str,
    configs: Sequence[PipelineConfig],
    curves: Sequence[Sequence[float]],
    costs: Sequence[Sequence[float]],
    meta_features: Sequence[float] | np.ndarray,
    max_epochs: int,
    *,
    config_ids: Sequence[str] | None = None,
    model_names_map: Mapping[str, str] | None = None,
    model_column_names: Sequence[str] | None = None,
) -> CurveSet:
    """A CurveSet from ``PipelineConfig`` objects, encoded exactly as the meta-dataset table, plus the
    training-method columns (``METHOD_COLUMNS``: SPG, HVP), which the table lacks.

    Args:
        configs: the configurations (e.g. the run's pipelines followed by fresh candidates).
        curves, costs: per configuration, the observed accuracies (percent) and epoch seconds.
        config_ids: one id per configuration; defaults to ``c0``, ``c1``, ...
        model_names_map: hub name -> meta-dataset name (``Hub.table_names``).
        model_column_names: meta-dataset names of every model of the hub, so that every curve set of a
            run has the same ``cat:model:*`` columns even for models no configuration uses yet.
    """
    features = encode(configs, model_column_names, model_names_map=model_names_map, methods=True)
    ids = tuple(config_ids) if config_ids is not None else tuple(f"c{i}" for i in range(len(configs)))
    return CurveSet(
        name,
        ids,
        features,
        tuple(np.asarray(c, dtype=np.float64) for c in curves),
        tuple(np.asarray(c, dtype=np.float64) for c in costs),
        np.asarray(meta_features, dtype=np.float64),
        max_epochs,
    )
