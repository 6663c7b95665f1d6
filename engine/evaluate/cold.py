"""Full ranking with cold-start items: metrics over all items, over warm items only, over cold items only.

* ``<metric>@k``: every item is a candidate, every target counts (the hybrid setting).
* ``warm_<metric>@k``: candidates and targets are the warm items (those seen in training).
* ``cold_<metric>@k``: candidates and targets are the split's cold items (never seen in training); users without a
  cold target are skipped, as users without any target always are.

Restricting the candidates is done by scoring only their columns (``score_fn(users)[:, candidates]``) and
re-indexing targets and exclusions into that column space, so :func:`~engine.evaluate.ranking.full_ranking` runs
unchanged on each view.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl
import torch

from .ranking import ItemSets, ScoreFn, full_ranking

__all__ = ["restricted_ranking", "cold_warm_ranking"]


def restricted_ranking(score_fn: ScoreFn, truth: pl.DataFrame, exclude: pl.DataFrame | None, num_users: int,
                       candidates: np.ndarray, ks: Sequence[int], metrics: Sequence[str],
                       chunk_size: int = 2048) -> dict[str, float] | None:
    """:func:`full_ranking` with only ``candidates`` (sorted item ids) ranked; ``None`` when no user has a target
    among them."""
    candidates = np.asarray(candidates, dtype=np.int64)
    cand_t = torch.from_numpy(candidates)

    def reindex(frame: pl.DataFrame) -> ItemSets:
        f = frame.select("user", "item").filter(pl.col("item").is_in(candidates.tolist()))
        pos = np.searchsorted(candidates, f["item"].to_numpy())
        return ItemSets.from_pairs(f["user"].to_numpy(), pos, num_users)

    gt = reindex(truth)
    if gt.nnz == 0:
        return None
    ex = reindex(exclude) if exclude is not None else None

    def scores(users: torch.Tensor) -> torch.Tensor:
        s = score_fn(users)
        return s[:, cand_t.to(s.device)]

    return full_ranking(scores, gt, ex, ks, metrics, chunk_size)


def cold_warm_ranking(score_fn: ScoreFn, truth: pl.DataFrame, exclude: pl.DataFrame | None, num_users: int,
                      num_items: int, cold_items: np.ndarray, warm_items: np.ndarray, ks: Sequence[int],
                      metrics: Sequence[str], chunk_size: int = 2048) -> dict[str, float]:
    """All / ``warm_`` / ``cold_`` metrics of one split (see the module docstring)."""
    gt = ItemSets.from_frame(truth.select("user", "item"), num_users)
    ex = ItemSets.from_frame(exclude.select("user", "item"), num_users) if exclude is not None else None
    out = dict(full_ranking(score_fn, gt, ex, ks, metrics, chunk_size))
    for prefix, items in (("warm_", warm_items), ("cold_", cold_items)):
        res = restricted_ranking(score_fn, truth, exclude, num_users, np.sort(items), ks, metrics, chunk_size)
        if res is not None:
            out.update({prefix + k: v for k, v in res.items()})
    return out
