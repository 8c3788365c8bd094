"""Getting models out of a run: export the best one, predict with an export, score kept weights on a test folder."""

from qtt_cli.export.export import FORMATS, export_best, load_export, predict, score_on_folder
from qtt_cli.export.trained import ExportError, TrainedModel, load_pipeline, ranked_with_weights

__all__ = [
    "FORMATS",
    "ExportError",
    "TrainedModel",
    "export_best",
    "load_export",
    "load_pipeline",
    "predict",
    "ranked_with_weights",
    "score_on_folder",
]
