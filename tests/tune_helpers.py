"""What the tests of whole `qtt tune` runs share: a one-model hub and a space without CPU-heavy corners.

``cheap-space.yaml`` leaves out batches of 2-8, DELTA's and Co-Tuning's passes over the training set, HVP's
extra views and SPG, so that one real step takes about a second whatever configuration is drawn, and tests
of the run's bookkeeping do not depend on which configuration the seed picks.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
CHEAP_SPACE = HERE / "cheap-space.yaml"
ONE_MODEL_HUB = HERE / "one-model-hub.yaml"


def tune_args(dataset: Path, out: Path, hub: Path = ONE_MODEL_HUB, *extra: str) -> list[str]:
    """`qtt tune` arguments for a short random search at 32 px with random weights (no report)."""
    return ["tune", str(dataset), "--out", str(out), "--hub", str(hub), "--weights", "random", "--quiet",
            "--max-input-size", "32", "--max-epochs", "3", "--budget", "10m", "--optimizer", "random",
            "--space", str(CHEAP_SPACE), "--no-report", *extra]
