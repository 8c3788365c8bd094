"""Learning-curve data for the predictors: the Quick-Tune meta-dataset format and qtt run directories.

Both are read into :class:`CurveSet` objects (one per dataset) with the meta-dataset table's encoding, so
that the predictors see a user's run exactly as they saw the meta-dataset.
"""

from .curveset import META_FEATURE_NAMES, MODEL_PREFIX, CurveSet, build_curveset, hub_model_columns, model_columns
from .degenerate import degenerate_rows, without_degenerate
from .quicktune_format import MetaDatasetError, load_meta_dataset, write_meta_dataset
from .runs import load_run

__all__ = [
    "META_FEATURE_NAMES",
    "MODEL_PREFIX",
    "CurveSet",
    "MetaDatasetError",
    "build_curveset",
    "degenerate_rows",
    "hub_model_columns",
    "load_meta_dataset",
    "load_run",
    "model_columns",
    "without_degenerate",
    "write_meta_dataset",
]
