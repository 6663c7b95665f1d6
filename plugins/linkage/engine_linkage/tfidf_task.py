"""The linkage task's TF-IDF hooks: untrained TF-IDF cosines as pair-classifier features (``model.rerank.tfidf``)
and as a blocking index (``model.blocking: tfidf | both``). See :mod:`engine_linkage.tfidf`.

Mixed into :class:`engine_linkage.task.LinkageTask`, which provides ``model_cfg``, ``data`` and ``values``.
"""

from __future__ import annotations

import numpy as np
import torch

from .blocking import knn_candidates, sparse_knn_candidates, union_candidates
from .tfidf import TfidfPairFeatures

__all__ = ["TfidfHooks"]


class TfidfHooks:
    """Builds the TF-IDF features once (on both tables, no labels) and serves them by pair row indices."""

    def build_tfidf(self) -> int:
        """Fit what ``model.rerank.tfidf`` and ``model.blocking`` need; return the classifier's TF-IDF width."""
        m, d = self.model_cfg, self.data
        analyzers = list(dict.fromkeys(m.rerank.tfidf)) if m.rerank is not None else []
        self.tfidf_features: TfidfPairFeatures | None = None
        self.tfidf_blocking: TfidfPairFeatures | None = None
        fields = list(d.fields)
        text = [f for f, kind in d.fields.items() if kind == "text"]
        left = {f: self.values(d.left, f) for f in fields}
        right = None if d.dedup else {f: self.values(d.right, f) for f in fields}
        if analyzers:
            self.tfidf_features = TfidfPairFeatures(left, right, fields, analyzers,
                                                    per_field=text if len(text) > 1 else ())
        if m.blocking != "vectors":
            self.tfidf_blocking = TfidfPairFeatures(left, right, fields, [m.blocking_tfidf])
        return 0 if self.tfidf_features is None else self.tfidf_features.width

    def _tfidf(self, lrows, rrows, device) -> torch.Tensor | None:
        """TF-IDF cosines of the pairs, ``[B, F_tfidf]`` (None without ``model.rerank.tfidf``)."""
        if getattr(self, "tfidf_features", None) is None:
            return None
        return torch.from_numpy(self.tfidf_features(lrows, rrows)).to(device)

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
