"""Blocking by nearest neighbours of record vectors (faiss exact inner product on unit vectors = cosine), or of
sparse TF-IDF rows (:func:`sparse_knn_candidates`, exact), or the union of two candidate sets.

Each left record keeps its ``k`` nearest right records as candidates. For deduplication (one table) each record keeps
its ``k`` nearest other records and a pair is kept once, as ``(i, j)`` with ``i < j``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["knn_candidates", "sparse_knn_candidates", "union_candidates"]


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
    return _unique_pairs(li, ri, dedup=right is None)


def _unique_pairs(li: np.ndarray, ri: np.ndarray, dedup: bool) -> tuple[np.ndarray, np.ndarray]:
    if dedup:
        keep = li != ri
        li, ri = np.minimum(li[keep], ri[keep]), np.maximum(li[keep], ri[keep])
    pairs = np.unique(np.stack([li, ri], 1), axis=0) if li.size else np.zeros((0, 2), np.int64)
    return pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)


def sparse_knn_candidates(left, right, k: int, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """:func:`knn_candidates` for row-normalised ``scipy.sparse`` matrices (TF-IDF rows; ``right`` None:
    deduplicate ``left``): exact top-``k`` inner products, ``chunk`` left rows at a time (a dense
    ``[chunk, R]`` block). Only pairs with a positive similarity are kept; ties are broken by the lower row."""
    base = left if right is None else right
    n, m = left.shape[0], base.shape[0]
    if n == 0 or m == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    kk = min(k, m - (1 if right is None else 0))
    if kk <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    base_t = base.T.tocsc()
    lis, ris = [], []
    for start in range(0, n, chunk):
        sims = (left[start:start + chunk] @ base_t).toarray()
        if right is None:  # never a record with itself
            rows = np.arange(sims.shape[0])
            sims[rows, start + rows] = -1.0
        top = np.argsort(-sims, axis=1, kind="stable")[:, :kk]
        val = np.take_along_axis(sims, top, axis=1)
        keep = val > 0
        lis.append(np.repeat(np.arange(start, start + sims.shape[0]), kk).reshape(-1, kk)[keep])
        ris.append(top[keep])
    return _unique_pairs(np.concatenate(lis), np.concatenate(ris), dedup=right is None)


def union_candidates(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray,
                                                                                                 np.ndarray]:
    """The union of two candidate sets ``(li, ri)``, sorted by ``(li, ri)``, no duplicates."""
    return _unique_pairs(np.concatenate([a[0], b[0]]), np.concatenate([a[1], b[1]]), dedup=False)
