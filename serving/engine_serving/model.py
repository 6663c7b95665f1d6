"""An exported model, loaded for scoring: the ONNX session, the id maps and each user's seen items.

A model directory is what ``engine export`` writes: ``export.json`` (whose ``serving`` block names the files below)
and, by family,

* ``graph``: ``model.onnx`` (``user int64 [b]`` -> ``scores float32 [b, num_items]``);
* ``sequence``: ``sequence_encoder.onnx`` (``item_seq int64 [b, max_len]`` -> ``seq_repr float32 [b, d]``),
  ``item_embeddings.npy`` (``[num_items + 1, d]``, row 0 padding) and ``histories.npy`` (each user's input);

plus ``users.parquet`` / ``items.parquet`` (internal index -> original id; a null item is never recommended) and
``seen_indptr.npy`` / ``seen_items.npy`` (CSR of the score columns each user has seen). Arrays are memory-mapped, so
loading costs the id maps, not the histories.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from engine.errors import DataError

from .errors import ModelError
from .topk import masked_topk

__all__ = ["ExportedModel", "load_model"]

log = logging.getLogger("engine.serving")

#: scores per sub-batch by default (32 MiB of float32: ~200 users of a 40k-item catalogue)
BATCH_FLOATS = 1 << 23


class ExportedModel:
    """Scores users of an exported model with onnxruntime. Thread-safe for scoring (onnxruntime's ``run`` is)."""

    def __init__(self, directory: str | Path, prefer_gpu: bool = True, threads: int | None = None) -> None:
        from engine.export import onnx_session

        self.directory = Path(directory)
        meta_path = self.directory / "export.json"
        if not self.directory.is_dir():
            raise ModelError(f"{self.directory}: not a directory; --model takes the directory `engine export -o DIR` "
                             "wrote, an MLflow run id or a runs:/<run_id>/<path> URI")
        if not meta_path.is_file():
            raise ModelError(f"{self.directory}: not an engine export (no export.json); write one with "
                             "`engine export PIPELINE -o DIR`")
        try:
            self.meta: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"{meta_path}: unreadable ({exc})") from None
        serving = self.meta.get("serving")
        if not isinstance(serving, dict) or serving.get("family") not in ("graph", "sequence"):
            raise ModelError(f"{self.directory}: this export has no serving files (export.json has no `serving` "
                             "block); export it again with this version of engine")
        self.family: str = serving["family"]
        files = {k: self.directory / v for k, v in serving.items() if k != "family"}
        onnx_name = "model.onnx" if self.family == "graph" else "sequence_encoder.onnx"
        files["onnx"] = self.directory / onnx_name
        if self.family == "sequence":
            files["item_embeddings"] = self.directory / "item_embeddings.npy"
        missing = [p.name for p in files.values() if not p.is_file()]
        if missing:
            raise ModelError(f"{self.directory}: incomplete export, missing {', '.join(sorted(missing))}")
        self.user_ids: pl.Series = pl.read_parquet(files["users"])["user"]
        self.item_ids: pl.Series = pl.read_parquet(files["items"])["item"]
        self.num_users = self.user_ids.len()
        self.seen_indptr = np.load(files["seen_indptr"], mmap_mode="r")
        self.seen_items = np.load(files["seen_items"], mmap_mode="r")
        self.invalid_columns = np.flatnonzero(self.item_ids.is_null().to_numpy())
        self._index = pl.DataFrame({"user": self.user_ids, "__index": np.arange(self.num_users, dtype=np.int64)})
        if self.family == "sequence":
            self.histories = np.load(files["histories"], mmap_mode="r")
            self.item_table = np.ascontiguousarray(np.load(files["item_embeddings"]), dtype=np.float32)
            self.item_index = {v: i for i, v in enumerate(self.item_ids.to_list()) if v is not None}
        self.session, self.provider = onnx_session(files["onnx"], prefer_gpu=prefer_gpu)
        if threads:
            self._set_threads(files["onnx"], threads, prefer_gpu)
        self.num_items = self.item_ids.len()  # score columns
        self.fingerprint = {"export.json": meta_path.read_text(encoding="utf-8"),
                            "onnx_bytes": files["onnx"].stat().st_size}
        log.info("model %s (%s): %d users, %d score columns, onnxruntime provider %s", self.directory,
                 self.family, self.num_users, self.num_items, self.provider)

    def _set_threads(self, path: Path, threads: int, prefer_gpu: bool) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = options.inter_op_num_threads = threads
        providers = [p for p in self.session.get_providers() if p in ("CUDAExecutionProvider", "CPUExecutionProvider")]
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        self.provider = self.session.get_providers()[0]

    # -- ids ----------------------------------------------------------------------------------------------------------
    def user_index(self, users: pl.Series) -> np.ndarray:
        """Internal indices of ``users`` (original ids), in order. Raises DataError on nulls or unknown ids."""
        if users.null_count():
            raise DataError(f"column 'user' has {users.null_count()} empty value(s)")
        try:
            users = users.cast(self.user_ids.dtype, strict=True)
        except Exception:  # noqa: BLE001 - polars raises several types
            raise DataError(f"column 'user' has type {users.dtype}, but the model's user ids are "
                            f"{self.user_ids.dtype}") from None
        frame = pl.DataFrame({"user": users}).with_row_index("__row")
        joined = frame.join(self._index, on="user", how="left").sort("__row")
        unknown = joined.filter(pl.col("__index").is_null())["user"]
        if unknown.len():
            shown = ", ".join(map(str, unknown.unique(maintain_order=True).head(5).to_list()))
            raise DataError(f"{unknown.n_unique()} user id(s) unknown to the model (e.g. {shown})")
        return joined["__index"].to_numpy().astype(np.int64)

    def unknown_users(self, users: pl.Series) -> pl.Series:
        """The distinct ids of ``users`` the model does not know (for validating a whole input up front)."""
        users = users.cast(self.user_ids.dtype, strict=True).unique()
        return pl.DataFrame({"user": users}).join(self._index, on="user", how="anti")["user"]

    def item_index_of(self, items: list[Any]) -> np.ndarray:
        """Score columns of original item ids (sequential models). Raises DataError on unknown ids."""
        unknown = [i for i in items if i not in self.item_index]
        if unknown:
            raise DataError(f"{len(unknown)} item id(s) unknown to the model (e.g. {', '.join(map(str, unknown[:5]))})")
        return np.asarray([self.item_index[i] for i in items], dtype=np.int64)

    # -- scoring ------------------------------------------------------------------------------------------------------
    def sequence_inputs(self, sequences: list[np.ndarray]) -> np.ndarray:
        """Left-pad sequences of score columns to ``[b, max_len]`` (the most recent ``max_len`` items)."""
        width = self.histories.shape[1]
        out = np.zeros((len(sequences), width), dtype=np.int64)
        for r, seq in enumerate(sequences):
            seq = np.asarray(seq, dtype=np.int64)[-width:]
            if seq.size:
                out[r, width - seq.size:] = seq
        return out

    def scores(self, index: np.ndarray | None = None, item_seq: np.ndarray | None = None) -> np.ndarray:
        """``float32 [b, num_items]``: the scores of users ``index`` (internal) or of explicit ``item_seq`` inputs."""
        if self.family == "graph":
            return self.session.run(None, {"user": np.ascontiguousarray(index, dtype=np.int64)})[0]
        if item_seq is None:
            item_seq = np.asarray(self.histories[index])
        reprs = self.session.run(None, {"item_seq": np.ascontiguousarray(item_seq, dtype=np.int64)})[0]
        return reprs @ self.item_table.T

    def seen(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, columns)`` of the seen items of users ``index``, rows relative to ``index``."""
        starts, ends = self.seen_indptr[index], self.seen_indptr[index + 1]
        counts = (ends - starts).astype(np.int64)
        rows = np.repeat(np.arange(index.size), counts)
        offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        return rows, np.asarray(self.seen_items[np.repeat(starts, counts) + offsets])

    def recommend(self, index: np.ndarray, k: int, exclude_seen: bool = True, batch: int | None = None,
                  item_seq: np.ndarray | None = None, extra_seen: tuple[np.ndarray, np.ndarray] | None = None):
        """Exact top-``k`` of users ``index``: ``(columns int64 [b, k], scores float32 [b, k])``, best first, in
        sub-batches of ``batch`` users (default: :data:`BATCH_FLOATS` scores, which stay in cache). A user with
        fewer than ``k`` unseen items gets ``-1`` columns and ``-inf`` scores in the tail."""
        n = index.size if index is not None else item_seq.shape[0]
        batch = batch or max(1, min(n, BATCH_FLOATS // max(self.num_items, 1)))
        cols, vals = np.empty((n, k), dtype=np.int64), np.empty((n, k), dtype=np.float32)
        for s in range(0, n, batch):
            idx = None if index is None else index[s:s + batch]
            seq = None if item_seq is None else item_seq[s:s + batch]
            scores = self.scores(idx, seq)
            rows, columns = self.seen(idx) if (exclude_seen and idx is not None) else (np.empty(0, np.int64),) * 2
            if extra_seen is not None:
                rows, columns = np.concatenate([rows, extra_seen[0]]), np.concatenate([columns, extra_seen[1]])
            cols[s:s + batch], vals[s:s + batch] = masked_topk(scores, k, rows, columns, self.invalid_columns)
        return cols, vals

    def original_items(self, columns: np.ndarray) -> pl.Series:
        """Original item ids of score columns (valid columns only: no ``-1``)."""
        return self.item_ids.gather(pl.Series(columns, dtype=pl.Int64))


def load_model(model: str, tracking_uri: str | None = None, prefer_gpu: bool = True,
               threads: int | None = None) -> ExportedModel:
    """An :class:`ExportedModel` from a directory, an MLflow run id or a ``runs:/<run_id>/<path>`` URI."""
    from .resolve import resolve_model

    return ExportedModel(resolve_model(model, tracking_uri), prefer_gpu=prefer_gpu, threads=threads)
