"""Configurations as rows of the Quick-Tune meta-dataset table (``table.csv``), and back.

The meta-learned predictors were trained on that table, so a user's run must be encoded exactly the same
way: numeric columns as stored there, one-hot ``cat:NAME:VALUE`` columns for categorical hyperparameters,
and inactive conditional hyperparameters filled the way the table fills them (``momentum = 0.9`` unless the
optimizer is SGD+momentum, ``opt_betas = None`` unless Adam-like, ``patience_epochs = 10``,
``decay_epochs = 90``, ``decay_rate = 0.1``, ``ra_magnitude = 8``, ``ra_num_ops = 2``,
``auto_augment = None``) and ``-1`` for ``clip_grad``/``layer_decay`` off.

Models are one-hot by their *meta-dataset* name (timm 0.7 names such as ``tf_efficientnet_b7_ns``); pass
``model_names_map`` (e.g. ``Hub.table_names``) to translate the hub's timm names. Models the table does not
know get extra ``cat:model:<name>`` columns after ``TABLE_COLUMNS``. This module needs no torch.

Fields of ``PipelineConfig`` that the table has no column for (``NOT_IN_TABLE``: the training methods SPG and
HVP) are left out of the table columns and come back at their defaults from ``decode`` (see ``table_view``),
so the table round trip stays exact. ``encode(..., methods=True)`` adds one 0/1 column per method
(``METHOD_COLUMNS``) after the table's columns: the predictors see them through an embedding that starts at
zero (the meta-dataset never used them, so the priors predict as if the method were off) and is learnt from
the run's own observations.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from .config import PipelineConfig

__all__ = [
    "CATEGORICAL", "INACTIVE_FILL", "METHOD_COLUMNS", "NOT_IN_TABLE", "TABLE_COLUMNS", "decode", "encode",
    "method_columns", "table_view",
]  # fmt: skip

# The header of table.csv without its leading id column, in order.
TABLE_COLUMNS: tuple[str, ...] = (
    "amp", "batch_size", "bss_reg",
    "cat:auto_augment:None", "cat:auto_augment:original", "cat:auto_augment:v0",
    "cat:data_augmentation:None", "cat:data_augmentation:auto_augment",
    "cat:data_augmentation:random_augment", "cat:data_augmentation:trivial_augment",
    "cat:model:beit_base_patch16_384", "cat:model:beit_large_patch16_512",
    "cat:model:convnext_small_384_in22ft1k", "cat:model:deit3_small_patch16_384_in21ft1k",
    "cat:model:dla46x_c", "cat:model:edgenext_small", "cat:model:edgenext_x_small",
    "cat:model:edgenext_xx_small", "cat:model:mobilevit_xs", "cat:model:mobilevit_xxs",
    "cat:model:mobilevitv2_075", "cat:model:swinv2_base_window12to24_192to384_22kft1k",
    "cat:model:tf_efficientnet_b4_ns", "cat:model:tf_efficientnet_b6_ns", "cat:model:tf_efficientnet_b7_ns",
    "cat:model:volo_d1_384", "cat:model:volo_d3_448", "cat:model:volo_d4_448", "cat:model:volo_d5_448",
    "cat:model:volo_d5_512", "cat:model:xcit_nano_12_p8_384_dist", "cat:model:xcit_small_12_p8_384_dist",
    "cat:model:xcit_tiny_12_p8_384_dist", "cat:model:xcit_tiny_24_p8_384_dist",
    "cat:opt:adam", "cat:opt:adamp", "cat:opt:adamw", "cat:opt:momentum", "cat:opt:sgd",
    "cat:opt_betas:None", "cat:opt_betas:[0.0, 0.999]", "cat:opt_betas:[0.0, 0.99]",
    "cat:opt_betas:[0.9, 0.999]", "cat:opt_betas:[0.9, 0.99]",
    "cat:sched:cosine", "cat:sched:multistep", "cat:sched:plateau", "cat:sched:step",
    "clip_grad", "cotuning_reg", "cutmix", "decay_epochs", "decay_rate", "delta_reg", "drop", "layer_decay",
    "linear_probing", "lr", "mixup", "mixup_prob", "momentum", "patience_epochs", "pct_to_freeze",
    "ra_magnitude", "ra_num_ops", "smoothing", "sp_reg", "stoch_norm", "warmup_epochs", "warmup_lr",
    "weight_decay",
)  # fmt: skip

# Training methods the meta-dataset has no column for, as 0/1 columns: whether SPG / HVP is on.
METHOD_COLUMNS: tuple[str, ...] = ("method:spg", "method:hvp")


def method_columns(columns: Sequence[str]) -> list[str]:
    """The ``METHOD_COLUMNS`` among ``columns``, in ``METHOD_COLUMNS`` order."""
    present = set(columns)
    return [c for c in METHOD_COLUMNS if c in present]


def _method_values(config: PipelineConfig) -> dict[str, int]:
    return {"method:spg": int(bool(config.spg)), "method:hvp": int(config.hvp_views > 1)}


# Categorical hyperparameters (one-hot in the table); "None" is the column of an inactive value.
CATEGORICAL: tuple[str, ...] = ("auto_augment", "data_augmentation", "model", "opt", "opt_betas", "sched")

# What the table stores for an inactive conditional hyperparameter (None = off for clip_grad/layer_decay).
INACTIVE_FILL: dict[str, Any] = {
    "momentum": 0.9,
    "patience_epochs": 10,
    "decay_epochs": 90.0,
    "decay_rate": 0.1,
    "ra_magnitude": 8,
    "ra_num_ops": 2,
    "auto_augment": "None",
    "opt_betas": "None",
    "clip_grad": -1.0,
    "layer_decay": -1.0,
}

# Column dtypes as pandas reads table.csv: these are integers, every other numeric column is a float.
_INT_COLUMNS = frozenset(
    {"amp", "batch_size", "linear_probing", "patience_epochs", "ra_magnitude", "ra_num_ops", "stoch_norm"}
    | {"warmup_epochs"}
)
_NUMERIC = tuple(c for c in TABLE_COLUMNS if not c.startswith("cat:"))
_MODEL_PREFIX = "cat:model:"

# PipelineConfig fields without a table column (derived, so a new field is either a column or listed here).
NOT_IN_TABLE: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(PipelineConfig) if f.name not in _NUMERIC and f.name not in CATEGORICAL
)


def table_view(config: PipelineConfig) -> PipelineConfig:
    """``config`` as the table sees it, i.e. ``decode(encode([config]))``: the ``NOT_IN_TABLE`` fields at their
    defaults."""
    fields = {f.name: f for f in dataclasses.fields(PipelineConfig)}
    return dataclasses.replace(config, **{name: fields[name].default for name in NOT_IN_TABLE})


def _table_value(config: PipelineConfig, name: str) -> Any:
    value = getattr(config, name)
    if value is None:
        return INACTIVE_FILL[name]
    if name in _INT_COLUMNS:
        return int(value)
    return value if isinstance(value, str) else float(value)


def encode(
    configs: Sequence[PipelineConfig],
    model_column_names: Sequence[str] | None = None,
    *,
    model_names_map: Mapping[str, str] | None = None,
    methods: bool = False,
) -> pd.DataFrame:
    """Configurations as a DataFrame with the table's columns, in the table's order and dtypes.

    Args:
        configs: the configurations, one row each.
        model_column_names: model names (meta-dataset names, after ``model_names_map``) that must have a
            ``cat:model:`` column even when no configuration uses them, e.g. the whole hub, so that every
            encoding of one run has the same columns. Names the table has are not repeated.
        model_names_map: ``config.model`` -> meta-dataset name, e.g. ``Hub.table_names``; names it lacks are
            used as they are.
        methods: also the ``METHOD_COLUMNS`` (last), for the predictors; not part of the table.
    """
    mapping = dict(model_names_map or {})
    table_models = [c[len(_MODEL_PREFIX) :] for c in TABLE_COLUMNS if c.startswith(_MODEL_PREFIX)]
    extra: list[str] = []
    for name in list(model_column_names or []) + [mapping.get(c.model, c.model) for c in configs]:
        if name not in table_models and name not in extra:
            extra.append(name)
    columns = list(TABLE_COLUMNS) + [_MODEL_PREFIX + name for name in extra] + list(METHOD_COLUMNS if methods else ())

    rows = []
    for config in configs:
        row: dict[str, Any] = dict.fromkeys(columns, 0)
        for name in _NUMERIC:
            row[name] = _table_value(config, name)
        for name in CATEGORICAL:
            value = getattr(config, name)
            value = mapping.get(value, value) if name == "model" else value
            column = f"cat:{name}:{INACTIVE_FILL[name] if value is None else value}"
            if column not in row:
                raise ValueError(f"{name} = {value!r} has no column in the meta-dataset encoding")
            row[column] = 1
        if methods:
            row.update(_method_values(config))
        rows.append(row)
    frame = pd.DataFrame(rows, columns=columns)
    dtypes = {c: ("float64" if c in _NUMERIC and c not in _INT_COLUMNS else "int64") for c in columns}
    return frame.astype(dtypes)


def decode(
    row: Mapping[str, Any] | pd.Series, model_names_map: Mapping[str, str] | None = None
) -> PipelineConfig:
    """A table row (or an ``encode`` row) as a ``PipelineConfig``; inactive fills become ``None``.

    Args:
        row: the row, by column name (an id column, if present, is ignored).
        model_names_map: the same ``config.model`` -> meta-dataset name map given to ``encode``; it is
            inverted to give back the hub's model name.
    """
    inverse = {table: hub for hub, table in (model_names_map or {}).items()}
    values: dict[str, Any] = {}
    for name in CATEGORICAL:
        prefix = f"cat:{name}:"
        hot = [key[len(prefix) :] for key, v in row.items() if str(key).startswith(prefix) and v == 1]
        if len(hot) != 1:
            raise ValueError(f"row must have exactly one {prefix}* column set, found {hot}")
        values[name] = inverse.get(hot[0], hot[0]) if name == "model" else hot[0]
    for name in _NUMERIC:
        values[name] = row[name]
    for name in ("clip_grad", "layer_decay"):
        if float(values[name]) < 0:
            values[name] = None
    # Inactive conditionals: the table's fills mean "not used".
    if values["opt"] != "momentum":
        values["momentum"] = None
    if values["sched"] != "plateau":
        values["patience_epochs"] = None
    if values["sched"] not in ("step", "multistep"):
        values["decay_rate"] = values["decay_epochs"] = None
    if values["data_augmentation"] != "random_augment":
        values["ra_num_ops"] = values["ra_magnitude"] = None
    return PipelineConfig.from_dict({k: _plain(v) for k, v in values.items()})


def _plain(value: Any) -> Any:
    if isinstance(value, str):
        return str(value)
    return value.item() if hasattr(value, "item") else value
