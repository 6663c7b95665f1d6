"""Top-k by inner product with faiss (``engine score --index faiss``), excluding seen items like :func:`masked_topk`.

The catalogue goes into ``IndexFlatIP`` (exact) below :data:`IVF_MIN_ITEMS` items, and into ``IndexIVFFlat``
(approximate: ``nlist = 4 sqrt(n)`` k-means cells, ``nprobe`` of them searched) from there. Excluded entries
(a user's seen items, never-recommended columns) cannot be removed from a shared index per query, so each batch asks
for ``k + e`` neighbours, ``e`` the most excluded columns of any of its rows, and drops the excluded ones: at least
``k`` of what is left are the row's true top-k (exact with the flat index). Rows are batched in order of their
exclusion count, so one heavy user does not make a whole batch over-fetch.
"""

from __future__ import annotations

import logging

import numpy as np

__all__ = ["FaissTopK", "IVF_MIN_ITEMS"]

log = logging.getLogger("engine.serving")

#: catalogues at least this large get an IVF index (approximate) instead of the exact flat one
IVF_MIN_ITEMS = 500_000


class FaissTopK:
    """An inner-product index over ``items float32 [n, d]`` (row ``j`` is score column ``j``).

    Args:
        items: the item (or right-record) vectors.
        invalid_columns: columns never returned (padding, null ids).
        ivf_min_items: from this catalogue size, an IVF index (default :data:`IVF_MIN_ITEMS`).
        nlist: IVF cells (default ``4 sqrt(n)``); nprobe: cells searched per query (default ``max(8, nlist // 32)``;
            ``nprobe = nlist`` is exact).
        threads: faiss OpenMP threads (default: faiss's).
    """

    def __init__(self, items: np.ndarray, invalid_columns: np.ndarray | None = None,
                 ivf_min_items: int = IVF_MIN_ITEMS, nlist: int | None = None, nprobe: int | None = None,
                 threads: int | None = None, seed: int = 0) -> None:
        import faiss

        if threads:
            faiss.omp_set_num_threads(threads)
        items = np.ascontiguousarray(items, dtype=np.float32)
        self.num_items, dim = items.shape
        self.invalid = np.asarray(invalid_columns if invalid_columns is not None else [], dtype=np.int64)
        if self.num_items >= ivf_min_items:
            self.nlist = nlist or max(1, int(4 * self.num_items ** 0.5))
            quantizer = faiss.IndexFlatIP(dim)
            index = faiss.IndexIVFFlat(quantizer, dim, self.nlist, faiss.METRIC_INNER_PRODUCT)
            rng = np.random.default_rng(seed)
            sample = items if self.num_items <= 256 * self.nlist else \
                items[np.sort(rng.choice(self.num_items, 256 * self.nlist, replace=False))]
            index.cp.seed = seed
            index.train(sample)
            index.add(items)
            self.nprobe = min(self.nlist, nprobe or max(8, self.nlist // 32))
            index.nprobe = self.nprobe
            self.kind = f"IVFFlat(nlist={self.nlist}, nprobe={self.nprobe})"
        else:
            index = faiss.IndexFlatIP(dim)
            index.add(items)
            self.nlist = self.nprobe = None
            self.kind = "FlatIP"
        self.index = index
        log.info("faiss %s over %d items", self.kind, self.num_items)

    def search(self, queries: np.ndarray, k: int, rows: np.ndarray | None = None, columns: np.ndarray | None = None,
               batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` of each query skipping ``(rows[i], columns[i])`` and the invalid columns; same contract as
        :func:`engine_serving.topk.masked_topk`: ``(columns int64 [b, k], values float32 [b, k])``, best first,
        ``-1`` / ``-inf`` in the tail of a row with fewer than ``k`` candidates."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        b, n = queries.shape[0], self.num_items
        rows = np.empty(0, np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
        columns = np.empty(0, np.int64) if columns is None else np.asarray(columns, dtype=np.int64)
        per_row = np.bincount(rows, minlength=b)
        indptr = np.concatenate([[0], np.cumsum(per_row)])
        by_row = columns[np.argsort(rows, kind="stable")]  # CSR of each row's excluded columns
        order = np.argsort(per_row, kind="stable")  # batches of similar over-fetch
        cols = np.full((b, k), -1, dtype=np.int64)
        vals = np.full((b, k), -np.inf, dtype=np.float32)
        for s in range(0, b, batch):
            idx = order[s:s + batch]
            fetch = min(n, k + int(per_row[idx].max()) + self.invalid.size)
            found_v, found_c = self.index.search(queries[idx], fetch)
            keep = found_c >= 0
            if self.invalid.size:
                keep &= ~np.isin(found_c, self.invalid)
            counts = per_row[idx]
            if counts.sum():
                starts = indptr[idx]
                local = np.repeat(np.arange(idx.size), counts)
                offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
                banned = local * n + by_row[np.repeat(starts, counts) + offsets]
                keep &= ~np.isin(np.arange(idx.size)[:, None] * n + found_c, banned)
            position = np.cumsum(keep, axis=1)
            take = keep & (position <= k)
            r, c = np.nonzero(take)
            cols[idx[r], position[r, c] - 1] = found_c[r, c]
            vals[idx[r], position[r, c] - 1] = found_v[r, c]
        return cols, vals
