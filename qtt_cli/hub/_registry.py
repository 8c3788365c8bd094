"""Model hubs: the named sets of pretrained timm models that qtt may choose from.

A hub is data (names, sizes, the meta-dataset name of each model), so listing one is cheap: timm is imported
only to validate the names of a user's hub file.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "Hub",
    "HubError",
    "ModelSpec",
    "builtin_hubs",
    "describe_hub",
    "load_hub",
    "parse_hub_file",
]


class HubError(ValueError):
    """A hub that cannot be used as written (unknown hub, unknown model, malformed hub file)."""


@dataclass(frozen=True)
class ModelSpec:
    """One model of a hub.

    Args:
        name: the timm model name, ``arch.pretrained_tag`` so that it says which weights are finetuned.
        table_name: the model's name in the Quick-Tune meta-dataset (``cat:model:<table_name>``), which still
            uses timm 0.7 names; ``None`` for models outside the meta-dataset.
        params_m: parameters in millions with the 1000-class ImageNet head (as in Table 8), if known.
        input_size: side of the square input qtt trains the model at before ``--max-input-size`` caps it.
        top1: ImageNet top-1 accuracy of the pretrained weights (as reported in Table 8), if known.
    """

    name: str
    table_name: str | None = None
    params_m: float | None = None
    input_size: int = 224
    top1: float | None = None

    @property
    def arch(self) -> str:
        """The architecture part of ``name`` (without the pretrained tag)."""
        return self.name.split(".", 1)[0]


@dataclass(frozen=True)
class Hub:
    """A named, ordered set of models."""

    name: str
    models: tuple[ModelSpec, ...]
    _by_name: Mapping[str, ModelSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.models:
            raise HubError(f"hub {self.name!r} has no models")
        by_name: dict[str, ModelSpec] = {}
        for spec in self.models:
            if spec.name in by_name:
                raise HubError(f"hub {self.name!r} lists model {spec.name!r} twice")
            by_name[spec.name] = spec
        object.__setattr__(self, "models", tuple(self.models))
        object.__setattr__(self, "_by_name", by_name)

    @property
    def names(self) -> list[str]:
        return [spec.name for spec in self.models]

    @property
    def table_names(self) -> dict[str, str]:
        """Hub name -> meta-dataset name, for the models that the meta-dataset knows (see ``encoding``)."""
        return {spec.name: spec.table_name for spec in self.models if spec.table_name}

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __len__(self) -> int:
        return len(self.models)

    def get(self, name: str) -> ModelSpec:
        """The model called ``name``; the bare architecture name is accepted when it is unambiguous."""
        if name in self._by_name:
            return self._by_name[name]
        same_arch = [spec for spec in self.models if spec.arch == name]
        if len(same_arch) == 1:
            return same_arch[0]
        hint = difflib.get_close_matches(name, self.names, n=1)
        suggestion = f" Did you mean {hint[0]!r}?" if hint else ""
        raise HubError(
            f"model {name!r} is not in hub {self.name!r}.{suggestion} Its models are: {', '.join(self.names)}"
        )


# Table 8 of the Quick-Tune appendix: the Pareto-optimal models of timm 0.7. The meta-dataset names them the
# timm 0.7 way; timm 1.x names the same weights `arch.tag`. The mapping follows timm's own deprecation table
# (`timm.models.get_deprecated_models()`) where the old name is deprecated, and otherwise takes the single
# pretrained tag that timm 1.x has for the architecture. tests/test_hub.py checks both against timm.
_QUICKTUNE = (
    # name, table_name, params_m, input_size, top1
    ("beit_large_patch16_512.in22k_ft_in22k_in1k", "beit_large_patch16_512", 305.67, 512, 90.691),
    ("volo_d5_512.sail_in1k", "volo_d5_512", 296.09, 512, 90.610),
    ("volo_d5_448.sail_in1k", "volo_d5_448", 295.91, 448, 90.584),
    ("volo_d4_448.sail_in1k", "volo_d4_448", 193.41, 448, 90.507),
    (
        "swinv2_base_window12to24_192to384.ms_in22k_ft_in1k",
        "swinv2_base_window12to24_192to384_22kft1k",
        87.92,
        384,
        90.401,
    ),
    ("beit_base_patch16_384.in22k_ft_in22k_in1k", "beit_base_patch16_384", 86.74, 384, 90.371),
    ("volo_d3_448.sail_in1k", "volo_d3_448", 86.63, 448, 90.168),
    ("tf_efficientnet_b7.ns_jft_in1k", "tf_efficientnet_b7_ns", 66.35, 600, 90.093),
    ("convnext_small.fb_in22k_ft_in1k_384", "convnext_small_384_in22ft1k", 50.22, 384, 89.803),
    ("tf_efficientnet_b6.ns_jft_in1k", "tf_efficientnet_b6_ns", 43.04, 528, 89.784),
    ("volo_d1_384.sail_in1k", "volo_d1_384", 26.78, 384, 89.698),
    ("xcit_small_12_p8_384.fb_dist_in1k", "xcit_small_12_p8_384_dist", 26.21, 384, 89.515),
    ("deit3_small_patch16_384.fb_in22k_ft_in1k", "deit3_small_patch16_384_in21ft1k", 22.21, 384, 89.367),
    ("tf_efficientnet_b4.ns_jft_in1k", "tf_efficientnet_b4_ns", 19.34, 380, 89.303),
    ("xcit_tiny_24_p8_384.fb_dist_in1k", "xcit_tiny_24_p8_384_dist", 12.11, 384, 88.778),
    ("xcit_tiny_12_p8_384.fb_dist_in1k", "xcit_tiny_12_p8_384_dist", 6.71, 384, 88.101),
    ("edgenext_small.usi_in1k", "edgenext_small", 5.59, 256, 87.504),
    ("xcit_nano_12_p8_384.fb_dist_in1k", "xcit_nano_12_p8_384_dist", 3.05, 384, 85.025),
    ("mobilevitv2_075.cvnets_in1k", "mobilevitv2_075", 2.87, 256, 82.806),
    ("edgenext_x_small.in1k", "edgenext_x_small", 2.34, 256, 81.897),
    ("mobilevit_xs.cvnets_in1k", "mobilevit_xs", 2.32, 256, 81.574),
    ("edgenext_xx_small.in1k", "edgenext_xx_small", 1.33, 256, 78.698),
    ("mobilevit_xxs.cvnets_in1k", "mobilevit_xxs", 1.27, 256, 76.602),
    ("dla46x_c.in1k", "dla46x_c", 1.07, 224, 73.632),
)

# Small convnets for smoke tests, demos and CPU-only machines, trained at 32x32. Measured train epoch on 300
# 32x32 images (batch 32, AdamW, 10 classes, 2 shared CPU cores, random weights): tf_efficientnet_lite0 1.9 s,
# dla46x_c 0.75 s, edgenext_xx_small 0.45 s, mobilevit_xxs 0.6 s, mobilenetv3_small_050 0.55 s, lcnet_050
# 0.5 s. Three of them are Quick-Tune models, so the meta-learned predictors have seen part of this hub.
_TINY = (
    ("tf_efficientnet_lite0.in1k", None, 4.65, 32, None),
    ("dla46x_c.in1k", "dla46x_c", 1.07, 32, 73.632),
    ("edgenext_xx_small.in1k", "edgenext_xx_small", 1.33, 32, 78.698),
    ("mobilevit_xxs.cvnets_in1k", "mobilevit_xxs", 1.27, 32, 76.602),
    ("mobilenetv3_small_050.lamb_in1k", None, 1.59, 32, None),
    ("lcnet_050.ra2_in1k", None, 1.88, 32, None),
)


def _hub(name: str, rows: Iterable[tuple]) -> Hub:
    return Hub(name, tuple(ModelSpec(*row) for row in rows))


def builtin_hubs() -> dict[str, Hub]:
    """The hubs that ship with qtt, by name."""
    return {"quicktune": _hub("quicktune", _QUICKTUNE), "tiny": _hub("tiny", _TINY)}


def load_hub(name_or_path: str | Path) -> Hub:
    """A built-in hub by name (``quicktune``, ``tiny``) or a custom hub from a YAML file.

    A hub file lists models, each a timm name or a mapping with optional fields::

        name: my-hub                  # optional, defaults to the file name
        models:
          - dla46x_c.in1k             # table_name and input size filled in where qtt knows them
          - name: resnet18.a1_in1k
            input_size: 160
            params_m: 11.7
            top1: 71.5
    """
    builtins = builtin_hubs()
    if str(name_or_path) in builtins:
        return builtins[str(name_or_path)]
    path = Path(name_or_path)
    if path.suffix.lower() in (".yaml", ".yml") or path.exists():
        return parse_hub_file(path)
    raise HubError(
        f"unknown hub {str(name_or_path)!r}: use one of {', '.join(builtins)} or the path of a YAML hub file"
    )


_SPEC_FIELDS = ("name", "table_name", "params_m", "input_size", "top1")


def parse_hub_file(path: Path) -> Hub:
    """Read and validate a YAML hub file (format: see ``load_hub``)."""
    if not path.is_file():
        raise HubError(f"hub file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise HubError(f"hub file {str(path)!r} is not valid YAML: {exc}") from exc
    if isinstance(data, list):
        data = {"models": data}
    if not isinstance(data, dict) or not isinstance(data.get("models"), list) or not data["models"]:
        raise HubError(f"hub file {str(path)!r} must contain a non-empty list 'models' of timm model names")
    unknown = sorted(set(data) - {"name", "models"})
    if unknown:
        raise HubError(f"hub file {str(path)!r}: unknown key(s) {', '.join(unknown)}; expected name, models")
    known = {spec.name: spec for hub in builtin_hubs().values() for spec in hub.models}
    specs = [_parse_entry(entry, i, path, known) for i, entry in enumerate(data["models"])]
    _check_timm_names([spec.name for spec in specs], path)
    return Hub(str(data.get("name") or path.stem), tuple(specs))


def _parse_entry(entry: Any, index: int, path: Path, known: Mapping[str, ModelSpec]) -> ModelSpec:
    where = f"hub file {str(path)!r}, model #{index + 1}"
    if isinstance(entry, str):
        entry = {"name": entry}
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
        raise HubError(f"{where}: expected a model name or a mapping with 'name', got {entry!r}")
    unknown = sorted(set(entry) - set(_SPEC_FIELDS))
    if unknown:
        raise HubError(f"{where}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(_SPEC_FIELDS)}")
    base = known.get(entry["name"])
    values: dict[str, Any] = {
        "name": entry["name"],
        "table_name": base.table_name if base else None,
        "params_m": base.params_m if base else None,
        "input_size": base.input_size if base else None,
        "top1": base.top1 if base else None,
    }
    values.update({k: v for k, v in entry.items() if v is not None})
    try:
        if values["input_size"] is None:
            values["input_size"] = _pretrained_input_size(values["name"])
        values["input_size"] = int(values["input_size"])
        for key in ("params_m", "top1"):
            if values[key] is not None:
                values[key] = float(values[key])
    except (TypeError, ValueError) as exc:
        raise HubError(f"{where} ({values['name']}): {exc}") from exc
    if values["input_size"] < 1:
        raise HubError(f"{where} ({values['name']}): input_size must be a positive integer")
    return ModelSpec(**values)


def _pretrained_input_size(name: str) -> int:
    import timm  # heavy; only needed for custom hubs

    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except Exception:  # noqa: BLE001 - unknown names are reported by _check_timm_names
        cfg = None
    size = getattr(cfg, "input_size", None) or (3, 224, 224)
    return int(max(size[-2:]))


def _check_timm_names(names: list[str], path: Path) -> None:
    import timm

    problems = []
    for name in names:
        arch, _, tag = name.partition(".")
        if not timm.is_model(arch):
            close = difflib.get_close_matches(arch, timm.list_models(), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            problems.append(f"{name!r} is not a timm model{hint}")
        elif tag and name not in timm.list_pretrained(name):
            tags = timm.list_pretrained(f"{arch}.*")
            problems.append(
                f"{name!r}: timm has no pretrained tag {tag!r} for {arch}"
                + (f" (available: {', '.join(tags)})" if tags else " (it has no pretrained weights)")
            )
    if problems:
        raise HubError(f"hub file {str(path)!r}: " + "; ".join(problems))


def describe_hub(hub: Hub) -> list[dict[str, Any]]:
    """One row per model for ``qtt hub list``: name, table_name, params_m, input_size, top1."""
    return [
        {
            "name": spec.name,
            "table_name": spec.table_name,
            "params_m": spec.params_m,
            "input_size": spec.input_size,
            "top1": spec.top1,
        }
        for spec in hub.models
    ]
