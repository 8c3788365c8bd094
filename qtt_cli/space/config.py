"""The typed finetuning configuration that every part of qtt passes around.

A pipeline is "a pretrained model + how to finetune it". The optimizer proposes it as a ConfigSpace
configuration, the worker trains it, the store records it. Between them it travels as this frozen
dataclass, so that a misspelt hyperparameter is an error at the border instead of a silently ignored
dict key, and so that inactive conditional hyperparameters are ``None`` rather than absent.

Field names and categorical values are exactly those of the Quick-Tune meta-dataset (``table.csv``),
because the meta-learned predictors read user runs through the same encoding.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw", "adamp")
ADAM_LIKE = ("adam", "adamw", "adamp")
SCHEDULERS = ("cosine", "step", "multistep", "plateau")
AUGMENTATIONS = ("None", "trivial_augment", "random_augment", "auto_augment")
AUTO_AUGMENT_POLICIES = ("v0", "original")
BETAS = ("[0.9, 0.999]", "[0.0, 0.99]", "[0.9, 0.99]", "[0.0, 0.999]")

# Limits of the training methods (SPG's loss weights are defined for three modules; HVP's paper uses 4 views).
SPG_MAX_MODULES = 3
HVP_MAX_VIEWS = 4

# Table 7's regularisation strengths (0 = off); ``qtt_cli.worker.strategies`` implements each.
REGULARISERS = ("sp_reg", "delta_reg", "bss_reg", "cotuning_reg")


class ConfigError(ValueError):
    """A configuration that cannot be trained as written (unknown key, bad value, unsupported strategy)."""


@dataclass(frozen=True)
class PipelineConfig:
    """One point of the Quick-Tune search space (Table 7 of the Quick-Tune appendix).

    Conditional hyperparameters are ``None`` when their condition is not met: ``momentum`` only for
    ``opt == "momentum"``, ``opt_betas`` only for Adam-type optimizers, ``patience_epochs`` only for the
    plateau scheduler, ``decay_rate``/``decay_epochs`` only for step/multistep, ``ra_num_ops``/``ra_magnitude``
    only for RandAugment, ``auto_augment`` only for AutoAugment. ``clip_grad``/``layer_decay`` ``None`` = off.

    Training methods outside the meta-dataset (not table columns; ``encoding`` ignores them):

    * ``spg``: Sequential Policy Gradient, ``spg_modules`` temporary replica modules (1..3) with dropout
      ``spg_drop`` each, after ``spg_cold_start`` epochs of optimizer cold start (learning rate 0) at the very
      start of the pipeline; the three are required when ``spg`` is on (``qtt_cli.worker.strategies.spg``).
    * ``hvp_views``: hard views, train on the hardest of that many augmented views per image (1 = off, up to
      4); ``hvp_every`` = select only every k-th step (``None`` = every step) (``...strategies.hvp``).
    """

    model: str
    lr: float = 1e-3
    batch_size: int = 32
    opt: str = "adamw"
    momentum: float | None = None
    opt_betas: str | None = "[0.9, 0.999]"
    weight_decay: float = 0.0
    sched: str = "cosine"
    patience_epochs: int | None = None
    decay_rate: float | None = None
    decay_epochs: int | None = None
    warmup_lr: float = 0.0
    warmup_epochs: int = 0
    drop: float = 0.0
    smoothing: float = 0.0
    clip_grad: float | None = None
    mixup: float = 0.0
    cutmix: float = 0.0
    mixup_prob: float = 0.0
    data_augmentation: str = "None"
    auto_augment: str | None = None
    ra_num_ops: int | None = None
    ra_magnitude: int | None = None
    pct_to_freeze: float = 0.0
    linear_probing: bool = False
    layer_decay: float | None = None
    amp: bool = False
    stoch_norm: bool = False
    sp_reg: float = 0.0
    delta_reg: float = 0.0
    bss_reg: float = 0.0
    cotuning_reg: float = 0.0
    spg: bool = False
    spg_modules: int | None = None
    spg_drop: float | None = None
    spg_cold_start: int | None = None
    hvp_views: int = 1
    hvp_every: int | None = None

    def __post_init__(self) -> None:
        problems = list(_problems(self))
        if problems:
            raise ConfigError("invalid pipeline configuration: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PipelineConfig:
        """Build from a plain mapping (a ConfigSpace configuration, a Parquet row, a YAML file).

        Unknown keys are an error; NaN (how pandas stores a missing value) means ``None``.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"unknown hyperparameter(s): {', '.join(unknown)}")
        clean = {k: None if _is_missing(k, v) else v for k, v in values.items()}
        for f in dataclasses.fields(cls):
            if f.name in clean and clean[f.name] is not None:
                clean[f.name] = _coerce(f.type, clean[f.name])
        return cls(**clean)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def betas(self) -> tuple[float, float] | None:
        """``opt_betas`` as numbers (the meta-dataset stores them as the string ``"[b1, b2]"``)."""
        if self.opt_betas is None:
            return None
        b1, b2 = (float(x) for x in self.opt_betas.strip("[]").split(","))
        return b1, b2


def _is_missing(name: str, value: Any) -> bool:
    """NaN (pandas), ``None`` and the string ``"None"`` mean "inactive" -- except for
    ``data_augmentation``, where ``"None"`` is a real choice (no augmentation), spelt as in the table."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True
    return value == "None" and name != "data_augmentation"


def _coerce(type_name: Any, value: Any) -> Any:
    text = str(type_name)
    if text.startswith("bool"):
        return bool(int(value)) if not isinstance(value, str) else value.lower() in ("1", "true", "yes")
    if text.startswith("int"):
        return int(value)
    if text.startswith("float"):
        return float(value)
    return str(value) if not isinstance(value, str) else value


def _problems(c: PipelineConfig):
    if c.opt not in OPTIMIZERS:
        yield f"opt must be one of {OPTIMIZERS}, got {c.opt!r}"
    if c.sched not in SCHEDULERS:
        yield f"sched must be one of {SCHEDULERS}, got {c.sched!r}"
    if c.data_augmentation not in AUGMENTATIONS:
        yield f"data_augmentation must be one of {AUGMENTATIONS}, got {c.data_augmentation!r}"
    if c.lr <= 0:
        yield f"lr must be > 0, got {c.lr}"
    if c.batch_size < 1:
        yield f"batch_size must be >= 1, got {c.batch_size}"
    if not 0.0 <= c.pct_to_freeze <= 1.0:
        yield f"pct_to_freeze must be in [0, 1], got {c.pct_to_freeze}"
    if not 0.0 <= c.mixup_prob <= 1.0:
        yield f"mixup_prob must be in [0, 1], got {c.mixup_prob}"
    for name in REGULARISERS:
        value = getattr(c, name)
        if not (math.isfinite(value) and value >= 0):
            yield f"{name} must be a finite number >= 0 (0 = off), got {value}"
    if c.opt == "momentum" and c.momentum is None:
        yield "opt 'momentum' needs momentum"
    if c.opt in ADAM_LIKE and c.opt_betas is None:
        yield f"opt {c.opt!r} needs opt_betas"
    if c.opt_betas is not None and c.opt_betas not in BETAS:
        yield f"opt_betas must be one of {BETAS}, got {c.opt_betas!r}"
    if c.sched == "plateau" and c.patience_epochs is None:
        yield "sched 'plateau' needs patience_epochs"
    if c.sched in ("step", "multistep") and (c.decay_rate is None or c.decay_epochs is None):
        yield f"sched {c.sched!r} needs decay_rate and decay_epochs"
    if c.data_augmentation == "random_augment" and (c.ra_num_ops is None or c.ra_magnitude is None):
        yield "random_augment needs ra_num_ops and ra_magnitude"
    if c.data_augmentation == "auto_augment" and c.auto_augment not in AUTO_AUGMENT_POLICIES:
        yield f"auto_augment needs a policy in {AUTO_AUGMENT_POLICIES}, got {c.auto_augment!r}"
    yield from _method_problems(c)


def _method_problems(c: PipelineConfig):
    """The training methods SPG and HVP (not in the meta-dataset, so not validated by its value sets)."""
    if c.spg and (c.spg_modules is None or c.spg_drop is None or c.spg_cold_start is None):
        yield "spg needs spg_modules, spg_drop and spg_cold_start"
    if c.spg_modules is not None and not 1 <= c.spg_modules <= SPG_MAX_MODULES:
        yield f"spg_modules must be in 1..{SPG_MAX_MODULES}, got {c.spg_modules}"
    if c.spg_drop is not None and not 0.0 < c.spg_drop < 1.0:
        yield f"spg_drop must be in (0, 1), got {c.spg_drop}"
    if c.spg_cold_start is not None and c.spg_cold_start < 0:
        yield f"spg_cold_start must be >= 0 epochs, got {c.spg_cold_start}"
    if not 1 <= c.hvp_views <= HVP_MAX_VIEWS:
        yield f"hvp_views must be in 1..{HVP_MAX_VIEWS} (1 = off), got {c.hvp_views}"
    if c.hvp_every is not None and c.hvp_every < 1:
        yield f"hvp_every must be >= 1, got {c.hvp_every}"
