"""ONNX export with a parity check (PyTorch vs onnxruntime), shared by every family's task.

We use torch's maintained exporter (``dynamo=True``, onnxscript) with weights inside the ``.onnx`` file
(``external_data=False``) and opset :data:`OPSET` (18: the exporter's native opset, supported by onnxruntime >= 1.16),
with named dynamic batch axes.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .files import atomic_path

OPSET = 18


def onnx_session(path: str | Path, prefer_gpu: bool = True):
    """An onnxruntime session, on CUDA when onnxruntime-gpu and a GPU are usable, else CPU.

    Returns ``(session, provider)`` where provider is what the session actually uses (``get_providers()[0]``),
    not what is installed: onnxruntime-gpu lists CUDA even on machines where it falls back to the CPU.
    """
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    if prefer_gpu and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    return session, session.get_providers()[0]


def export_onnx(
    module,
    example_inputs: Sequence[Any],
    path: str | Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_batch: Sequence[str],
    dynamic_length: Sequence[str] = (),
) -> Path:
    """Export ``module`` to ``path`` (atomically) with dim 0 of the inputs named in ``dynamic_batch`` dynamic, and
    dim 1 of those in ``dynamic_length`` (token sequences), one shared length."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    params = list(__import__("inspect").signature(module.forward).parameters)
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length")

    def axes(name: str):
        dims = ({0: batch} if name in dynamic_batch else {}) | ({1: length} if name in dynamic_length else {})
        return dims or None

    dynamic = {p: axes(name) for p, name in zip(params, input_names)}
    with atomic_path(path) as tmp, contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        torch.onnx.export(module, tuple(example_inputs), tmp, input_names=list(input_names),
                          output_names=list(output_names), dynamo=True, external_data=False,
                          dynamic_shapes=dynamic, opset_version=OPSET, verbose=False)
    return path


def parity_check(module, path: str | Path, inputs: Sequence[Any], input_names: Sequence[str]) -> dict[str, Any]:
    """Run ``module`` and the ONNX file on the same inputs; return the max abs difference of each output."""
    import torch

    session, provider = onnx_session(path)
    with torch.no_grad():
        expected = module.eval()(*inputs)
    expected = expected if isinstance(expected, (tuple, list)) else (expected,)
    feeds = {name: x.cpu().numpy() for name, x in zip(input_names, inputs)}
    got = session.run(None, feeds)
    diffs = [float(np.max(np.abs(g - e.cpu().numpy()))) if g.size else 0.0 for g, e in zip(got, expected)]
    return {"max_abs_diff": max(diffs), "provider": provider, "outputs": [o.name for o in session.get_outputs()]}
