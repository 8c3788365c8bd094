"""ONNX exports run in onnxruntime at any batch size, as their dynamic batch dimension promises (issue 11).

Every model of both built-in hubs is covered. The tiny hub runs in the suite (32 px, as in the demo). The
quicktune hub's 24 models are exported at the input size a run gives them by default (their pretrained size,
384-600 px for most, up to 306 M parameters): minutes of CPU and tens of GB of memory, too much for the 2-core
CI machine, so those are opt-in: ``QTT_TEST_QUICKTUNE_HUB=1 pytest tests/test_onnx_export.py`` (the README says
where and when they last ran).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from qtt_cli.export.export import export_onnx
from qtt_cli.hub import Weights, create_model, load_hub, preprocessing_for

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is in the dev extra")
pytest.importorskip("onnxscript", reason="onnxscript is in the dev extra")

pytestmark = pytest.mark.slow

_OPT_IN = "QTT_TEST_QUICKTUNE_HUB"
_QUICKTUNE_HUB = pytest.mark.skipif(os.environ.get(_OPT_IN) != "1", reason=f"opt-in: {_OPT_IN}=1")


def _check_onnx_at_batch_1_and_8(model: torch.nn.Module, side: int, path) -> None:
    export_onnx(model, side, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(0)
    for batch in (1, 8):
        images = torch.randn(batch, 3, side, side, generator=generator)
        logits = session.run(None, {"images": images.numpy()})[0]
        with torch.inference_mode():
            expected = model(images).numpy()
        assert logits.shape == (batch, 10)
        # float32 kernels of the two runtimes differ in summation order: tolerance relative to the logits' scale
        np.testing.assert_allclose(logits, expected, rtol=1e-3, atol=1e-3 * max(1.0, float(np.abs(expected).max())))


@pytest.mark.parametrize("name", [spec.name for spec in load_hub("tiny").models])
def test_onnx_export_of_every_tiny_hub_model_runs_at_batch_1_and_8(name, tmp_path, capsys):
    _check_onnx_at_batch_1_and_8(create_model(name, 10, Weights("random")).eval(), 32, tmp_path / "model.onnx")
    assert capsys.readouterr().out == ""  # stdout is for qtt's own lines: no exporter progress in a CI log


@_QUICKTUNE_HUB
@pytest.mark.parametrize("name", [spec.name for spec in load_hub("quicktune").models])
def test_onnx_export_of_every_quicktune_hub_model_runs_at_batch_1_and_8(name, tmp_path):
    torch.manual_seed(0)
    model = create_model(name, 10, Weights("random")).eval()
    side = preprocessing_for(model, None).input_size
    _check_onnx_at_batch_1_and_8(model, side, tmp_path / "model.onnx")


def test_a_model_torch_export_cannot_take_falls_back_to_the_torchscript_exporter(tmp_path):
    """A two-block BEiT: torch.export fails on its attention reshape with a symbolic batch (as for the quicktune
    hub's BEiTs); the TorchScript exporter's graph runs at batch 1 and 8."""
    import timm

    model = timm.create_model("beit_base_patch16_384", img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                              num_classes=10).eval()  # fmt: skip
    path = tmp_path / "model.onnx"
    assert export_onnx(model, 32, path) == "torchscript"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 8):
        assert session.run(None, {"images": torch.randn(batch, 3, 32, 32).numpy()})[0].shape == (batch, 10)


class _FixedBatch(torch.nn.Module):
    """Flattens with the batch size of the trace baked in: a graph that declares a dynamic batch and has none."""

    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(3 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.reshape(2, -1))


def test_an_export_that_cannot_run_other_batches_is_refused_and_removed(tmp_path):
    from qtt_cli.export.trained import ExportError

    path = tmp_path / "model.onnx"
    with pytest.raises(ExportError, match="batch 1"):
        export_onnx(_FixedBatch().eval(), 8, path)
    assert not path.exists()
