"""The Quick-Tune predictors: a deep-kernel GP for validation accuracy and an MLP for cost, meta-learnt on
learning curves of other datasets (``meta_train``) and shipped as priors (``load_priors``)."""

from .features import FeatureLayout, Scaler
from .meta_train import meta_train, union_columns
from .priors import PRIORS_DIR, describe_priors, load_priors
from .surrogate import DEFAULT_HYPER, Prediction, Surrogate, SurrogateFileError

__all__ = [
    "DEFAULT_HYPER",
    "PRIORS_DIR",
    "FeatureLayout",
    "Prediction",
    "Scaler",
    "Surrogate",
    "SurrogateFileError",
    "describe_priors",
    "load_priors",
    "meta_train",
    "union_columns",
]
