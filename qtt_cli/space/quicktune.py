"""The Quick-Tune search space (Table 7 of the Quick-Tune appendix) as a ConfigSpace ``ConfigurationSpace``.

Every value set is exactly the one of the meta-dataset (``table.csv``), not the paper's table, because the
meta-learned predictors only know those values (the table has no ``lr = 0.1`` and no ``sched = None``, and it
has ``momentum = 0``). Ordered numeric sets are ``OrdinalHyperparameter`` (neighbouring values are similar),
unordered choices ``CategoricalHyperparameter``.

``clip_grad`` and ``layer_decay`` have the value ``"off"`` (``None`` in ``PipelineConfig``, ``-1`` in the
table); it is ordered last because no clipping / no layer decay is the limit of ever larger values.

Every hyperparameter of Table 7 is searchable, the finetuning strategies (StochNorm, SP-, DELTA- and BSS-
regularisation, Co-Tuning) with the table's values; ``qtt_cli.worker.strategies`` implements them.

The training methods SPG and HVP (``TRAINING_METHODS``) are searchable too, but they are not in the meta-dataset:
their value sets are ours, and the table encoding (hence the meta-learned predictors) does not see them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ConfigSpace import (
    CategoricalHyperparameter,
    Configuration,
    ConfigurationSpace,
    Constant,
    EqualsCondition,
    InCondition,
    OrdinalHyperparameter,
)

from .config import ADAM_LIKE, PipelineConfig

__all__ = [
    "CONDITIONS",
    "HYPERPARAMETERS",
    "SPACE_HYPERPARAMETERS",
    "TRAINING_METHODS",
    "OFF",
    "HyperparameterDef",
    "build_space",
    "describe_space",
    "sample",
    "sample_configs",
    "to_pipeline_config",
]

OFF = "off"


@dataclass(frozen=True)
class HyperparameterDef:
    """One hyperparameter of the default space.

    Args:
        name: the ``PipelineConfig`` field.
        values: the meta-dataset's values, in order.
        default: the value of the default configuration.
        kind: ``"ordinal"`` (ordered numbers), ``"categorical"`` or ``"constant"`` (fixed).
    """

    name: str
    values: tuple[Any, ...]
    default: Any
    kind: str = "ordinal"
    weights: tuple[tuple[Any, float], ...] = ()  # sampling prior over values; () = uniform

    @property
    def numeric(self) -> bool:
        return self.kind == "ordinal"


def _o(name: str, values: Sequence[Any], default: Any) -> HyperparameterDef:
    return HyperparameterDef(name, tuple(values), default, "ordinal")


def _c(name: str, values: Sequence[Any], default: Any) -> HyperparameterDef:
    return HyperparameterDef(name, tuple(values), default, "categorical")


# Order: as in PipelineConfig. ``model`` is added by build_space from the hub.
HYPERPARAMETERS: tuple[HyperparameterDef, ...] = (
    _o("lr", (1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2), 1e-3),
    _o("batch_size", (2, 4, 8, 16, 32, 64, 128, 256, 512), 32),
    _c("opt", ("sgd", "momentum", "adam", "adamw", "adamp"), "adamw"),
    _o("momentum", (0.0, 0.8, 0.9, 0.95, 0.99), 0.9),
    _c("opt_betas", ("[0.9, 0.999]", "[0.0, 0.99]", "[0.9, 0.99]", "[0.0, 0.999]"), "[0.9, 0.999]"),
    _o("weight_decay", (0.0, 1e-5, 1e-4, 1e-3, 1e-2, 0.1), 0.0),
    _c("sched", ("cosine", "step", "multistep", "plateau"), "cosine"),
    _o("patience_epochs", (2, 5), 5),
    _o("decay_rate", (0.1, 0.5), 0.1),
    _o("decay_epochs", (10, 20), 20),
    _o("warmup_lr", (0.0, 1e-6, 1e-5), 0.0),
    _o("warmup_epochs", (0, 5, 10), 0),
    _o("drop", (0.0, 0.1, 0.2, 0.3, 0.4), 0.0),
    _o("smoothing", (0.0, 0.05, 0.1), 0.0),
    _o("clip_grad", (1.0, 10.0, OFF), OFF),
    _o("mixup", (0.0, 0.2, 0.4, 1.0, 2.0, 4.0, 8.0), 0.0),
    _o("cutmix", (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0), 0.0),
    _o("mixup_prob", (0.0, 0.25, 0.5, 0.75, 1.0), 0.0),
    _c("data_augmentation", ("None", "trivial_augment", "random_augment", "auto_augment"), "None"),
    _c("auto_augment", ("v0", "original"), "v0"),
    _o("ra_num_ops", (2, 3), 2),
    _o("ra_magnitude", (9, 17), 9),
    _o("pct_to_freeze", (0.0, 0.2, 0.4, 0.6, 0.8, 1.0), 0.0),
    _c("linear_probing", (False, True), False),
    _o("layer_decay", (0.65, 0.75, OFF), OFF),
    _c("amp", (False, True), False),
    _c("stoch_norm", (False, True), False),
    _o("sp_reg", (0.0, 1e-4, 1e-3, 1e-2, 0.1), 0.0),
    _o("delta_reg", (0.0, 1e-4, 1e-3, 1e-2, 0.1), 0.0),
    _o("bss_reg", (0.0, 1e-4, 1e-3, 1e-2, 0.1), 0.0),
    _o("cotuning_reg", (0.0, 0.5, 1.0, 2.0, 4.0), 0.0),
)

# Training methods outside the meta-dataset (PipelineConfig's spg*/hvp* fields). SPG's cold start is short
# because its epochs are paid for on top of the fidelity; hvp_every > 1 bounds HVP's cost.
TRAINING_METHODS: tuple[HyperparameterDef, ...] = (
    # Sampled less often than the Table 7 strategies: the meta-learned priors know nothing of them (not in the
    # meta-dataset; the run teaches their embedding from zero) and HVP multiplies the cost of a step. From
    # random weights on 32 px digits neither helped; finetuning ImageNet EfficientNet-Lite0 at 64 px on
    # Fashion-MNIST and on digits (benchmarks/bench_spg_hvp.py --pretrained, seeds 0-2; README "SPG and HVP")
    # neither hurt on average. Two-view HVP gained on both datasets (+5.0 and +4.4 validation points), four views
    # on digits more and on Fashion-MNIST not, at 2.01x an epoch against 1.31x: so HVP, when drawn, uses two
    # views in two thirds of the draws. A space file that lists their values samples them uniformly.
    dataclasses.replace(_c("spg", (False, True), False), weights=((False, 0.75), (True, 0.25))),
    _o("spg_modules", (1, 2, 3), 3),
    _o("spg_drop", (0.1, 0.2, 0.3), 0.2),
    _o("spg_cold_start", (0, 1, 2), 0),
    dataclasses.replace(_o("hvp_views", (1, 2, 3, 4), 1), weights=((1, 0.7), (2, 0.2), (3, 0.05), (4, 0.05))),
    _o("hvp_every", (1, 2, 4), 1),
)

# Everything the default space holds, in PipelineConfig's order (``model`` aside).
SPACE_HYPERPARAMETERS: tuple[HyperparameterDef, ...] = HYPERPARAMETERS + TRAINING_METHODS

# child -> (parent, parent values that activate it)
CONDITIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "momentum": ("opt", ("momentum",)),
    "opt_betas": ("opt", ADAM_LIKE),
    "patience_epochs": ("sched", ("plateau",)),
    "decay_rate": ("sched", ("step", "multistep")),
    "decay_epochs": ("sched", ("step", "multistep")),
    "ra_num_ops": ("data_augmentation", ("random_augment",)),
    "ra_magnitude": ("data_augmentation", ("random_augment",)),
    "auto_augment": ("data_augmentation", ("auto_augment",)),
    "spg_modules": ("spg", (True,)),
    "spg_drop": ("spg", (True,)),
    "spg_cold_start": ("spg", (True,)),
    "hvp_every": ("hvp_views", (2, 3, 4)),
}

_BY_NAME = {hp.name: hp for hp in SPACE_HYPERPARAMETERS}


def build_space(model_names: Sequence[str], seed: int | None = None) -> ConfigurationSpace:
    """The default Quick-Tune space over the models ``model_names`` (the hub's names, first = default)."""
    return _build(model_names, {}, seed)


def _build(
    model_names: Sequence[str], values: Mapping[str, Sequence[Any]], seed: int | None
) -> ConfigurationSpace:
    """The space with some value sets replaced (``values``: name -> new values; see ``spacefile``).

    A conditional hyperparameter whose activating parent values were all removed is left out (it could never
    be active); one whose parent can only take activating values becomes unconditional.
    """
    if not model_names:
        raise ValueError("the space needs at least one model")
    if len(set(model_names)) != len(model_names):
        raise ValueError(f"duplicate model names: {list(model_names)}")
    choices: dict[str, tuple[Any, ...]] = {"model": tuple(model_names)}
    for hp in SPACE_HYPERPARAMETERS:
        choices[hp.name] = tuple(values.get(hp.name, hp.values))
    if "model" in values:
        choices["model"] = tuple(values["model"])

    hyperparameters = {"model": _make(HyperparameterDef("model", choices["model"], None, "categorical"))}
    conditions = []
    for hp in SPACE_HYPERPARAMETERS:
        vals = choices[hp.name]
        if hp.name in values:  # values a space file lists are sampled uniformly: the user chose them
            hp = dataclasses.replace(hp, weights=())
        if hp.name in CONDITIONS:
            parent, active = CONDITIONS[hp.name]
            possible = choices[parent]
            active_here = tuple(v for v in possible if v in active)
            if not active_here:
                continue
            hyperparameters[hp.name] = _make(dataclasses.replace(hp, values=vals))
            if len(active_here) < len(possible) and len(possible) > 1:
                conditions.append((hp.name, parent, active_here))
        else:
            hyperparameters[hp.name] = _make(dataclasses.replace(hp, values=vals))
    space = ConfigurationSpace(seed=seed)
    space.add(list(hyperparameters.values()))
    for child, parent, active_here in conditions:
        c, p = hyperparameters[child], hyperparameters[parent]
        if len(active_here) == 1:
            space.add(EqualsCondition(c, p, active_here[0]))
        else:
            space.add(InCondition(c, p, list(active_here)))
    return space


def _make(hp: HyperparameterDef):
    values = hp.values
    if not values:
        raise ValueError(f"{hp.name}: no values")
    default = hp.default if hp.default in values else values[0]
    if len(values) == 1 or hp.kind == "constant":
        value = values[0]
        # Constant holds str/int/float; booleans travel as 0/1 and PipelineConfig turns them back.
        return Constant(hp.name, int(value) if isinstance(value, bool) else value)
    prior = dict(hp.weights)
    if hp.kind == "ordinal" and not prior:
        return OrdinalHyperparameter(hp.name, list(values), default_value=default)
    # ConfigSpace's ordinals sample uniformly; a sampling prior needs a (weighted) categorical.
    weights = [prior[v] for v in values] if prior and set(values) <= set(prior) else None
    return CategoricalHyperparameter(hp.name, list(values), default_value=default, weights=weights)


def _native(value: Any) -> Any:
    """numpy scalars (what ConfigSpace returns) as plain Python values."""
    if isinstance(value, str):
        return str(value)  # also numpy.str_
    return value.item() if hasattr(value, "item") else value


def to_pipeline_config(configuration: Configuration | Mapping[str, Any]) -> PipelineConfig:
    """A ConfigSpace configuration (or a plain mapping of its active values) as a ``PipelineConfig``.

    Inactive conditional hyperparameters become ``None`` and ``"off"`` becomes ``None``.
    """
    values: dict[str, Any] = dict.fromkeys(CONDITIONS)
    for key, value in dict(configuration).items():
        value = _native(value)
        values[key] = None if value == OFF else value
    for name in ("clip_grad", "layer_decay"):
        values.setdefault(name, None)
    return PipelineConfig.from_dict(values)


def sample_configs(space: ConfigurationSpace, n: int, seed: int | None = None) -> list[PipelineConfig]:
    """``n`` configurations drawn uniformly from ``space`` (re-seeding it when ``seed`` is given)."""
    if n < 1:
        return []
    if seed is not None:
        space.seed(seed)
    drawn = space.sample_configuration(n)
    if not isinstance(drawn, list):
        drawn = [drawn]
    return [to_pipeline_config(c) for c in drawn]


def sample(space: ConfigurationSpace, n: int, seed: int | None = None) -> list[PipelineConfig]:
    """Alias of ``sample_configs`` (the name used in CONTRACTS.md)."""
    return sample_configs(space, n, seed)


def describe_space(space: ConfigurationSpace) -> list[dict[str, Any]]:
    """One row per hyperparameter for ``qtt space show``: name, values, default, condition."""
    conditions: dict[str, str] = {}
    for cond in space.conditions:
        if isinstance(cond, EqualsCondition):
            conditions[cond.child.name] = f"{cond.parent.name} == {cond.value}"
        elif isinstance(cond, InCondition):
            conditions[cond.child.name] = f"{cond.parent.name} in {{{', '.join(map(str, cond.values))}}}"
        else:  # not built by qtt, but describe it anyway
            conditions[cond.child.name] = str(cond)
    order = ["model"] + [hp.name for hp in SPACE_HYPERPARAMETERS]
    rows = []
    for name in sorted(space.keys(), key=lambda n: order.index(n) if n in order else len(order)):
        hp = space[name]
        if isinstance(hp, Constant):
            values, default = [_native(hp.value)], _native(hp.value)
        elif isinstance(hp, OrdinalHyperparameter):
            values, default = [_native(v) for v in hp.sequence], _native(hp.default_value)
        else:
            values, default = [_native(v) for v in hp.choices], _native(hp.default_value)
        if name in _BY_NAME and isinstance(_BY_NAME[name].default, bool):  # Constant stores 0/1
            values, default = [bool(v) for v in values], bool(default)
        condition = conditions.get(name, "")
        rows.append({"name": name, "values": values, "default": default, "condition": condition})
    return rows
