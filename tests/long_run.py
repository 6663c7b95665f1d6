"""A graph pipeline long enough (400 epochs) to be stopped part-way by a test, tracked to its own sqlite store."""

from __future__ import annotations

import pathlib


def write_long_pipeline(tmp_path: pathlib.Path) -> tuple[pathlib.Path, str, pathlib.Path]:
    """``(pipeline file, MLflow tracking URI, checkpoint folder)`` under ``tmp_path``."""
    ck = tmp_path / "ck"
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(
        "name: term\ntask: graph_cf\nseed: 1\n"
        f"data: {{source: synthetic_cf, path: {tmp_path / 'data'}, num_users: 400, num_items: 300, per_user: 20}}\n"
        "model: {encoder: {name: lightgcn, embedding_dim: 16, num_layers: 2}, loss: bpr}\n"
        f"train: {{epochs: 400, batch_size: 64, lr: 0.01, patience: null, checkpoint_dir: {ck}}}\n"
        f"tracking: {{uri: '{uri}'}}\n"
    )
    return pipeline, uri, ck
