"""Space files: a YAML file that restricts or extends the default Quick-Tune space.

Each top-level key is a hyperparameter of ``qtt space show`` (or ``model``); keys not given keep the default
values. A value is one of:

- a single value: the hyperparameter is fixed (``sched: cosine``);
- a list: exactly these values (``opt: [adamw, momentum]``). For numeric hyperparameters the list may hold
  values the default space lacks (``lr: [0.0001, 0.001, 0.1]``), which extends it;
- ``{add: [...]}``: the default values plus these numeric ones (``weight_decay: {add: [0.05]}``).

Example (also in ``examples/space-small.yaml``)::

    model: [dla46x_c.in1k, edgenext_xx_small.in1k]   # a subset of the hub (bare names like dla46x_c work)
    lr: [0.0001, 0.001, 0.01]
    batch_size: 32
    opt: [adamw, momentum]
    momentum: [0.9, 0.95]        # only used when opt is momentum
    sched: cosine
    clip_grad: [off, 1.0]        # off = no clipping (also for layer_decay)
    weight_decay: {add: [0.05]}

Categorical hyperparameters (``model``, ``opt``, ``opt_betas``, ``sched``, ``data_augmentation``,
``auto_augment``, ``linear_probing``, ``amp``, ``stoch_norm``, ``spg``) accept only the values the worker
implements. The training methods are forced like any other hyperparameter (``spg: true``, ``spg_modules: 3``,
``hvp_views: 4``), and so are the finetuning strategies (``stoch_norm: true``, ``sp_reg: [0, 0.01]``; 0 = off).
New numeric values are outside the meta-dataset, so the meta-learned predictors extrapolate
for them. Write small numbers with a dot or as decimals (``0.001``); plain YAML reads ``1e-3`` as text, which
qtt also accepts.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from ConfigSpace import ConfigurationSpace

from .config import HVP_MAX_VIEWS, SPG_MAX_MODULES
from .quicktune import _BY_NAME, CONDITIONS, OFF, SPACE_HYPERPARAMETERS, _build

__all__ = ["SpaceFileError", "load_space", "parse_space_file"]

_INTEGER = frozenset(
    {"batch_size", "patience_epochs", "decay_epochs", "warmup_epochs", "ra_num_ops", "ra_magnitude"}
    | {"spg_modules", "spg_cold_start", "hvp_views", "hvp_every"}
)
_POSITIVE = frozenset(
    {"batch_size", "patience_epochs", "decay_epochs", "ra_num_ops", "spg_modules", "hvp_views", "hvp_every"}
)
_AT_MOST = {"spg_modules": SPG_MAX_MODULES, "hvp_views": HVP_MAX_VIEWS}
_PROBABILITY = frozenset({"mixup_prob", "pct_to_freeze", "drop", "smoothing"})
# Names people reach for (timm's command line, the paper's Table 7), suggested but not accepted: the space
# file speaks the meta-dataset's names only, like every other part of qtt.
_ALIASES = {
    "learning_rate": "lr",
    "optimizer": "opt",
    "betas": "opt_betas",
    "scheduler": "sched",
    "dropout": "drop",
    "drop_rate": "drop",
    "label_smoothing": "smoothing",
    "augmentation": "data_augmentation",
    "freeze": "pct_to_freeze",
    "clip": "clip_grad",
    "patience": "patience_epochs",
}
_OFFABLE = frozenset({"clip_grad", "layer_decay"})


class SpaceFileError(ValueError):
    """A space file that cannot be applied; the message says which line of thought to fix."""


def load_space(path: str | Path, model_names: Sequence[str], seed: int | None = None) -> ConfigurationSpace:
    """The default space over ``model_names`` (the hub), restricted/extended by the space file at ``path``."""
    return _build(model_names, parse_space_file(path, model_names), seed)


def parse_space_file(path: str | Path, model_names: Sequence[str]) -> dict[str, list[Any]]:
    """The value sets a space file asks for, validated: name -> values (only the names the file sets)."""
    path = Path(path)
    if not path.is_file():
        raise SpaceFileError(f"space file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SpaceFileError(f"space file {str(path)!r} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SpaceFileError(f"space file {str(path)!r} must be a mapping of hyperparameter names to values")
    values: dict[str, list[Any]] = {}
    for key, raw in data.items():
        name = "model" if key == "models" else str(key)
        where = f"space file {str(path)!r}, {name}"
        if name == "model":
            values["model"] = _models(raw, model_names, where)
        elif name in _BY_NAME:
            values[name] = _values(name, raw, where)
        else:
            known = ["model"] + [hp.name for hp in SPACE_HYPERPARAMETERS]
            close = (
                [_ALIASES[name]]
                if name in _ALIASES
                else difflib.get_close_matches(name, known, n=1, cutoff=0.5)
            )
            hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(known)}"
            raise SpaceFileError(f"{where}: unknown hyperparameter {name!r}{hint}")
    _check_conditions(values, path)
    return values


def _as_list(raw: Any, where: str) -> list[Any]:
    if isinstance(raw, dict):
        raise SpaceFileError(f"{where}: only numeric hyperparameters take {{add: [...]}}")
    items = list(raw) if isinstance(raw, list | tuple) else [raw]
    if not items:
        raise SpaceFileError(
            f"{where}: empty choice; give at least one value (or remove the key for the default)"
        )
    return items


def _dedupe(items: list[Any]) -> list[Any]:
    out: list[Any] = []
    for item in items:
        if item not in out:
            out.append(item)
    return out


def _models(raw: Any, model_names: Sequence[str], where: str) -> list[str]:
    chosen = []
    for item in _as_list(raw, where):
        name = str(item)
        if name not in model_names:
            same_arch = [m for m in model_names if m.split(".", 1)[0] == name]
            if len(same_arch) != 1:
                close = difflib.get_close_matches(name, list(model_names), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise SpaceFileError(
                    f"{where}: unknown model {name!r}{hint}; the hub's models are: {', '.join(model_names)}"
                )
            name = same_arch[0]
        chosen.append(name)
    return _dedupe(chosen)


def _values(name: str, raw: Any, where: str) -> list[Any]:
    hp = _BY_NAME[name]
    if hp.kind != "ordinal":
        items = _as_list(raw, where)
        if isinstance(hp.values[0], bool):  # linear_probing, amp, stoch_norm, spg (not 0/1 numbers)
            items = [_boolean(item, where) for item in items]
        else:
            items = ["None" if item is None else str(item) for item in items]
        unsupported = [item for item in items if item not in hp.values]
        if unsupported:
            raise SpaceFileError(
                f"{where}: unsupported value(s) {', '.join(map(repr, unsupported))}; "
                f"supported: {', '.join(map(str, hp.values))}"
            )
        return _dedupe(items)
    if isinstance(raw, dict):
        unknown = sorted(set(raw) - {"add"})
        if unknown or not isinstance(raw.get("add"), list | int | float | str):
            raise SpaceFileError(f"{where}: expected {{add: [values]}}, got {raw!r}")
        items = list(hp.values) + _as_list(raw["add"], where)
    else:
        items = _as_list(raw, where)
    numbers = _dedupe([_number(name, item, where) for item in items])
    off = [v for v in numbers if v == OFF]
    return sorted(v for v in numbers if v != OFF) + off


def _boolean(item: Any, where: str) -> bool:
    if isinstance(item, bool) or item in (0, 1):
        return bool(item)
    text = str(item).strip().lower()
    if text in ("true", "yes", "on", "1", "false", "no", "off", "0"):
        return text in ("true", "yes", "on", "1")
    raise SpaceFileError(f"{where}: expected true or false, got {item!r}")


def _number(name: str, item: Any, where: str) -> Any:
    # YAML reads `off`/`no` as False and `null`/`~` as None: both mean off where off exists.
    if name in _OFFABLE and (item is None or item is False or str(item).strip().lower() in (OFF, "none")):
        return OFF
    if isinstance(item, bool):
        raise SpaceFileError(f"{where}: expected a number, got {item!r}")
    try:
        value = float(item)
    except (TypeError, ValueError):
        extra = " or off" if name in _OFFABLE else ""
        raise SpaceFileError(f"{where}: expected a number{extra}, got {item!r}") from None
    if not math.isfinite(value) or value < 0:
        raise SpaceFileError(f"{where}: {item!r} must be a finite number >= 0")
    if name in _INTEGER:
        if value != int(value) or (value < 1 and name in _POSITIVE):
            lowest = 1 if name in _POSITIVE else 0
            raise SpaceFileError(f"{where}: {item!r} must be an integer >= {lowest}")
        if name in _AT_MOST and value > _AT_MOST[name]:
            raise SpaceFileError(f"{where}: {item!r} must be at most {_AT_MOST[name]}")
        return int(value)
    if name == "lr" and value <= 0:
        raise SpaceFileError(f"{where}: the learning rate must be > 0")
    if (name in _PROBABILITY and value > 1) or (
        name in ("momentum", "decay_rate", "layer_decay") and value > 1
    ):
        raise SpaceFileError(f"{where}: {item!r} must be at most 1")
    if name == "spg_drop" and not 0 < value < 1:
        raise SpaceFileError(f"{where}: the SPG dropout rate {item!r} must be between 0 and 1 (exclusive)")
    if name in _OFFABLE and value == 0:
        raise SpaceFileError(f"{where}: use off rather than 0 to switch {name} off")
    return value


def _check_conditions(values: dict[str, list[Any]], path: Path) -> None:
    """A conditional hyperparameter that the file sets but whose condition the file excludes is a mistake."""
    for child, (parent, active) in CONDITIONS.items():
        if child in values and parent in values and not set(values[parent]) & set(active):
            raise SpaceFileError(
                f"space file {str(path)!r}: {child} is only used when {parent} is one of "
                f"{', '.join(map(str, active))}, which the file excludes ({parent}: {values[parent]}); remove {child}"
            )
