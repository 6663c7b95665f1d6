"""The linkage task's weight-free pair features and TF-IDF blocking: untrained TF-IDF cosines
(``model.rerank.tfidf``) and typed spans (``model.rerank.spans``) as pair-classifier features, and TF-IDF as a
blocking index (``model.blocking: tfidf | both``). See :mod:`engine_linkage.tfidf`, :mod:`engine_linkage.spans`.

Mixed into :class:`engine_linkage.task.LinkageTask`, which provides ``model_cfg``, ``data`` and ``values``.
"""

from __future__ import annotations

import numpy as np
import torch

from .blocking import knn_candidates, sparse_knn_candidates, union_candidates
from .pair_features import PairFeatures
from .spans import SpanPairFeatures
from .tfidf import TfidfPairFeatures

__all__ = ["PairFeatureHooks"]


class PairFeatureHooks:
    """Builds the weight-free features once (on both tables, no labels) and serves them by pair row indices."""

    def build_pair_features(self) -> int:
        """Fit what ``model.rerank.tfidf``, ``model.rerank.spans`` and ``model.blocking`` need; return the
        classifier's width of weight-free pair features."""
        m, d = self.model_cfg, self.data
        analyzers = list(dict.fromkeys(m.rerank.tfidf)) if m.rerank is not None else []
        self.tfidf_features: TfidfPairFeatures | None = None
        self.tfidf_blocking: TfidfPairFeatures | None = None
        self.pair_features: PairFeatures | None = None
        fields = list(d.fields)
        text = [f for f, kind in d.fields.items() if kind == "text"]
        left = {f: self.values(d.left, f) for f in fields}
        right = None if d.dedup else {f: self.values(d.right, f) for f in fields}
        parts = {}
        if analyzers:
            self.tfidf_features = parts["tfidf"] = TfidfPairFeatures(left, right, fields, analyzers,
                                                                     per_field=text if len(text) > 1 else ())
        if m.rerank is not None and m.rerank.spans:
            numeric = [f for f, kind in d.fields.items() if kind == "numeric"]
            parts["spans"] = SpanPairFeatures(left, right, fields, numeric, per_field=text if len(text) > 1 else ())
        if parts:
            self.pair_features = PairFeatures(parts)
        if m.blocking != "vectors":
            self.tfidf_blocking = TfidfPairFeatures(left, right, fields, [m.blocking_tfidf])
        return 0 if self.pair_features is None else self.pair_features.width

    def _pair_features(self, lrows, rrows, device) -> torch.Tensor | None:
        """Weight-free features of the pairs, ``[B, F]`` (None without ``model.rerank.tfidf`` / ``spans``)."""
        if getattr(self, "pair_features", None) is None:
            return None
        return torch.from_numpy(self.pair_features(lrows, rrows)).to(device)

    def block(self, ul: np.ndarray, ur: np.ndarray, lrows: np.ndarray, rrows: np.ndarray,
              k: int) -> tuple[np.ndarray, np.ndarray]:
        """Candidate pairs as positions into ``lrows`` / ``rrows``: the ``k`` nearest by record vector
        (``ul``, ``ur``), by TF-IDF cosine, or both (``model.blocking``)."""
        dedup, how = self.data.dedup, self.model_cfg.blocking
        out = None
        if how in ("vectors", "both"):
            out = knn_candidates(ul, None if dedup else ur, k)
        if how in ("tfidf", "both"):
            lm, rm = self.tfidf_blocking.matrices[0]
            sparse = sparse_knn_candidates(lm[lrows], None if dedup else rm[rrows], k)
            out = sparse if out is None else union_candidates(out, sparse)
        return out
