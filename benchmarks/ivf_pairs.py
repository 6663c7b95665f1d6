"""Approximate k-nearest-neighbour candidate pairs with faiss (an inverted file over fast-scan product codes), kept
once as unordered pairs with their exact inner product."""

from __future__ import annotations

import numpy as np


def ivf_candidates(x: np.ndarray, k: int, nlist: int, nprobe: int, seed: int, chunk: int):
    """Each record's ``k`` nearest other records by inner product, approximately, with faiss: an inverted file of
    ``nlist`` lists (spherical k-means, 10 iterations on 32 sampled records per list) over 4-bit fast-scan product
    codes (``IVF<nlist>,PQ<d/2>x4fs``, not residual: one look-up table per query), ``nprobe`` lists searched per
    record. Unordered pairs, each with its exact inner product."""
    import faiss

    n, d = x.shape
    index = faiss.index_factory(d, f"IVF{nlist},PQ{d // 2}x4fs", faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.extract_index_ivf(index)
    ivf.by_residual = False
    ivf.cp.niter, ivf.cp.max_points_per_centroid, ivf.cp.spherical = 10, 32, True
    sample = np.random.default_rng(seed).choice(n, size=min(n, 32 * nlist), replace=False)
    index.train(x[np.sort(sample)])
    index.add(x)
    ivf.nprobe = nprobe
    li, ri = [], []
    for i in range(0, n, chunk):
        _, nn = index.search(x[i:i + chunk], k + 1)
        li.append(np.repeat(np.arange(i, i + nn.shape[0], dtype=np.int64), k + 1))
        ri.append(nn.reshape(-1).astype(np.int64))
    a, b, _ = unordered(np.concatenate(li), np.concatenate(ri), np.zeros(0), n)
    return a, b, scores_of(x, a, b)


def unordered(li, ri, sc, n):
    """Drop self pairs and misses, keep ``(min, max)`` once (sorted by key), with its score when ``sc`` is given."""
    keep = (ri >= 0) & (li != ri)
    li, ri = li[keep], ri[keep]
    a, b = np.minimum(li, ri), np.maximum(li, ri)
    keys, first = np.unique(a * n + b, return_index=True)
    return keys // n, keys % n, (sc[keep][first].astype(np.float64) if sc.size else None)


def scores_of(x: np.ndarray, a: np.ndarray, b: np.ndarray, chunk: int = 1 << 20) -> np.ndarray:
    return np.concatenate([np.einsum("ij,ij->i", x[a[i:i + chunk]], x[b[i:i + chunk]])
                           for i in range(0, a.shape[0], chunk)] or [np.zeros(0)]).astype(np.float64)
