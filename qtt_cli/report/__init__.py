"""Reports over a run's results store: the leaderboard and the HTML run report (`qtt report`)."""

from qtt_cli.report.leaderboard import KEY_HYPERPARAMETERS, leaderboard

__all__ = ["KEY_HYPERPARAMETERS", "leaderboard", "write_report"]


def write_report(run_dir, out=None):
    """See :func:`qtt_cli.report.html_report.write_report` (imported lazily: matplotlib is only loaded when a
    report is written, not by `qtt leaderboard`)."""
    from qtt_cli.report.html_report import write_report as _write

    return _write(run_dir, out)
