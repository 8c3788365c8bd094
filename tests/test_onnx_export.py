"""ONNX exports run in onnxruntime at any batch size, as their dynamic batch dimension promises (issue 11)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qtt_cli.export.export import export_onnx
from qtt_cli.hub import Weights, create_model, load_hub

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is in the dev extra")
pytest.importorskip("onnxscript", reason="onnxscript is in the dev extra")

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", [spec.name for spec in load_hub("tiny").models])
def test_onnx_export_of_every_tiny_hub_model_runs_at_batch_1_and_8(name, tmp_path):
    model = create_model(name, 10, Weights("random")).eval()
    path = tmp_path / "model.onnx"
    export_onnx(model, 32, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 8):
        images = torch.randn(batch, 3, 32, 32)
        logits = session.run(None, {"images": images.numpy()})[0]
        with torch.inference_mode():
            expected = model(images).numpy()
        assert logits.shape == (batch, 10)
        np.testing.assert_allclose(logits, expected, atol=1e-3, rtol=1e-3)
