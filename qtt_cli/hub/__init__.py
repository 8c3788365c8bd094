"""Model hubs (which pretrained timm models may be finetuned) and how their weights are obtained.

Importing this package is cheap: torch and timm are imported by the functions that need them.
"""

from ._models import Preprocessing, create_model, preprocessing_for, preprocessing_of_config
from ._registry import Hub, HubError, ModelSpec, builtin_hubs, describe_hub, load_hub, parse_hub_file
from ._weights import (
    Weights,
    WeightsUnavailableError,
    ensure_weights_available,
    find_checkpoint,
    parse_weights,
)

__all__ = [
    "Hub",
    "HubError",
    "ModelSpec",
    "Preprocessing",
    "Weights",
    "WeightsUnavailableError",
    "builtin_hubs",
    "create_model",
    "describe_hub",
    "ensure_weights_available",
    "find_checkpoint",
    "load_hub",
    "parse_hub_file",
    "parse_weights",
    "preprocessing_for",
    "preprocessing_of_config",
]
