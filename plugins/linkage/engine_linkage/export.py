"""The exported graphs of a linkage model, and the files batch scoring and the HTTP server read beside them.

* ``record_encoder.onnx``: featurised record -> unit-norm record vector (:func:`record_encoder_export`).
  ``torch.onnx.export`` names the graph inputs after ``forward``'s parameters, so there is one wrapper per input
  combination (id fields only, value fields only, both).
* :func:`write_serving_files`: the right table's record vectors and ids (the candidates of ``engine score`` and of
  ``POST /match``), how to featurise a raw record again (each slot's registry encoder and options), the threshold,
  and with a pair classifier (``model.rerank``) ``pair_scorer.onnx`` (both featurised records of a pair, and with
  ``model.rerank.tfidf`` / ``spans`` their weight-free pair features -> match probability) with the right table's
  features; the weight-free features are computed outside the graph, from ``pair_features.json`` (fitted
  vocabularies and idf: :meth:`engine_linkage.pair_features.PairFeatures.state`) and the right table's values
  (``right_records.parquet``).
* :func:`write_cross_encoder`: with ``model.cross_encoder``, ``cross_encoder.onnx`` (token ids of serialised pairs
  -> match probability; dynamic batch and length), its tokenizer, and the right table serialised.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from engine.fields import featurizer_spec, field_inputs_graph, slot_specs

from .model import jaccard

__all__ = ["record_encoder_export", "pair_scorer_export", "featurizer_spec", "write_serving_files",
           "write_cross_encoder", "export_linkage_model"]


def record_encoder_export(encoder: nn.Module, slots) -> tuple[nn.Module, tuple[str, ...]]:
    """The record encoder as a graph of its featurised inputs (see :func:`engine.fields.field_inputs_graph`)."""
    return field_inputs_graph(encoder, slots)


# -- the pair classifier --------------------------------------------------------------------------------------------
class _PairBoth(nn.Module):
    """``sigmoid(classifier(...))`` of featurised pairs: what ``LinkageTask.score_pairs`` computes with ``rerank``."""

    def __init__(self, encoder: nn.Module, classifier: nn.Module, jaccard_slices: Sequence[tuple[int, int]]) -> None:
        super().__init__()
        self.encoder, self.classifier = encoder, classifier
        self.jaccard_slices = [(int(o), int(w)) for o, w in jaccard_slices]

    def score(self, li: Tensor, lv: Tensor, ri: Tensor, rv: Tensor, pair: Tensor | None = None) -> Tensor:
        enc = self.encoder
        fl, ml = enc.field_vectors(li, lv)
        fr, mr = enc.field_vectors(ri, rv)
        u, v = enc.fuse(fl, ml), enc.fuse(fr, mr)
        jac = (torch.stack([jaccard(li[:, o:o + w], ri[:, o:o + w]) for o, w in self.jaccard_slices], 1)
               if self.jaccard_slices else None)
        return torch.sigmoid(self.classifier(fl, ml, fr, mr, u, v, jac, pair))

    def forward(self, left_ids: Tensor, left_values: Tensor, right_ids: Tensor, right_values: Tensor) -> Tensor:
        return self.score(left_ids, left_values, right_ids, right_values)


class _PairIds(_PairBoth):
    def forward(self, left_ids: Tensor, right_ids: Tensor) -> Tensor:  # type: ignore[override]
        none = torch.zeros(left_ids.shape[0], 0, dtype=torch.float32)
        return self.score(left_ids, none, right_ids, none)


class _PairValues(_PairBoth):
    def forward(self, left_values: Tensor, right_values: Tensor) -> Tensor:  # type: ignore[override]
        none = torch.zeros(left_values.shape[0], 0, dtype=torch.long)
        return self.score(none, left_values, none, right_values)


class _PairBothFeatures(_PairBoth):
    def forward(self, left_ids: Tensor, left_values: Tensor, right_ids: Tensor, right_values: Tensor,  # type: ignore[override]
                pair_features: Tensor) -> Tensor:
        return self.score(left_ids, left_values, right_ids, right_values, pair_features)


class _PairIdsFeatures(_PairBoth):
    def forward(self, left_ids: Tensor, right_ids: Tensor, pair_features: Tensor) -> Tensor:  # type: ignore[override]
        none = torch.zeros(left_ids.shape[0], 0, dtype=torch.float32)
        return self.score(left_ids, none, right_ids, none, pair_features)


class _PairValuesFeatures(_PairBoth):
    def forward(self, left_values: Tensor, right_values: Tensor, pair_features: Tensor) -> Tensor:  # type: ignore[override]
        none = torch.zeros(left_values.shape[0], 0, dtype=torch.long)
        return self.score(none, left_values, none, right_values, pair_features)


def pair_scorer_export(encoder: nn.Module, classifier: nn.Module, slots, jaccard_slots=(),
                       pair_features: bool = False) -> tuple[nn.Module, tuple[str, ...]]:
    """The pair classifier as a module of the featurised left and right records (one input per side and kind
    in use: ``left_ids``, ``left_values``, ``right_ids``, ``right_values``), and with ``pair_features`` their
    weight-free features (input ``pair_features``, ``float32 [batch, F]``) -> match probability ``[batch]``."""
    kinds = {s.kind for s in slots}
    slices = [(s.offset, s.width) for s in jaccard_slots]
    extra = ("pair_features",) if pair_features else ()
    if kinds == {"ids"}:
        cls = _PairIdsFeatures if pair_features else _PairIds
        return cls(encoder, classifier, slices).eval(), ("left_ids", "right_ids", *extra)
    if kinds == {"values"}:
        cls = _PairValuesFeatures if pair_features else _PairValues
        return cls(encoder, classifier, slices).eval(), ("left_values", "right_values", *extra)
    cls = _PairBothFeatures if pair_features else _PairBoth
    return cls(encoder, classifier, slices).eval(), ("left_ids", "left_values", "right_ids", "right_values", *extra)


# -- serving files --------------------------------------------------------------------------------------------------
@torch.no_grad()
def _vectors(encoder: nn.Module, ids: Tensor, values: Tensor, batch: int) -> np.ndarray:
    out = [encoder(ids[i:i + batch], values[i:i + batch]).float() for i in range(0, ids.shape[0], batch)]
    return torch.cat(out).numpy() if out else np.zeros((0, encoder.dim), np.float32)


def write_serving_files(directory: str | Path, encoder: nn.Module, slots, right_ids: Sequence[str],
                        right_features: tuple[Tensor, Tensor], *, fields: Sequence[str], whole_record: bool,
                        threshold: float, blocking_k: int, dedup: bool = False, classifier: nn.Module | None = None,
                        jaccard_slots=(), pair_features=None, right_columns=None, score_feature: str | None = None,
                        batch_size: int = 1024) -> dict[str, Any]:
    """Write what ``engine score`` / ``engine serve`` need beside ``record_encoder.onnx``; return the ``serving``
    block of ``export.json``.

    * ``right_ids.parquet`` (column ``right_id``) and ``right_vectors.npy`` (``float32 [R, dim]``, the encoder's
      vectors of the right table, or of the one table of a dedup task): what a record is matched against;
    * with ``classifier``: ``pair_scorer.onnx`` (see :func:`pair_scorer_export`; parity checked) and the right
      table's features ``right_features_ids.npy`` / ``right_features_values.npy``, so candidates are re-scored
      as in evaluation and ``threshold`` (chosen on valid, on that score) applies;
    * with ``pair_features`` (the classifier's weight-free features, :class:`engine_linkage.pair_features.PairFeatures`
      over the task's tables): ``pair_features.json`` (their state) and ``right_records.parquet`` (``right_columns``,
      the right table's values of ``fields``), from which serving computes the same features of new pairs.

    Args:
        encoder: the record encoder (copied to the CPU here).
        slots: its field slots (``task.slots``).
        right_ids: ids of the right table's records, in feature row order.
        right_features: ``(ids, values)`` of the right table, as in training (``task.features["right"]``).
        fields: the data's fields in order (what ``whole_record`` joins).
        whole_record: whether a ``_record`` text field joins them.
        threshold: the match threshold chosen on valid.
        blocking_k: candidates per record in evaluation (the default top-k of ``engine score``).
        dedup: one table (the right table is the left one): a record is never its own candidate.
        classifier: the pair classifier (``model.classifier``), or None when pairs are scored by cosine.
        jaccard_slots: the slots whose n-gram Jaccard similarity feeds the classifier (empty when it takes none).
        pair_features: the classifier's weight-free pair features (None when it takes none).
        right_columns: ``{field: values}`` of the right table (needed with ``pair_features``).
        score_feature: pairs are scored by this pair feature (``rerank.tfidf_fallback`` chose a TF-IDF cosine):
            no pair scorer is written, ``pair_features`` are.
    """
    import copy
    import json

    import polars as pl

    from engine.export import export_onnx, parity_check

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    encoder = copy.deepcopy(encoder).cpu().eval()  # the caller's model stays where it is
    ids, values = right_features
    vectors = _vectors(encoder, ids, values, batch_size)
    np.save(out / "right_vectors.npy", vectors)
    pl.DataFrame({"right_id": pl.Series(list(right_ids), dtype=pl.String)}).write_parquet(out / "right_ids.parquet")
    serving: dict[str, Any] = {
        "family": "linkage", "encoder": "record_encoder.onnx", "right_ids": "right_ids.parquet",
        "right_vectors": "right_vectors.npy", "fields": list(fields), "whole_record": bool(whole_record),
        "slots": slot_specs(encoder.encoders, slots),
        "widths": {"ids": int(ids.shape[1]), "values": int(values.shape[1])},
        "threshold": float(threshold), "blocking_k": int(blocking_k), "dedup": bool(dedup),
        "score": "cosine" if classifier is None else "probability", "pair_scorer": None}
    if score_feature is not None:
        if pair_features is None or score_feature not in pair_features.names:
            raise ValueError(f"score_feature {score_feature!r} is not one of the pair features")
        serving.update({"score": "tfidf", "score_feature": score_feature})
    if classifier is not None:
        module, names = pair_scorer_export(encoder, copy.deepcopy(classifier).cpu().eval(), slots, jaccard_slots,
                                           pair_features is not None)
        pick = {"ids": ids, "values": values}
        sides = [x for x in names if x != "pair_features"]
        kinds = [x.split("_", 1)[1] for x in sides[: len(sides) // 2]]
        n = ids.shape[0]
        g = torch.Generator().manual_seed(0)
        a, b = torch.randint(0, n, (min(257, n),), generator=g), torch.randint(0, n, (min(257, n),), generator=g)

        # a graph-level parity probe: pairs of right records, and weight-free features drawn in their range [0, 1]
        extra = () if pair_features is None else (torch.rand(a.shape[0], pair_features.width, generator=g),)

        def inputs(la: Tensor, rb: Tensor) -> tuple[Tensor, ...]:
            return (tuple(pick[k][la] for k in kinds) + tuple(pick[k][rb] for k in kinds)
                    + tuple(x[: la.shape[0]] for x in extra))

        path = out / "pair_scorer.onnx"
        export_onnx(module, inputs(a[:4], b[:4]), path, list(names), ["match_probability"],
                    dynamic_batch=list(names))
        report = parity_check(module, path, inputs(a, b), list(names))
        np.save(out / "right_features_ids.npy", ids.numpy())
        np.save(out / "right_features_values.npy", values.numpy())
        serving.update({"pair_scorer": "pair_scorer.onnx", "pair_scorer_max_abs_diff": report["max_abs_diff"],
                        "right_features_ids": "right_features_ids.npy",
                        "right_features_values": "right_features_values.npy"})
    if pair_features is not None:
        (out / "pair_features.json").write_text(json.dumps(pair_features.state()), encoding="utf-8")
        pl.DataFrame({f: pl.Series(list(right_columns[f]), dtype=pl.String) for f in fields}).write_parquet(
            out / "right_records.parquet")
        serving.update({"pair_features": "pair_features.json", "right_records": "right_records.parquet",
                        "pair_feature_names": pair_features.names})
    return serving


# -- the cross-encoder ----------------------------------------------------------------------------------------------
class _CrossProbability(nn.Module):
    """``sigmoid(cross-encoder logit)`` of tokenised pairs: what ``LinkageTask.score_pairs`` computes with
    ``cross_encoder``."""

    def __init__(self, cross: nn.Module) -> None:
        super().__init__()
        self.cross = cross

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor) -> Tensor:
        return torch.sigmoid(self.cross(input_ids, attention_mask, token_type_ids))


def write_cross_encoder(directory: str | Path, cross: nn.Module, right_texts: Sequence[str], *, fields: Sequence[str],
                        left_texts: Sequence[str]) -> dict[str, Any]:
    """``cross_encoder.onnx`` (parity checked on pairs of ``left_texts`` x ``right_texts``), ``cross_tokenizer/``
    and ``right_texts.parquet`` (column ``text``, in the right table's row order); returns the entries of the
    ``serving`` block: how a raw record is serialised (``cross_fields``) and tokenised (``cross_max_length``)."""
    import copy

    import polars as pl

    from engine.export import export_onnx, parity_check

    from .cross_encoder import INPUT_NAMES

    out = Path(directory)
    cross = copy.deepcopy(cross).cpu().eval()
    module = _CrossProbability(cross).eval()
    g = torch.Generator().manual_seed(0)
    n_l, n_r = len(left_texts), len(right_texts)
    a, b = torch.randint(0, n_l, (64,), generator=g).tolist(), torch.randint(0, n_r, (64,), generator=g).tolist()
    tokens = cross.tokenize([left_texts[i] for i in a], [right_texts[i] for i in b])
    path = out / "cross_encoder.onnx"
    example = tuple(tokens[k][:4] for k in INPUT_NAMES)
    export_onnx(module, example, path, list(INPUT_NAMES), ["match_probability"], dynamic_batch=list(INPUT_NAMES),
                dynamic_length=list(INPUT_NAMES))
    report = parity_check(module, path, tuple(tokens[k] for k in INPUT_NAMES), list(INPUT_NAMES))
    cross.tokenizer.save_pretrained(out / "cross_tokenizer")
    pl.DataFrame({"text": pl.Series(list(right_texts), dtype=pl.String)}).write_parquet(out / "right_texts.parquet")
    return {"cross_encoder": "cross_encoder.onnx", "cross_encoder_max_abs_diff": report["max_abs_diff"],
            "cross_tokenizer": "cross_tokenizer", "right_texts": "right_texts.parquet", "cross_fields": list(fields),
            "cross_max_length": int(cross.max_length), "score": "probability"}


def export_linkage_model(task, model, directory: str) -> dict[str, Any]:
    """``record_encoder.onnx``, ``record_schema.json`` and the serving files of a trained linkage task."""
    import copy
    import json

    from engine.export import export_onnx, parity_check

    if task.threshold is None:  # `engine export` loads weights without evaluating: choose it on valid now
        task.evaluate(model, "valid")
    encoder = copy.deepcopy(model.encoder).cpu().eval()
    module, names = record_encoder_export(encoder, task.slots)
    out = Path(directory)
    path = out / "record_encoder.onnx"
    ids, vals = task.features["left"]
    pick = {"ids": ids, "values": vals}
    n = ids.shape[0]
    example = tuple(pick[k][: min(4, n)] for k in names)
    export_onnx(module, example, path, list(names), ["record_vector"], dynamic_batch=list(names))
    g = torch.Generator().manual_seed(0)
    rows = torch.randperm(n, generator=g)[:257]
    report = parity_check(module, path, tuple(pick[k][rows] for k in names), list(names))
    schema = {"dim": task.model_cfg.dim, "whole_record": task.model_cfg.whole_record, "fields": [
        {"name": s.name, "modality": s.modality, "encoder": s.encoder, "input": s.kind, "offset": s.offset,
         "width": s.width,
         "options": getattr(encoder.encoders[s.encoder], "get_config_dict", dict)()} for s in task.slots]}
    schema_path = out / "record_schema.json"
    schema_path.write_text(json.dumps(schema, indent=2))
    m = task.model_cfg
    classify, by_tfidf = task.scorer == "classifier", task.scorer == "tfidf"
    features = getattr(task, "pair_features", None) if classify or by_tfidf else None
    right = task.data.right_table
    serving = write_serving_files(
        out, encoder, task.slots, task.data.right_table.ids, task.features["right"],
        fields=list(task.data.fields), whole_record=m.whole_record, threshold=task.threshold,
        blocking_k=m.blocking_k, dedup=task.data.dedup,
        classifier=getattr(model, "classifier", None) if classify else None,
        jaccard_slots=task.jaccard_slots if classify and m.rerank.jaccard else (), pair_features=features,
        right_columns=None if features is None else {f: right.values(f) for f in task.data.fields},
        score_feature=task.fallback_feature if by_tfidf else None)
    if m.cross_encoder is not None:
        serving.update(write_cross_encoder(out, model.cross, task.texts["right"], fields=task.cross_fields,
                                           left_texts=task.texts["left"]))
    return {"path": str(path), "schema": str(schema_path), "dim": task.model_cfg.dim,
            "inputs": {k: ("int64" if k == "ids" else "float32") + "[batch, width]" for k in names},
            "outputs": {"record_vector": "float32[batch, dim]"}, "threshold": task.threshold, **report,
            "serving": serving}
