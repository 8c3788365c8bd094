"""A stand-in for ``qtt_cli.surrogate.Surrogate`` whose predictions the test dictates.

QuickTune's decisions (which candidate, which refit) are tested against it, so that a test can say "this
pipeline has the highest EI per second" without training a GP.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class FakePrediction:
    mean: np.ndarray
    std: np.ndarray
    cost_s: np.ndarray


@dataclass
class FakeSurrogate:
    """Mean by config id (``default_mean`` otherwise), constant std, cost = seconds per epoch × extra epochs.

    ``log`` (shared by copies) records ``("copy",)`` and ``("fit", steps, observations)`` calls.
    """

    means: Mapping[str, float] = field(default_factory=dict)
    epoch_costs: Mapping[str, float] = field(default_factory=dict)
    default_mean: float = 0.0
    std: float = 1.0
    log: list = field(default_factory=list)

    def copy(self) -> FakeSurrogate:
        self.log.append(("copy",))
        return FakeSurrogate(self.means, self.epoch_costs, self.default_mean, self.std, self.log)

    def fit(self, curvesets: Sequence, *, steps: int, lr: float = 1e-3, seed: int = 0, noise_lr=None) -> dict:
        self.log.append(("fit", steps, sum(cs.num_observations for cs in curvesets)))
        return {"steps": steps}

    def predict(self, curveset, rows, target_epochs, from_epochs) -> FakePrediction:
        ids = [curveset.config_ids[int(r)] for r in rows]
        extra = np.asarray(target_epochs) - np.asarray(from_epochs)
        return FakePrediction(
            mean=np.array([self.means.get(i, self.default_mean) for i in ids], dtype=float),
            std=np.full(len(ids), self.std),
            cost_s=np.array([self.epoch_costs.get(i, 1.0) for i in ids]) * extra,
        )

    def fits(self) -> list[tuple]:
        return [entry for entry in self.log if entry[0] == "fit"]
