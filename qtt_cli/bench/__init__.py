"""Replay benchmark: optimizers compared on recorded learning curves instead of training (`qtt bench`)."""

from qtt_cli.bench.metrics import normalized_regret, paired_differences, regret_range, summarize
from qtt_cli.bench.replay import Replay, ReplayError, Trace, recorded_configs, replay
from qtt_cli.bench.runner import OPTIMIZERS, BenchResult, BenchSettings, run_bench

__all__ = [
    "OPTIMIZERS",
    "BenchResult",
    "BenchSettings",
    "Replay",
    "ReplayError",
    "Trace",
    "normalized_regret",
    "paired_differences",
    "recorded_configs",
    "regret_range",
    "replay",
    "run_bench",
    "summarize",
]
