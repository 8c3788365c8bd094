"""The tuner's bookkeeping between steps: which optimizer a run gets, which checkpoints stay on disk."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from qtt_cli.optimizer import PipelineState, RandomSearch, SuccessiveHalving
from qtt_cli.space import build_space
from qtt_cli.space.config import PipelineConfig
from qtt_cli.tuner.settings import TuneSettings
from qtt_cli.tuner.tuner import _mark_stopped, _retain_checkpoints, make_optimizer


def settings(tmp_path: Path, **kwargs) -> TuneSettings:
    return TuneSettings(dataset=tmp_path, out=tmp_path / "run", budget_s=60, **kwargs)


def state(pid: str, curve, status="ok") -> PipelineState:
    return PipelineState(pid, PipelineConfig(model="dla46x_c"), tuple(curve), tuple(1.0 for _ in curve), status)


class RecordingWorker:
    """The worker's checkpoint calls, on a folder of empty ``<pid>/epoch-N.pt`` files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.calls: list[tuple] = []

    def checkpoint_path(self, pid: str, epoch: int) -> Path:
        return self.root / pid / f"epoch-{epoch}.pt"

    def prune_checkpoints(self, pid: str, keep_epoch: int | None) -> None:
        self.calls.append(("prune", pid, keep_epoch))

    def remove_pipeline(self, pid: str, keep_best: bool) -> None:
        self.calls.append(("remove", pid, keep_best))


def test_asha_is_available_to_qtt_tune(tmp_path):
    space = build_space(["dla46x_c", "mobilevit_xs"])
    opt = make_optimizer(settings(tmp_path, optimizer="asha", max_epochs=9), space)
    assert isinstance(opt, SuccessiveHalving) and opt.rungs == [1, 3, 9]
    first = opt.ask({})
    assert (first.pipeline_id, first.start_epoch, first.end_epoch) == ("p0001", 0, 1)
    assert first.config.model in {"dla46x_c", "mobilevit_xs"}


def test_only_the_best_max_checkpoints_pipelines_in_training_keep_a_checkpoint(tmp_path):
    pipelines = {
        "a": state("a", [90.0]),
        "b": state("b", [80.0]),
        "c": state("c", [70.0]),
        "d": state("d", [95.0, 96.0, 97.0]),  # finished (max_epochs 3): keeps only its best weights (top 1)
        "e": state("e", [99.0], "failed"),
    }
    worker = RecordingWorker(tmp_path)
    run = SimpleNamespace(
        settings=settings(tmp_path, keep_best=1, max_checkpoints=2),
        optimizer=RandomSearch(build_space(["dla46x_c"]), max_epochs=3, delta_t=1),
        worker=worker,
    )
    _retain_checkpoints(run, pipelines)
    assert sorted(worker.calls) == [
        ("prune", "a", 1), ("prune", "b", 1), ("prune", "e", None), ("remove", "c", False), ("remove", "d", False),
    ]  # fmt: skip


def test_pipelines_whose_checkpoint_is_gone_are_stopped_and_never_continued(tmp_path):
    worker = RecordingWorker(tmp_path)
    worker.checkpoint_path("a", 1).parent.mkdir()
    worker.checkpoint_path("a", 1).touch()
    pipelines = {"a": state("a", [50.0]), "b": state("b", [60.0]), "f": state("f", [10.0], "diverged")}
    marked = _mark_stopped(SimpleNamespace(worker=worker), pipelines)
    assert {pid: p.status for pid, p in marked.items()} == {"a": "ok", "b": "stopped", "f": "diverged"}
    opt = RandomSearch(build_space(["dla46x_c"]), max_epochs=3, delta_t=1)
    assert opt.may_continue(marked) == {"a"}
