"""A ``qtt tune`` run directory as a CurveSet, so that past runs can join a meta-dataset.

The results store is the source of truth (one row per pipeline per epoch); ``run.json`` gives the dataset's
meta-features, the hub's models and ``max_epochs``. Configurations are encoded with the same table columns
as the meta-dataset (models mapped to their meta-dataset names through the hub).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qtt_cli.space.config import ConfigError, PipelineConfig
from qtt_cli.store.results import HYPERPARAMETER_COLUMNS, RESULTS_FILE, ResultsStore, charged_costs

from .curveset import META_FEATURE_NAMES, CurveSet, build_curveset
from .quicktune_format import MetaDatasetError

__all__ = ["load_run"]


def load_run(run_dir: Path) -> CurveSet:
    """The learning curves of a run directory (``RUNDIR/results.parquet`` + ``RUNDIR/run.json``).

    Each pipeline keeps the epochs it completed with a score, in order, up to the first missing epoch: a
    failed or diverged pipeline keeps its observed prefix; a pipeline without a scored epoch has an empty
    curve. Config ids are ``<run name>/<pipeline id>`` so that several runs can share one table.
    """
    run_dir = Path(run_dir)
    run_file = run_dir / "run.json"
    if not run_file.is_file():
        raise MetaDatasetError(f"{str(run_dir)!r} is not a qtt run directory (no run.json)")
    if not (run_dir / RESULTS_FILE).is_file():
        raise MetaDatasetError(f"run {str(run_dir)!r} has no {RESULTS_FILE} yet: it has not trained anything")
    try:
        run = json.loads(run_file.read_text())
    except json.JSONDecodeError as exc:
        raise MetaDatasetError(f"{str(run_file)!r} is not valid JSON: {exc}") from exc
    meta = _meta_features(run, run_file)
    max_epochs = int((run.get("settings") or {}).get("max_epochs") or 0)
    if max_epochs < 1:
        raise MetaDatasetError(f"{str(run_file)!r} has no settings.max_epochs")
    table_names = _table_names(run)

    history = ResultsStore(run_dir).load()
    ids, configs, curves, costs = [], [], [], []
    for pid, rows in history.groupby("pipeline_id", sort=False):
        try:
            first = rows.iloc[0]  # runs written before a hyperparameter existed lack its column: its default
            configs.append(
                PipelineConfig.from_dict({c: _plain(first[c]) for c in HYPERPARAMETER_COLUMNS if c in first})
            )
        except ConfigError as exc:
            raise MetaDatasetError(f"run {str(run_dir)!r}, pipeline {pid}: {exc}") from exc
        curve, cost = _observed_prefix(rows)
        ids.append(f"{run_dir.name}/{pid}")
        curves.append(curve)
        costs.append(cost)
    models = [table_names.get(m, m) for m in run.get("models", [])]
    return build_curveset(
        run_dir.name, configs, curves, costs, meta, max_epochs,
        config_ids=ids, model_names_map=table_names, model_column_names=models,
    )  # fmt: skip


def _observed_prefix(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Scored epochs 1, 2, ... k (the last row wins when an epoch was recorded twice)."""
    scored = rows[rows["val_top1"].notna() & rows["epoch"].notna()]
    # seconds charged: the epoch's cost_s plus its step's overhead_s (on the step's first row)
    charged = charged_costs(scored)
    by_epoch = {int(r.epoch): (float(r.val_top1), c) for r, c in zip(scored.itertuples(), charged, strict=True)}
    curve, cost = [], []
    epoch = 1
    while epoch in by_epoch and np.isfinite(by_epoch[epoch][0]):
        acc, sec = by_epoch[epoch]
        curve.append(acc)
        cost.append(sec if np.isfinite(sec) and sec > 0 else np.nan)
        epoch += 1
    cost_arr = np.asarray(cost, dtype=np.float64)
    if cost_arr.size and np.isnan(cost_arr).any():  # an unrecorded cost: the pipeline's typical epoch
        fill = np.nanmedian(cost_arr) if np.isfinite(cost_arr).any() else 1.0
        cost_arr = np.where(np.isnan(cost_arr), fill, cost_arr)
    return np.asarray(curve, dtype=np.float64), cost_arr


def _meta_features(run: dict[str, Any], run_file: Path) -> np.ndarray:
    meta = run.get("meta_features") or {}
    try:
        return np.array([float(meta[name]) for name in META_FEATURE_NAMES])
    except (KeyError, TypeError, ValueError) as exc:
        raise MetaDatasetError(
            f"{str(run_file)!r} has no complete meta_features ({', '.join(META_FEATURE_NAMES)})"
        ) from exc


def _table_names(run: dict[str, Any]) -> dict[str, str]:
    """Hub model name -> meta-dataset name, from the run's hub when it can still be loaded."""
    from qtt_cli.hub import HubError, load_hub

    hub = run.get("hub") or (run.get("settings") or {}).get("hub")
    if not hub:
        return {}
    try:
        return load_hub(hub).table_names
    except (HubError, OSError):
        # A custom hub file that moved: the builtin hubs still know the names they share with it.
        from qtt_cli.hub import builtin_hubs

        return {k: v for h in builtin_hubs().values() for k, v in h.table_names.items()}


def _plain(value: Any) -> Any:
    if value is pd.NA or value is None:
        return None
    return value.item() if hasattr(value, "item") else value
