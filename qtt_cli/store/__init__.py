"""Where results live: the Parquet results store and the layout of a run directory."""

from qtt_cli.store.results import COLUMNS, HYPERPARAMETER_COLUMNS, RESULTS_FILE, ResultsStore, make_rows
from qtt_cli.store.rundir import RunDir, RunDirError

__all__ = [
    "COLUMNS",
    "HYPERPARAMETER_COLUMNS",
    "RESULTS_FILE",
    "ResultsStore",
    "RunDir",
    "RunDirError",
    "make_rows",
]
