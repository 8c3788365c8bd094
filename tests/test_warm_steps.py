"""A pipeline continued from the run a worker kept in memory trains exactly as one restored from its checkpoint.

``warm.py`` skips the model build and checkpoint read when a pipeline's next step lands on the worker that
trained its previous one. These tests continue the same pipelines warm and cold (``warm=False``: every
continuation restored from disk) and compare accuracies, losses, weights and optimizer state bit for bit,
and check that a stale copy (checkpoint replaced, pipeline moved, step cut) is never used.
"""

from __future__ import annotations

import pytest
import torch
from worker_helpers import MODEL, assert_same_state, make_worker

from qtt_cli.space.config import PipelineConfig
from qtt_cli.worker import epoch_path


def cfg(**kwargs) -> PipelineConfig:
    return PipelineConfig(**{"model": MODEL, "batch_size": 32, **kwargs})


# every source of state a continuation must carry: mixup/cutmix on an odd last batch, dropout, smoothing,
# RNG-driven augmentation, warm-up then cosine, clipping; and a plateau schedule with L2-SP (a regulariser
# with its own reference weights) and StochNorm (extra buffers)
CONFIGS = {
    "mixup-cosine": cfg(batch_size=27, opt="adamw", opt_betas="[0.9, 0.99]", weight_decay=0.05, warmup_epochs=1,
                        warmup_lr=1e-4, lr=3e-3, drop=0.3, smoothing=0.1, mixup=0.8, cutmix=1.0, mixup_prob=0.8,
                        data_augmentation="trivial_augment", clip_grad=1.0),
    "plateau-l2sp-stochnorm": cfg(opt="momentum", momentum=0.9, opt_betas=None, sched="plateau", patience_epochs=1,
                                  lr=0.02, sp_reg=0.01, stoch_norm=True),
}


def metrics(result):
    return [(e.epoch, e.val_top1, e.val_loss, e.train_loss) for e in result.epochs]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_warm_continuation_equals_restoring_from_the_checkpoint(name, digits_cache, tmp_path, deterministic):
    config = CONFIGS[name]
    warm = make_worker(digits_cache, tmp_path / "warm")
    cold = make_worker(digits_cache, tmp_path / "cold", warm=False)
    for start in range(3):
        w, c = warm.step("p1", config, start, start + 1), cold.step("p1", config, start, start + 1)
        assert w.status == c.status == "ok", (w, c)
        assert metrics(w) == metrics(c)
        assert_same_state(tmp_path / "warm", tmp_path / "cold", "p1", start + 1)
    assert warm.warm.hits == 2 and cold.warm.hits == 0  # epochs 2 and 3 continued from memory


def test_a_stale_copy_is_never_used(digits_cache, tmp_path):
    config = CONFIGS["mixup-cosine"]
    root = tmp_path / "w"
    worker = make_worker(digits_cache, root)
    assert worker.step("p1", config, 0, 1).status == "ok"

    # another worker continued p1 to epoch 2 and, after failing to report, the tuner retries epoch 1 -> 2 here:
    # epoch 1's checkpoint was replaced by another writer (here: rewritten), so the copy is not trusted
    path = epoch_path(root, "p1", 1)
    state = torch.load(path, map_location="cpu", weights_only=True)
    torch.save(state, path)
    assert worker.step("p1", config, 1, 2).status == "ok" and worker.warm.hits == 0

    # another pipeline in between releases the kept run: p1 is restored from disk afterwards, then warm again
    assert worker.step("p2", config, 0, 1).status == "ok"
    assert worker.step("p1", config, 2, 3).status == "ok" and worker.warm.hits == 0
    assert worker.step("p1", config, 3, 4).status == "ok" and worker.warm.hits == 1

    # a step from another epoch than the one kept (the pipeline trained elsewhere since) does not use it
    assert worker.step("p2", config, 1, 2).status == "ok" and worker.warm.hits == 1
    assert worker.step("p2", config, 3, 4).status == "failed"  # restored from disk: no checkpoint of epoch 3
    assert worker.warm.hits == 1


def test_a_step_cut_at_its_deadline_keeps_nothing(digits_cache, tmp_path):
    config = CONFIGS["mixup-cosine"]
    worker = make_worker(digits_cache, tmp_path / "w")
    assert worker.step("p1", config, 0, 1).status == "ok"
    assert worker.step("p1", config, 1, 2, deadline=0.0).status == "interrupted"
    assert worker.warm.hits == 1  # the cut step took the kept run ...
    assert worker.step("p1", config, 1, 2).status == "ok"
    assert worker.warm.hits == 1  # ... and kept nothing: its redo restored epoch 1 from disk


class _Conn:
    def __init__(self) -> None:
        self.sent: list = []

    def send(self, message) -> None:
        self.sent.append(message)


def test_a_step_goes_to_the_free_worker_that_keeps_its_pipeline():
    """The local executor sends a pipeline's step to the worker that trained its previous step (so that it
    continues from memory), and to the first free worker when none did."""
    from qtt_cli.execution import StepTask, WorkerSpec
    from qtt_cli.execution.local import LocalProcessExecutor, Slot, _Worker

    executor = LocalProcessExecutor(WorkerSpec("run", "random", 3, 32, 0), [Slot("a"), Slot("b")])
    a, b = (_Worker(slot, process=None, conn=_Conn()) for slot in executor.slots)
    a.ready = b.ready = True
    executor._workers = [a, b]
    config = cfg()
    executor.submit(StepTask("p1", config, 0, 1, None))
    executor.submit(StepTask("p2", config, 0, 1, None))
    assert (a.task.pipeline_id, b.task.pipeline_id) == ("p1", "p2")
    a.task = b.task = None  # both finished
    executor.submit(StepTask("p2", config, 1, 2, None))
    assert b.task is not None and b.task.pipeline_id == "p2" and a.task is None
    executor.submit(StepTask("p3", config, 0, 1, None))
    assert a.task.pipeline_id == "p3" and [m[1]["pipeline_id"] for m in a.conn.sent] == ["p1", "p3"]
