"""A linkage export, loaded for matching: raw records -> candidates in the export's right table, scored.

An export of the ``linkage`` family holds ``record_encoder.onnx`` and the files of
:func:`engine_linkage.export.write_serving_files` (``export.json``'s ``serving`` block names them): the right
table's ids and record vectors, each slot's featuriser (its registry encoder name and options), the threshold chosen
on valid, and with a pair classifier ``pair_scorer.onnx`` plus the right table's features (and, when it reads
weight-free pair features, ``pair_features.json`` and the right table's values), or with a cross-encoder
``cross_encoder.onnx``, its tokenizer and the right table serialised.

Matching a record, as the task does in evaluation:

1. featurise it as in training: every value read as a string, stripped, empty -> missing; ``_record`` (with
   ``whole_record``) the non-missing values of the fields joined by a space; each slot's featuriser rebuilt from the
   registry (:class:`engine_serving.featurize.SlotFeaturizer`);
2. embed it with the ONNX record encoder (unit-norm vector);
3. take the ``k`` right records of highest cosine (exact: a matrix product and top-k; or ``--index faiss``); for a
   dedup export (one table), a record of the table whose id is the input record's is not its own candidate;
4. score each candidate: the cross-encoder's probability where the export has one (the record serialised as
   ``field: value | ...``, the pair tokenised as in training), else the pair classifier's, else the untrained
   TF-IDF cosine ``rerank.tfidf_fallback`` chose on valid (``score: tfidf``), else the cosine; order
   the record's candidates by score and, with ``matches_only``, keep those scoring at least the threshold. The pair
   classifier's weight-free features (TF-IDF cosines with the fitted idf, typed spans) are computed from the raw
   values of both records (:class:`engine_linkage.pair_features.PairFeatures`), as in training.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import polars as pl

from engine.errors import DataError

from .errors import ModelError
from .featurize import SlotFeaturizer, run_encoder
from .model import BATCH_FLOATS, make_session, read_export
from .topk import masked_topk

__all__ = ["LinkageModel", "match_chunk", "record_columns", "clean_value", "RECORD_FIELD"]

log = logging.getLogger("engine.serving")

RECORD_FIELD = "_record"
#: pairs per run of the pair scorer
PAIR_BATCH = 4096
#: pairs per run of the cross-encoder (a transformer: its activations grow with batch x length^2)
CROSS_BATCH = 64


def clean_value(value: Any) -> str | None:
    """A raw value as training reads it: a string, whitespace-stripped; empty or null -> None."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def record_columns(frame: pl.DataFrame, fields: Sequence[str]) -> dict[str, list[str | None]]:
    """``{field: values}`` of ``frame`` as training reads a table (strings, stripped, '' -> None)."""
    out = {}
    for f in fields:
        col = frame[f]
        if col.dtype != pl.String:
            col = col.cast(pl.String)
        col = col.str.strip_chars()
        out[f] = pl.select(pl.when(col == "").then(None).otherwise(col)).to_series().to_list()
    return out


class LinkageModel:
    """Matches raw records against an export's right table (see the module docstring). Thread-safe for matching."""

    family = "linkage"

    def __init__(self, directory: str | Path, prefer_gpu: bool = True, threads: int | None = None) -> None:
        self.directory = Path(directory)
        self.meta = read_export(self.directory)
        serving = self.meta["serving"]
        if serving["family"] != "linkage":
            raise ModelError(f"{self.directory}: a {serving['family']} export, not a linkage one")
        names = ["encoder", "right_ids", "right_vectors"]
        if serving.get("pair_scorer"):
            names += ["pair_scorer", "right_features_ids", "right_features_values"]
        if serving.get("pair_features"):
            names += ["pair_features", "right_records"]
        if serving.get("cross_encoder"):
            names += ["cross_encoder", "right_texts"]
        files = {k: self.directory / serving[k] for k in names}
        missing = [p.name for p in files.values() if not p.is_file()]
        if missing:
            raise ModelError(f"{self.directory}: incomplete export, missing {', '.join(sorted(missing))}")
        self.threads = threads
        self.fields: list[str] = list(serving["fields"])
        self.whole_record: bool = bool(serving["whole_record"])
        self.slots: list[dict[str, Any]] = list(serving["slots"])
        self.widths: dict[str, int] = dict(serving["widths"])
        self.threshold: float = float(serving["threshold"])
        self.default_k: int = int(serving.get("blocking_k", 10))
        self.score_kind: str = serving["score"]  # cosine, probability or tfidf (then score_feature)
        self.score_feature: str | None = serving.get("score_feature")
        self.dedup: bool = bool(serving.get("dedup", False))
        self.right_ids: pl.Series = pl.read_parquet(files["right_ids"])["right_id"]
        self.right_vectors = np.ascontiguousarray(np.load(files["right_vectors"]), dtype=np.float32)
        self.num_right, self.dim = self.right_vectors.shape
        self.session, self.provider = make_session(files["encoder"], prefer_gpu, threads)
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.pair_session = None
        if serving.get("pair_scorer"):
            self.pair_session, _ = make_session(files["pair_scorer"], prefer_gpu, threads)
            self.pair_inputs = [i.name for i in self.pair_session.get_inputs()]
            self.right_features = {"ids": np.load(files["right_features_ids"], mmap_mode="r"),
                                   "values": np.load(files["right_features_values"], mmap_mode="r")}
        self.pair_features = None
        if serving.get("pair_features"):
            self._load_pair_features(serving, files)
        self.cross_session = None
        if serving.get("cross_encoder"):
            self._load_cross(serving, files, prefer_gpu)
        self.featurize_slots = SlotFeaturizer(self.slots, self.widths, self.directory)
        self.fingerprint = {"export.json": (self.directory / "export.json").read_text(encoding="utf-8"),
                            "onnx_bytes": files["encoder"].stat().st_size}
        self.faiss = None
        self.index_kind = "exact"
        log.info("linkage model %s: %d right records, fields %s, score %s, onnxruntime provider %s",
                 self.directory, self.num_right, ", ".join(self.fields), self.score_kind, self.provider)

    def _load_pair_features(self, serving: dict[str, Any], files: dict[str, Path]) -> None:
        import json

        try:
            from engine_linkage.pair_features import PairFeatures
        except ImportError:
            raise ModelError(f"{self.directory}: the pair classifier reads weight-free pair features, computed by "
                             "the engine-linkage package (`pip install engine-linkage`)") from None
        state = json.loads(files["pair_features"].read_text(encoding="utf-8"))
        table = record_columns(pl.read_parquet(files["right_records"]), self.fields)
        try:
            self.pair_features = PairFeatures.from_state(state, table)
        except (KeyError, TypeError, ValueError) as e:
            raise ModelError(f"{files['pair_features']}: unreadable pair features ({e})") from None

    def _load_cross(self, serving: dict[str, Any], files: dict[str, Path], prefer_gpu: bool) -> None:
        tokenizer_dir = self.directory / serving["cross_tokenizer"]
        if not tokenizer_dir.is_dir():
            raise ModelError(f"{self.directory}: incomplete export, missing {tokenizer_dir.name}/")
        try:
            from transformers import AutoTokenizer
        except ImportError:
            raise ModelError(f"{self.directory}: the model scores pairs with a cross-encoder, whose tokenizer needs "
                             "the transformers package (`pip install 'engine-linkage[minilm]'`)") from None
        self.cross_tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
        self.cross_session, _ = make_session(files["cross_encoder"], prefer_gpu, self.threads)
        self.cross_fields: list[str] = list(serving["cross_fields"])
        self.cross_max_length = int(serving["cross_max_length"])
        self.right_texts: list[str] = pl.read_parquet(files["right_texts"])["text"].to_list()

    # -- records ------------------------------------------------------------------------------------------------------
    @property
    def input_fields(self) -> list[str]:
        """The columns a record needs (the data's fields)."""
        return list(self.fields)

    def featurize(self, columns: dict[str, list[str | None]]) -> tuple[np.ndarray, np.ndarray]:
        """``(ids int64 [n, W_ids], values float32 [n, W_values])`` of records given as ``{field: values}`` (values
        already cleaned: see :func:`record_columns`)."""
        if self.whole_record and RECORD_FIELD not in columns:
            rows = zip(*(columns[f] for f in self.fields))
            columns = {**columns, RECORD_FIELD: [" ".join(v for v in row if v) or None for row in rows]}
        return self.featurize_slots(columns)

    def embed(self, ids: np.ndarray, values: np.ndarray, batch: int = 1024) -> np.ndarray:
        """Unit-norm record vectors ``float32 [n, dim]`` (the ONNX record encoder)."""
        return run_encoder(self.session, self.inputs, ids, values, self.dim, batch)

    def use_faiss(self, **options: Any) -> str:
        """Search candidates with faiss from now on (see :class:`engine_serving.faiss_index.FaissTopK`)."""
        from .faiss_index import FaissTopK

        self.faiss = FaissTopK(self.right_vectors, threads=self.threads, **options)
        self.index_kind = f"faiss {self.faiss.kind}"
        return self.faiss.kind

    def candidates(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` right records of highest cosine: ``(columns int64 [n, k], cosines float32 [n, k])``, best
        first; ``-1`` past the end of a table with fewer than ``k`` records."""
        if self.faiss is not None:
            return self.faiss.search(vectors, k)
        n = vectors.shape[0]
        cols, vals = np.empty((n, k), np.int64), np.empty((n, k), np.float32)
        batch = max(1, BATCH_FLOATS // max(self.num_right, 1))
        empty = np.empty(0, np.int64)
        for s in range(0, n, batch):
            cols[s:s + batch], vals[s:s + batch] = masked_topk(vectors[s:s + batch] @ self.right_vectors.T, k,
                                                               empty, empty)
        return cols, vals

    def pair_scores(self, ids: np.ndarray, values: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                    columns: dict[str, list[str | None]] | None = None) -> np.ndarray:
        """Match probabilities of pairs (left record ``rows[i]`` of ``ids`` / ``values``, right record
        ``cols[i]``), from the pair scorer; ``columns`` (the left records' values) feed its weight-free features."""
        left = {"ids": ids, "values": values}
        features = None
        if self.pair_features is not None:
            if columns is None:
                raise ValueError("pair_scores: this model's pair features need the records' values (columns)")
            features = self.pair_features.with_left(columns)
        out = []
        for s in range(0, rows.size, PAIR_BATCH):
            r, c = rows[s:s + PAIR_BATCH], cols[s:s + PAIR_BATCH]
            feeds = {}
            for name in self.pair_inputs:  # left_ids, left_values, right_ids, right_values (those in use)
                if name == "pair_features":
                    feeds[name] = features(r, c)
                    continue
                side, kind = name.split("_", 1)
                source = left[kind][r] if side == "left" else self.right_features[kind][c]
                feeds[name] = np.ascontiguousarray(source)
            out.append(self.pair_session.run(None, feeds)[0])
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def cross_scores(self, columns: dict[str, list[str | None]], rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Match probabilities of pairs (left record ``rows[i]`` of ``columns``, right record ``cols[i]``), from
        the cross-encoder."""
        from engine_linkage.cross_encoder import serialize_records, tokenize_pairs

        left = serialize_records({f: columns[f] for f in self.cross_fields})
        out = []
        for s in range(0, rows.size, CROSS_BATCH):
            r, c = rows[s:s + CROSS_BATCH], cols[s:s + CROSS_BATCH]
            tokens = tokenize_pairs(self.cross_tokenizer, [left[i] for i in r], [self.right_texts[j] for j in c],
                                    self.cross_max_length, tensors="np")
            feeds = {name: np.ascontiguousarray(x, dtype=np.int64) for name, x in tokens.items()}
            out.append(self.cross_session.run(None, feeds)[0])
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def match(self, columns: dict[str, list[str | None]], k: int, matches_only: bool = False,
              record_ids: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(rows, right columns, scores)`` of the candidates of records ``columns``: per record (``rows`` in
        input order) its top-``k`` by cosine, ordered by score (see the module docstring). For a dedup export,
        ``record_ids`` (the records' ids) keep a record of the table from being its own candidate."""
        ids, values = self.featurize(columns)
        self_match = self.dedup and record_ids is not None
        cols, cos = self.candidates(self.embed(ids, values), k + 1 if self_match else k)
        valid = cols >= 0
        if self_match:  # drop the record itself, keep k
            right = self.right_ids.to_numpy()
            valid &= right[np.where(valid, cols, 0)] != np.asarray(record_ids, dtype=object)[:, None]
            valid &= np.cumsum(valid, axis=1) <= k
        rows = np.repeat(np.arange(cols.shape[0]), valid.sum(axis=1))
        cols, scores = cols[valid], cos[valid]
        rescored = self.cross_session is not None or self.pair_session is not None or self.score_kind == "tfidf"
        if rescored and rows.size:
            if self.cross_session is not None:
                scores = self.cross_scores(columns, rows, cols)
            elif self.score_kind == "tfidf":  # rerank.tfidf_fallback chose an untrained TF-IDF cosine on valid
                tfidf = self.pair_features.parts["tfidf"].with_left(columns)  # that part only: no spans
                scores = tfidf.cosine(self.score_feature, rows, cols)
            else:
                scores = self.pair_scores(ids, values, rows, cols, columns)
            scores = scores.astype(np.float32)
            order = np.lexsort((-scores, rows))  # stable: ties keep the cosine order
            rows, cols, scores = rows[order], cols[order], scores[order]
        if matches_only:
            keep = scores >= self.threshold
            rows, cols, scores = rows[keep], cols[keep], scores[keep]
        return rows, cols, scores


def match_chunk(model: LinkageModel, chunk_index: int, rows: pl.DataFrame, top_k: int, id_column: str = "id",
                matches_only: bool = False) -> pl.DataFrame:
    """The part of chunk ``chunk_index`` of a linkage job: columns ``left_id`` (the input's ``id_column``),
    ``right_id``, ``score``; each input row's candidates best first. Pure (no I/O)."""
    missing = [c for c in [id_column, *model.input_fields] if c not in rows.columns]
    if missing:
        raise DataError(f"chunk {chunk_index}: missing column(s) {', '.join(map(repr, missing))}")
    left = rows[id_column].cast(pl.String)
    which, cols, scores = model.match(record_columns(rows, model.input_fields), top_k, matches_only, left.to_list())
    return pl.DataFrame({
        "left_id": left.gather(pl.Series(which, dtype=pl.Int64)),
        "right_id": model.right_ids.gather(pl.Series(cols, dtype=pl.Int64)),
        "score": pl.Series(scores, dtype=pl.Float32),
    })
