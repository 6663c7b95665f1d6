"""An exported model, loaded for scoring: the ONNX session, the id maps and each user's seen items.

A model directory is what ``engine export`` writes: ``export.json`` (whose ``serving`` block names the files below)
and, by family,

* ``graph``: ``model.onnx`` (``user int64 [b]`` -> ``scores float32 [b, num_items]``);
* ``sequence``: ``sequence_encoder.onnx`` (``item_seq int64 [b, max_len]`` -> ``seq_repr float32 [b, d]``),
  ``item_embeddings.npy`` (``[num_items + 1, d]``, row 0 padding) and ``histories.npy`` (each user's input);

plus ``users.parquet`` / ``items.parquet`` (internal index -> original id; a null item is never recommended) and
``seen_indptr.npy`` / ``seen_items.npy`` (CSR of the score columns each user has seen). Arrays are memory-mapped, so
loading costs the id maps, not the histories. ``--index faiss`` (:meth:`ExportedModel.use_faiss`) searches the item
vectors instead of scoring every column: ``item_embeddings.npy`` and, for graph models, ``user_embeddings.npy``
(the same propagated embeddings the ONNX graph holds). A ``linkage`` export is a :class:`engine_serving.linkage.
LinkageModel`; :func:`load_model` returns the right one.
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

__all__ = ["ExportedModel", "load_model", "load_with_new_items", "read_export", "make_session"]

log = logging.getLogger("engine.serving")

#: scores per sub-batch by default (32 MiB of float32: ~200 users of a 40k-item catalogue)
BATCH_FLOATS = 1 << 23


FAMILIES = ("graph", "sequence", "linkage")


def read_export(directory: str | Path) -> dict[str, Any]:
    """``export.json`` of an export directory, checked to have a ``serving`` block. Raises ModelError."""
    directory = Path(directory)
    meta_path = directory / "export.json"
    if not directory.is_dir():
        raise ModelError(f"{directory}: not a directory; --model takes the directory `engine export -o DIR` "
                         "wrote, an MLflow run id or a runs:/<run_id>/<path> URI")
    if not meta_path.is_file():
        raise ModelError(f"{directory}: not an engine export (no export.json); write one with "
                         "`engine export PIPELINE -o DIR`")
    try:
        meta: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{meta_path}: unreadable ({exc})") from None
    serving = meta.get("serving")
    if not isinstance(serving, dict) or serving.get("family") not in FAMILIES:
        raise ModelError(f"{directory}: this export has no serving files (export.json has no `serving` "
                         "block); export it again with this version of engine")
    return meta


def make_session(path: Path, prefer_gpu: bool = True, threads: int | None = None):
    """``(onnxruntime session, provider it uses)``, with ``threads`` intra- and inter-op threads when given."""
    from engine.export import onnx_session

    session, provider = onnx_session(path, prefer_gpu=prefer_gpu)
    if threads:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = options.inter_op_num_threads = threads
        providers = [p for p in session.get_providers() if p in ("CUDAExecutionProvider", "CPUExecutionProvider")]
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        provider = session.get_providers()[0]
    return session, provider


class ExportedModel:
    """Scores users of an exported model with onnxruntime. Thread-safe for scoring (onnxruntime's ``run`` is)."""

    #: ``engine score --top-k`` when not given
    default_k = 20

    def __init__(self, directory: str | Path, prefer_gpu: bool = True, threads: int | None = None) -> None:
        self.directory = Path(directory)
        meta_path = self.directory / "export.json"
        self.meta = read_export(self.directory)
        serving = self.meta["serving"]
        if serving["family"] not in ("graph", "sequence"):
            raise ModelError(f"{self.directory}: a {serving['family']} export; load it with engine_serving.load_model")
        self.family: str = serving["family"]
        self.threads, self.prefer_gpu = threads, prefer_gpu
        files = {k: self.directory / v for k, v in serving.items() if k != "family" and isinstance(v, str)}
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
        self._sorted_ids = self._id_order = None
        if self.user_ids.dtype.is_integer() and not self.user_ids.null_count():
            ids = self.user_ids.to_numpy().astype(np.int64)
            self._id_order = np.argsort(ids, kind="stable")
            self._sorted_ids = ids[self._id_order]
        if self.family == "sequence":
            self.histories = np.load(files["histories"], mmap_mode="r")
            self.item_table = np.ascontiguousarray(np.load(files["item_embeddings"]), dtype=np.float32)
            self.item_index = {v: i for i, v in enumerate(self.item_ids.to_list()) if v is not None}
        self._files = files
        self.session, self.provider = make_session(files["onnx"], prefer_gpu, threads)
        self.num_items = self.item_ids.len()  # score columns
        self.fingerprint = {"export.json": meta_path.read_text(encoding="utf-8"),
                            "onnx_bytes": files["onnx"].stat().st_size}
        self.faiss = None  # a FaissTopK after use_faiss()
        self.index_kind = "exact"
        self.new_item_vectors: np.ndarray | None = None  # graph models: score columns past the ONNX graph's
        log.info("model %s (%s): %d users, %d score columns, onnxruntime provider %s", self.directory,
                 self.family, self.num_users, self.num_items, self.provider)

    def add_items(self, path: str | Path, id_column: str | None = None) -> dict[str, int]:
        """Append the items of the feature table ``path`` as score columns, embedded by the export's content
        encoder (see :mod:`engine_serving.new_items`); call before :meth:`use_faiss`. Returns ``{"new_items",
        "new_items_skipped"}``."""
        from .new_items import NewItems

        if self.faiss is not None:
            raise ModelError("add new items before building the faiss index")
        if self.family == "graph":
            if "user_embeddings" not in self._files or not self._files["user_embeddings"].is_file():
                raise ModelError(f"{self.directory}: new items need user_embeddings.npy; export the model again "
                                 "with this version of engine")
            self.user_table = np.load(self._files["user_embeddings"], mmap_mode="r")
            dim = self.user_table.shape[1]
        else:
            dim = self.item_table.shape[1]
        new = NewItems(path, self.directory, self.item_ids, dim, id_column, self.prefer_gpu, self.threads)
        if self.family == "graph":
            old = self.new_item_vectors if self.new_item_vectors is not None else np.zeros((0, dim), np.float32)
            self.new_item_vectors = np.concatenate([old, new.vectors])
        else:
            self.item_table = np.concatenate([self.item_table, new.vectors])
        self.item_ids = pl.concat([self.item_ids, new.ids.cast(self.item_ids.dtype)])
        self.num_items = self.item_ids.len()
        self.fingerprint.setdefault("new_items", []).append(new.fingerprint)
        return {"new_items": int(new.ids.len()), "new_items_skipped": new.skipped}

    def use_faiss(self, **options: Any) -> str:
        """Search top-k with faiss from now on (options: those of :class:`engine_serving.faiss_index.FaissTopK`);
        returns the index built, e.g. ``"FlatIP"``. Graph exports need ``user_embeddings.npy`` and
        ``item_embeddings.npy`` (written by engine export since faiss support)."""
        from .faiss_index import FaissTopK

        if self.family == "graph":
            missing = [k for k in ("user_embeddings", "item_embeddings") if k not in self._files
                       or not self._files[k].is_file()]
            if missing:
                raise ModelError(f"{self.directory}: --index faiss needs {' and '.join(m + '.npy' for m in missing)}"
                                 "; export the model again with this version of engine (or use --index exact)")
            self.user_table = np.load(self._files["user_embeddings"], mmap_mode="r")
            items = np.load(self._files["item_embeddings"])
            if self.new_item_vectors is not None:
                items = np.concatenate([items, self.new_item_vectors])
        else:
            items = self.item_table
        self.faiss = FaissTopK(items, self.invalid_columns, threads=self.threads, **options)
        self.index_kind = f"faiss {self.faiss.kind}"
        return self.faiss.kind

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
        if self._sorted_ids is not None:  # integer ids: binary search (no frame, no join: the server's path)
            wanted = users.to_numpy().astype(np.int64, copy=False)
            pos = np.searchsorted(self._sorted_ids, wanted).clip(max=self._sorted_ids.size - 1)
            found = self._sorted_ids[pos] == wanted if self._sorted_ids.size else np.zeros(wanted.size, bool)
            if found.all():
                return self._id_order[pos]
            unknown = users.filter(pl.Series(~found))
        else:
            frame = pl.DataFrame({"user": users}).with_row_index("__row")
            joined = frame.join(self._index, on="user", how="left").sort("__row")
            unknown = joined.filter(pl.col("__index").is_null())["user"]
            if not unknown.len():
                return joined["__index"].to_numpy().astype(np.int64)
        shown = ", ".join(map(str, unknown.unique(maintain_order=True).head(5).to_list()))
        raise DataError(f"{unknown.n_unique()} user id(s) unknown to the model (e.g. {shown})")

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
            scores = self.session.run(None, {"user": np.ascontiguousarray(index, dtype=np.int64)})[0]
            if self.new_item_vectors is None:
                return scores
            users = np.asarray(self.user_table[np.asarray(index)], dtype=np.float32)
            return np.concatenate([scores, users @ self.new_item_vectors.T], axis=1)
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
        if self.faiss is not None:
            return self._recommend_faiss(index, k, exclude_seen, item_seq, extra_seen)
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

    def query_vectors(self, index: np.ndarray | None = None, item_seq: np.ndarray | None = None,
                      batch: int = 1024) -> np.ndarray:
        """``float32 [b, d]``: what the scores are the inner products of with the item vectors (faiss queries)."""
        if self.family == "graph":
            return np.ascontiguousarray(self.user_table[index], dtype=np.float32)
        if item_seq is None:
            item_seq = np.asarray(self.histories[index])
        return np.concatenate([self.session.run(None, {"item_seq": np.ascontiguousarray(item_seq[s:s + batch],
                                                                                        dtype=np.int64)})[0]
                               for s in range(0, item_seq.shape[0], batch)]) if item_seq.shape[0] else \
            np.zeros((0, self.item_table.shape[1]), np.float32)

    def _recommend_faiss(self, index, k, exclude_seen, item_seq, extra_seen):
        queries = self.query_vectors(index, item_seq)
        rows, columns = self.seen(index) if (exclude_seen and index is not None) else (np.empty(0, np.int64),) * 2
        if extra_seen is not None:
            rows, columns = np.concatenate([rows, extra_seen[0]]), np.concatenate([columns, extra_seen[1]])
        return self.faiss.search(queries, k, rows, columns)

    def original_items(self, columns: np.ndarray) -> pl.Series:
        """Original item ids of score columns (valid columns only: no ``-1``)."""
        return self.item_ids.gather(pl.Series(columns, dtype=pl.Int64))


def load_model(model: str, tracking_uri: str | None = None, prefer_gpu: bool = True,
               threads: int | None = None):
    """An :class:`ExportedModel` (graph, sequence) or a :class:`engine_serving.linkage.LinkageModel` from a
    directory, an MLflow run id or a ``runs:/<run_id>/<path>`` URI."""
    from .resolve import resolve_model

    directory = resolve_model(model, tracking_uri)
    if read_export(directory)["serving"]["family"] == "linkage":
        from .linkage import LinkageModel

        return LinkageModel(directory, prefer_gpu=prefer_gpu, threads=threads)
    return ExportedModel(directory, prefer_gpu=prefer_gpu, threads=threads)


def load_with_new_items(model: str, tracking_uri: str | None = None, threads: int | None = None,
                        new_items: str | None = None, new_items_id: str | None = None,
                        option: str = "--new-items") -> tuple[Any, dict[str, int]]:
    """:func:`load_model`, then the items of the feature table ``new_items`` added to its catalogue (see
    :meth:`ExportedModel.add_items`): ``(model, counts)``, counts empty without ``new_items``. ``option`` names
    where ``new_items`` came from in the error a linkage model gets (it has no item catalogue)."""
    loaded = load_model(model, tracking_uri=tracking_uri, threads=threads)
    if not new_items:
        return loaded, {}
    if loaded.family == "linkage":
        raise ModelError(f"{option}: a linkage model has no item catalogue (its input is the records)")
    return loaded, loaded.add_items(new_items, new_items_id)
