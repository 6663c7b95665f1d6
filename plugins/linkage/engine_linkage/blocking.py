"""Blocking by nearest neighbours of record vectors (faiss exact inner product on unit vectors = cosine).

Each left record keeps its ``k`` nearest right records as candidates. For deduplication (one table) each record keeps
its ``k`` nearest other records and a pair is kept once, as ``(i, j)`` with ``i < j``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["knn_candidates"]


def knn_candidates(left: np.ndarray, right: np.ndarray | None, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs (row indices ``li``, ``ri``) from ``float32`` vectors ``left [L, D]``, ``right [R, D]``
    (``None``: deduplicate ``left``); sorted by ``(li, ri)``, no duplicates."""
    import faiss

    left = np.ascontiguousarray(left, dtype=np.float32)
    base = left if right is None else np.ascontiguousarray(right, dtype=np.float32)
    if left.shape[0] == 0 or base.shape[0] == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    kk = min(k + (1 if right is None else 0), base.shape[0])
    index = faiss.IndexFlatIP(base.shape[1])
    index.add(base)
    _, nn_idx = index.search(left, kk)
    li = np.repeat(np.arange(left.shape[0], dtype=np.int64), kk)
    ri = nn_idx.reshape(-1).astype(np.int64)
    keep = ri >= 0
    li, ri = li[keep], ri[keep]
    if right is None:
        keep = li != ri
        li, ri = np.minimum(li[keep], ri[keep]), np.maximum(li[keep], ri[keep])
    pairs = np.unique(np.stack([li, ri], 1), axis=0) if li.size else np.zeros((0, 2), np.int64)
    return pairs[:, 0], pairs[:, 1]
