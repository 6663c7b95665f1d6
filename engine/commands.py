"""Bodies of ``engine evaluate`` and ``engine export``: rebuild a pipeline's task and model, load weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import load_pipeline
from .run import checkpoint_dir, prepare, write_json_atomic
from .train import load_checkpoint


def _load(pipeline: str, overrides, checkpoint: str | None):
    cfg = load_pipeline(pipeline, overrides)
    task, model = prepare(cfg)
    path = Path(checkpoint) if checkpoint else checkpoint_dir(cfg) / "best.pt"
    state = load_checkpoint(path, remedy="train it again with `engine run`, or name another with --checkpoint")
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        from .errors import CheckpointError

        raise CheckpointError(f"{path}: does not fit this pipeline's model ({str(exc).splitlines()[0]})") from None
    return cfg, task, model.eval()


def evaluate_checkpoint(pipeline: str, overrides, checkpoint: str | None, split: str,
                        metrics_out: str | None) -> dict[str, float]:
    _, task, model = _load(pipeline, overrides, checkpoint)
    metrics = task.evaluate(model, split)
    if metrics_out:
        write_json_atomic(metrics_out, metrics)
    return metrics


def export_checkpoint(pipeline: str, overrides, checkpoint: str | None, output: str) -> dict[str, Any]:
    _, task, model = _load(pipeline, overrides, checkpoint)
    report = task.export_onnx(model, output)
    write_json_atomic(Path(output) / "export.json", report)
    return report
