"""Where new pipelines come from: the ConfigSpace search space (`qtt tune`) or recorded configurations (replay).

Every optimizer draws new pipelines the same way, so that replaying a meta-dataset compares the search
strategies and nothing else. Both sources are deterministic functions of the seed and of the history, so a
resumed run draws exactly what the uninterrupted run would have drawn.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from ConfigSpace import ConfigurationSpace

from qtt_cli.optimizer.base import PipelineState, next_pipeline_id
from qtt_cli.space import sample_configs, to_pipeline_config
from qtt_cli.space.config import PipelineConfig

__all__ = ["ConfigSource", "RecordedConfigs", "derive_seed", "draw_new", "sampled_pool", "started_configs", "unstarted"]


@dataclass(frozen=True)
class RecordedConfigs:
    """Configurations that exist only as recorded learning curves (replaying a meta-dataset).

    A replayed pipeline is known by its config id and can be trained only as far as its curve was recorded
    (the meta-dataset's curves may stop early), so ``lengths`` doubles as the optimizers' epoch limits.
    """

    ids: tuple[str, ...]
    lengths: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.lengths):
            raise ValueError("one recorded length per config id")

    @property
    def limits(self) -> dict[str, int]:
        return dict(zip(self.ids, self.lengths, strict=True))

    def order(self, seed: int) -> list[str]:
        """The ids in a seeded random order: the order in which fresh configurations are drawn."""
        rng = np.random.default_rng(derive_seed(seed, "recorded-order"))
        return [self.ids[i] for i in rng.permutation(len(self.ids))]


ConfigSource = ConfigurationSpace | RecordedConfigs


def derive_seed(seed: int, key: str) -> int:
    """A 32-bit seed derived from the run seed and a key (e.g. a pipeline id), stable across Python runs."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def draw_new(
    source: ConfigSource, pipelines: Mapping[str, PipelineState], seed: int
) -> tuple[str, PipelineConfig | None] | None:
    """The id and configuration of the next fresh pipeline, or None when a recorded source is used up.

    From a space: the next ``pNNNN`` id, sampled with a seed derived from the run seed and that id. From
    recorded configurations: the first id of the seeded order that has not been started (config None).
    """
    if isinstance(source, RecordedConfigs):
        fresh = next((cid for cid in source.order(seed) if cid not in pipelines), None)
        return (fresh, None) if fresh is not None else None
    pid = next_pipeline_id(pipelines)
    source.seed(derive_seed(seed, pid))
    return pid, to_pipeline_config(source.sample_configuration())


def sampled_pool(space: ConfigurationSpace, size: int, seed: int) -> list[PipelineConfig]:
    """``size`` distinct configurations sampled once per run (same seed → same pool, also on resume)."""
    configs = sample_configs(space, size, seed=derive_seed(seed, "pool"))
    unique: dict[PipelineConfig, None] = dict.fromkeys(configs)
    return list(unique)


def started_configs(pipelines: Mapping[str, PipelineState]) -> set[PipelineConfig]:
    return {p.config for p in pipelines.values() if p.config is not None}


def unstarted(pool: Sequence[PipelineConfig], pipelines: Mapping[str, PipelineState]) -> list[PipelineConfig]:
    """Pool configurations that no pipeline of the run uses yet."""
    started = started_configs(pipelines)
    return [c for c in pool if c not in started]
