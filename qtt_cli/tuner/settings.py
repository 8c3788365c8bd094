"""Everything that defines a `qtt tune` run, as one frozen value saved in run.json."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OPTIMIZERS = ("quicktune", "random", "asha")

# Settings that may change when a run is resumed; all others must match the saved run.
RESUMABLE_CHANGES = ("budget_s", "max_steps", "device", "num_workers", "keep_best", "max_checkpoints",
                     "workers", "devices", "executor", "address", "storage")
EXECUTORS = ("auto", "inprocess", "local", "ray")


@dataclass(frozen=True)
class TuneSettings:
    """Arguments of :func:`qtt_cli.tuner.tune`.

    Args:
        dataset: image folder (``train/val/test`` or one folder per class).
        out: run directory; everything the run writes stays inside it.
        budget_s: seconds of search (dataset preparation is not counted).
        hub: ``auto`` (``quicktune`` with a GPU, ``tiny`` without), a built-in hub name or a YAML file.
        weights: ``pretrained``, ``random`` or a folder of local checkpoint files.
        optimizer: which optimizer chooses the steps.
        delta_t: epochs per freeze-thaw step.
        max_epochs: epochs at which a pipeline is finished; the LR schedule spans them.
        max_steps: stop after this many steps in total (over all sessions of the run).
        max_input_size: cap on the input side (pixels), for CPU runs.
        space_file: YAML file restricting/extending the search space.
        keep_best: how many pipelines keep their best weights on disk (plus those still in training).
        max_checkpoints: how many pipelines in training keep the checkpoint they would be continued from.
            Beyond it, the ones with the lowest best accuracy give theirs up and are stopped (freeze-thaw
            could only continue them from scratch). A checkpoint holds weights and optimizer state: about
            3x the model size, gigabytes for the hub's largest models.
        workers: steps trained at once (``qtt_cli.execution``): 1 = in the tuner's process, as always; N > 1 =
            N local worker processes splitting the CPU cores (or N Ray workers).
        devices: GPU indices (``"0,1"``) or ``"auto"`` (every visible GPU): one worker process per GPU.
        executor: ``auto`` (in-process for one worker, local processes otherwise), ``inprocess``, ``local``
            or ``ray``.
        address: the Ray cluster to join (``auto``, ``HOST:PORT``); None starts a local Ray instance.
        storage: the run directory as the Ray workers see it (a shared file system); default: ``out``.
        priors: a directory written by ``qtt meta-train`` (e.g. trained on the meta-dataset plus the team's
            finished runs) that Quick-Tune starts from instead of the shipped priors.
    """

    dataset: Path
    out: Path
    budget_s: float
    hub: str = "auto"
    weights: str = "pretrained"
    optimizer: str = "random"
    delta_t: int = 1
    max_epochs: int = 50
    seed: int = 0
    max_steps: int | None = None
    val_fraction: float = 0.2
    max_input_size: int | None = None
    space_file: Path | None = None
    device: str | None = None
    num_workers: int = 0
    keep_best: int = 3
    max_checkpoints: int = 32
    workers: int = 1
    devices: str | None = None
    executor: str = "auto"
    address: str | None = None
    storage: str | None = None
    priors: Path | None = None

    def __post_init__(self) -> None:
        problems = []
        if not math.isfinite(self.budget_s) or self.budget_s <= 0:
            problems.append("budget must be a positive, finite number of seconds")
        if self.delta_t < 1:
            problems.append("--delta-t must be >= 1")
        if self.max_epochs < 1:
            problems.append("--max-epochs must be >= 1")
        if self.max_steps is not None and self.max_steps < 1:
            problems.append("--max-steps must be >= 1")
        if not 0.0 < self.val_fraction < 1.0:
            problems.append("--val-fraction must be between 0 and 1")
        if self.max_input_size is not None and self.max_input_size < 16:
            problems.append("--max-input-size must be >= 16")
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"--optimizer must be one of {', '.join(OPTIMIZERS)}")
        if self.keep_best < 1:
            problems.append("--keep-best must be >= 1")
        if self.max_checkpoints < 1:
            problems.append("--max-checkpoints must be >= 1")
        if self.workers < 1:
            problems.append("--workers must be >= 1")
        if self.executor not in EXECUTORS:
            problems.append(f"--executor must be one of {', '.join(EXECUTORS)}")
        if self.devices is not None and self.devices != "auto" and not all(
            d.strip().isdigit() for d in self.devices.split(",")
        ):
            problems.append("--devices must be 'auto' or GPU indices such as 0,1")
        if self.executor == "inprocess" and (self.workers > 1 or self.devices):
            problems.append("--executor inprocess runs one step at a time: drop --workers/--devices")
        if (self.address or self.storage) and self.executor != "ray":
            problems.append("--address and --storage are options of --executor ray")
        if problems:
            raise ValueError("; ".join(problems))

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for key in ("dataset", "out", "space_file", "priors"):
            if data[key] is not None:
                data[key] = str(Path(data[key]).resolve())
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], **overrides: Any) -> TuneSettings:
        data = {**data, **{k: v for k, v in overrides.items() if v is not None}}
        for key in ("dataset", "out", "space_file", "priors"):
            if data.get(key) is not None:
                data[key] = Path(data[key])
        return cls(**data)

    def differences(self, saved: dict[str, Any]) -> list[str]:
        """Settings that differ from a saved run and may not change on resume."""
        mine = self.to_json()
        return [
            f"{key}: run has {saved.get(key)!r}, now {mine[key]!r}"
            for key in mine
            if key not in RESUMABLE_CHANGES and key != "out" and saved.get(key) != mine[key]
        ]
