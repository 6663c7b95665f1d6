"""What ``engine export`` writes for a sequential model.

* ``sequence_encoder.onnx``: ``item_seq`` ``int64 [batch, max_len]`` (left-padded) -> ``seq_repr`` ``float32
  [batch, D]``; with ``model.content`` the items' content input is a constant of the graph;
* ``item_embeddings.npy``: the item table the scores use (cold items: their content view);
* with ``model.content``, ``content_encoder.onnx`` (see :func:`engine.content.export_content_encoder`);
* the serving files batch scoring and the HTTP server read (:func:`write_serving_files`).
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["SequenceEncoderExport", "export_sequence_model", "write_serving_files"]


class SequenceEncoderExport(torch.nn.Module):
    """The exported graph: ``item_seq`` ``int64 [batch, max_len]`` -> ``seq_repr`` ``float32 [batch, D]``."""

    def __init__(self, encoder: torch.nn.Module, item_input: torch.Tensor | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.register_buffer("item_input", item_input)

    def forward(self, item_seq: torch.Tensor) -> torch.Tensor:
        if self.item_input is None:
            return self.encoder.encode(item_seq)
        return self.encoder.encode(item_seq, item_input=self.item_input)


def export_sequence_model(task, model, directory: str) -> dict[str, Any]:
    """``sequence_encoder.onnx`` (``item_seq`` ``int64 [batch, max_len]`` left-padded -> ``seq_repr``
    ``float32 [batch, D]``) and ``item_embeddings.npy`` (``float32 [num_items + 1, D]``, row 0 padding): the
    scores of a batch are ``seq_repr @ item_embeddings.T``."""
    import copy
    from pathlib import Path

    import numpy as np

    from engine.export import export_onnx, parity_check

    m, d = task.model_cfg, task.data
    with torch.no_grad():
        tower = task._tower(model)
    item_input = None if tower.item_input is None else tower.item_input.detach().float().cpu()
    module = SequenceEncoderExport(copy.deepcopy(model.encoder).cpu(), item_input).eval()  # model stays put
    out = Path(directory)
    path = out / "sequence_encoder.onnx"
    example = d.padded_history("test", m.max_len, torch.arange(min(4, d.num_users)))
    export_onnx(module, (example,), path, ["item_seq"], ["seq_repr"], dynamic_batch=["item_seq"])
    table = tower.serving_table.detach().float().cpu().numpy()
    items_path = out / "item_embeddings.npy"
    np.save(items_path, table)
    g = torch.Generator().manual_seed(0)
    probe = d.padded_history("test", m.max_len, torch.randperm(d.num_users, generator=g)[:257])
    report = parity_check(module, path, (probe,), ["item_seq"])
    serving = write_serving_files(task, out)
    result = {"path": str(path), "item_embeddings": str(items_path), "num_items": d.num_items,
              "max_len": m.max_len, "dim": int(table.shape[1]),
              "inputs": {"item_seq": "int64[batch, max_len], left-padded with 0"},
              "outputs": {"seq_repr": "float32[batch, dim]"}, **report, "serving": serving}
    if task.content is not None:
        from engine.content import export_content_encoder

        result["content_encoder"] = export_content_encoder(model.content, directory)
    return result


def write_serving_files(task, out) -> dict[str, Any]:
    """Beside the export, what batch scoring and the HTTP server need (read by ``engine_serving``):
    ``users.parquet`` (column ``user``: original id of row ``u``), ``items.parquet`` (column ``item``: original
    id of score column ``j``; null for column 0, the padding id), ``histories.npy`` (``int64 [num_users,
    max_len]``: each user's whole sequence, the ``max_len`` most recent items, left-padded: the input that
    predicts the user's next item) and ``seen_indptr.npy`` / ``seen_items.npy`` (CSR of the items of each whole
    sequence, never recommended)."""
    import numpy as np
    import polars as pl

    from .data import left_pad

    d = task.data
    users = d.user_ids if d.user_ids is not None else np.arange(d.num_users)
    pl.DataFrame([pl.Series("user", users)]).write_parquet(out / "users.parquet")
    originals = (list(range(1, d.num_items + 1)) if d.item_ids is None
                 else pl.Series(d.item_ids).to_list())
    pl.DataFrame([pl.Series("item", [None, *originals])]).write_parquet(out / "items.parquet")
    np.save(out / "histories.npy", left_pad(d.items, d.indptr[:-1], d.indptr[1:], task.model_cfg.max_len).numpy())
    np.save(out / "seen_indptr.npy", d.indptr.numpy().astype(np.int64))
    np.save(out / "seen_items.npy", d.items.numpy().astype(np.int64))
    return {"family": "sequence", "users": "users.parquet", "items": "items.parquet",
            "histories": "histories.npy", "seen_indptr": "seen_indptr.npy", "seen_items": "seen_items.npy"}
