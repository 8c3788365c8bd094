"""Reports over a run's results store: the leaderboard."""

from qtt_cli.report.leaderboard import KEY_HYPERPARAMETERS, leaderboard

__all__ = ["KEY_HYPERPARAMETERS", "leaderboard"]
