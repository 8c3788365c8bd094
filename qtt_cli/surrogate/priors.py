"""The meta-learned priors shipped in ``metadata/quicktune`` and when a search may use them.

Coverage rule: the priors are used when they know at least one of the hub's models. Models they do not
know get a zero embedding (no model-specific prior; what was learnt about hyperparameters, curves and costs
still applies) that the search's refits then learn. A hub with none of the meta-dataset's models runs
without priors: every model would be unknown, and a network trained on other models' curves is then a
worse start than an untrained one fitted to the run's own observations. ``describe_priors`` says which
case applies, for the tuner to print.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from qtt_cli.metadataset import model_columns

from .surrogate import CONFIG_FILE, WEIGHTS_FILE, Surrogate

__all__ = ["PRIORS_DIR", "describe_priors", "load_priors"]



def _shipped_priors_dir(package_root: Path) -> Path:
    """Where the priors of ``metadata/quicktune`` are: installed from a wheel they are the package data
    ``qtt_cli/priors/quicktune`` (pyproject maps ``metadata/`` there); in a source checkout or an editable
    install they are the repository's ``metadata/quicktune``."""
    installed = package_root / "priors" / "quicktune"
    return installed if installed.is_dir() else package_root.parent / "metadata" / "quicktune"


# QTT_PRIORS_DIR points elsewhere.
PRIORS_DIR = _shipped_priors_dir(Path(__file__).resolve().parents[1])


def _priors_dir(directory: Path | None) -> Path:
    return Path(directory or os.environ.get("QTT_PRIORS_DIR") or PRIORS_DIR)


def load_priors(hub_columns: Sequence[str], directory: Path | None = None) -> Surrogate | None:
    """The shipped priors, extended to the hub's model columns, or ``None`` when there are no priors
    or they know none of the hub's models.

    Args:
        hub_columns: the model columns of the hub's models, ``hub_model_columns(hub)`` (one
            ``cat:model:<meta-dataset name or timm name>`` per model). Not a whole encoding: that always
            carries every table model column, whatever the hub.
        directory: where the priors are (default ``metadata/quicktune`` or ``$QTT_PRIORS_DIR``).
    """
    root = _priors_dir(directory)
    if not (root / WEIGHTS_FILE).is_file() or not (root / CONFIG_FILE).is_file():
        return None
    priors = Surrogate.load(root)
    hub_models = model_columns(hub_columns)
    known = [c for c in hub_models if c in priors.layout.model_columns]
    if not known:
        return None
    return priors.with_columns(list(hub_columns))


def describe_priors(hub_columns: Sequence[str], directory: Path | None = None) -> str:
    """One line for the user: which priors a search over these columns starts from, and why."""
    root = _priors_dir(directory)
    if not (root / WEIGHTS_FILE).is_file():
        return f"no meta-learned priors found in {root}: the predictors start untrained"
    priors = Surrogate.load(root)
    hub_models = model_columns(hub_columns)
    known = [c for c in hub_models if c in priors.layout.model_columns]
    unknown = [c for c in hub_models if c not in priors.layout.model_columns]
    if not known:
        return "meta-learned priors not used: they know none of the hub's models; the predictors start untrained"
    if not unknown:
        return f"meta-learned priors ({root.name}) cover all {len(known)} models of the hub"
    names = ", ".join(c[len("cat:model:") :] for c in unknown)
    return (
        f"meta-learned priors ({root.name}) know {len(known)} of the hub's {len(hub_models)} models; "
        f"the others ({names}) start without model-specific knowledge"
    )
