"""Full-ranking evaluation: score every item for every user, mask training items, take the top k.

This is the protocol of LightGCN (He et al., 2020, https://arxiv.org/abs/2002.02126) and RecBole's "full" mode:
no negative sampling, every item not seen in training is a candidate. Users are processed in chunks, so peak memory
is ``O(chunk_size * num_items)`` whatever the number of users.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch
from torch import Tensor

from ..errors import DataError
from .metrics import METRICS, check_ks, check_metrics, rank_metrics

__all__ = ["ItemSets", "full_ranking", "topk_items"]


def _as_long(x: Tensor | np.ndarray | Sequence[int], name: str) -> Tensor:
    if not isinstance(x, Tensor):
        x = np.asarray(x)
        x = torch.as_tensor(x if x.flags.writeable else x.copy())  # polars hands out read-only views
    t = x
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-D (got shape {tuple(t.shape)})")
    if t.numel() and (t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool):
        raise ValueError(f"{name} must hold integer ids (got dtype {t.dtype})")
    return t.to(device="cpu", dtype=torch.long)


@dataclass(frozen=True)
class ItemSets:
    """A set of item ids per user, stored in CSR form on the CPU.

    Row ``u`` is ``indices[indptr[u]:indptr[u + 1]]``: strictly increasing item ids.

    Attributes:
        indptr: ``LongTensor [num_users + 1]``, non-decreasing, ``indptr[0] = 0``.
        indices: ``LongTensor [nnz]``, item ids, sorted and unique within each row.
    """

    indptr: Tensor
    indices: Tensor

    def __post_init__(self) -> None:
        if self.indptr.dim() != 1 or self.indptr.numel() < 1 or self.indices.dim() != 1:
            raise ValueError("ItemSets needs a 1-D indptr of length num_users + 1 and a 1-D indices")
        if int(self.indptr[0]) != 0 or int(self.indptr[-1]) != self.indices.numel():
            raise ValueError("ItemSets.indptr must start at 0 and end at len(indices)")

    @classmethod
    def from_pairs(
        cls, users: Tensor | np.ndarray | Sequence[int], items: Tensor | np.ndarray | Sequence[int], num_users: int
    ) -> ItemSets:
        """Build from parallel arrays of (user, item) pairs; duplicate pairs are dropped, rows come out sorted.

        Args:
            users: user ids in ``[0, num_users)``.
            items: item ids, ``>= 0``, same length as ``users``.
            num_users: number of rows; users without pairs get an empty row.
        """
        u = _as_long(users, "users")
        i = _as_long(items, "items")
        if u.numel() != i.numel():
            raise ValueError(f"users and items differ in length ({u.numel()} vs {i.numel()})")
        if num_users < 0:
            raise ValueError(f"num_users must be >= 0 (got {num_users})")
        if u.numel():
            if int(u.min()) < 0 or int(u.max()) >= num_users:
                raise DataError(f"user ids must lie in [0, {num_users}) (got {int(u.min())}..{int(u.max())})")
            if int(i.min()) < 0:
                raise DataError(f"item ids must be >= 0 (got {int(i.min())})")
            width = int(i.max()) + 1
            key = torch.unique(u * width + i)  # sorted: by user, then by item
            u, i = key // width, key % width
        counts = torch.bincount(u, minlength=num_users)
        indptr = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
        return cls(indptr=indptr, indices=i)

    @classmethod
    def from_frame(cls, df: pl.DataFrame, num_users: int) -> ItemSets:
        """Build from a polars frame with integer columns ``user`` and ``item`` (other columns are ignored)."""
        missing = {"user", "item"} - set(df.columns)
        if missing:
            raise DataError(f"frame lacks column(s) {sorted(missing)}; has {df.columns}")
        return cls.from_pairs(df["user"].to_numpy(), df["item"].to_numpy(), num_users)

    @property
    def num_users(self) -> int:
        return self.indptr.numel() - 1

    @property
    def nnz(self) -> int:
        return self.indices.numel()

    def counts(self) -> Tensor:
        """``LongTensor [num_users]``: the size of each user's set."""
        return self.indptr[1:] - self.indptr[:-1]

    def rows(self, users: Tensor) -> tuple[Tensor, Tensor]:
        """The sets of ``users`` as a small CSR: ``(row_ptr [b + 1], cols [n])``; row ``j`` is user ``users[j]``."""
        counts, cols = self._gather(users)
        return torch.cat([counts.new_zeros(1), counts.cumsum(0)]), cols

    def coo(self, users: Tensor) -> tuple[Tensor, Tensor]:
        """The sets of ``users`` as coordinates ``(row, item)``, ``row`` being the position in ``users``.

        Ready for ``mask.index_put_((row, item), value)`` on a ``[len(users), num_items]`` matrix.
        """
        counts, cols = self._gather(users)
        return torch.repeat_interleave(torch.arange(counts.numel()), counts), cols

    def _gather(self, users: Tensor) -> tuple[Tensor, Tensor]:
        users = _as_long(users, "users")
        start = self.indptr[users]
        counts = self.indptr[users + 1] - start
        total = int(counts.sum())
        # position of each output element inside its row, then its offset in `indices`
        row_first = torch.repeat_interleave(counts.cumsum(0) - counts, counts, output_size=total)
        within = torch.arange(total) - row_first
        return counts, self.indices[torch.repeat_interleave(start, counts, output_size=total) + within]

    def __repr__(self) -> str:
        return f"ItemSets(num_users={self.num_users}, nnz={self.nnz})"


ScoreFn = Callable[[Tensor], Tensor]


def _score_chunk(
    score_fn: ScoreFn, users: Tensor, exclude: ItemSets | None, num_items: int | None, work: Tensor | None = None
) -> tuple[Tensor, Tensor | None]:
    """Scores of ``users`` with excluded items at ``-inf``, and the (possibly new) work buffer.

    ``score_fn``'s output is never written to (it may be a view of a cached matrix): masking happens on a copy, made
    into ``work`` when it fits (reusing one buffer avoids a fresh ``chunk x num_items`` allocation per chunk).
    """
    scores = score_fn(users)
    if scores.dim() != 2 or scores.shape[0] != users.numel() or (num_items and scores.shape[1] != num_items):
        want = f"[{users.numel()}, {num_items or 'num_items'}]"
        raise ValueError(f"score_fn returned shape {tuple(scores.shape)}; expected {want}")
    if exclude is None:
        return scores, work
    row, col = exclude.coo(users)
    if col.numel() and int(col.max()) >= scores.shape[1]:
        raise DataError(f"excluded item id {int(col.max())} >= num_items {scores.shape[1]}")
    neg_inf = torch.tensor(float("-inf"), dtype=scores.dtype, device=scores.device)
    index = (row.to(scores.device), col.to(scores.device))
    if work is None:
        return scores.index_put(index, neg_inf), None
    if (work.dtype, work.device, work.shape[1]) != (scores.dtype, scores.device, scores.shape[1]):
        work = torch.empty(work.shape[0], scores.shape[1], dtype=scores.dtype, device=scores.device)
    masked = work[: scores.shape[0]]
    masked.copy_(scores)
    return masked.index_put_(index, neg_inf), work


@torch.no_grad()
def topk_items(score_fn: ScoreFn, users: Tensor, k: int, exclude: ItemSets | None = None) -> tuple[Tensor, Tensor]:
    """Top-``k`` items for ``users`` (one batch, no chunking), with ``exclude``'s items scored ``-inf``.

    Returns ``(values [b, k'], indices [b, k'])`` from :func:`torch.topk` with ``k' = min(k, num_items)``.
    When a user has fewer than ``k'`` allowed items the tail holds excluded items with value ``-inf``.
    Ties are ordered as :func:`torch.topk` orders them (backend-dependent, not guaranteed stable).
    """
    scores, _ = _score_chunk(score_fn, _as_long(users, "users"), exclude, None)
    return torch.topk(scores, min(k, scores.shape[1]), dim=1)


@torch.no_grad()
def full_ranking(
    score_fn: ScoreFn,
    ground_truth: ItemSets,
    exclude: ItemSets | None,
    ks: Sequence[int],
    metrics: Sequence[str] = METRICS,
    chunk_size: int = 2048,
    users: Tensor | np.ndarray | Sequence[int] | None = None,
) -> dict[str, float]:
    """Mean top-k metrics over users, ranking every item (see :mod:`engine.evaluate.metrics` for the formulas).

    For each chunk of users: ``score_fn`` scores all items, ``exclude``'s items (usually the training interactions)
    are set to ``-inf``, the top ``max(ks)`` items are taken with :func:`torch.topk`, and each is a hit when it is in
    the user's ``ground_truth`` set (a boolean ``[chunk, num_items]`` mask built with ``index_put_``, gathered at the
    top-k indices). An item ranked at ``-inf`` is never a hit (this covers excluded items that are also in the ground
    truth, which reach the top k only when fewer than k items remain); ``|G_u|`` still counts them (as in LightGCN).

    Peak memory is about ``chunk_size * num_items * (2 * score bytes + 1)``: ``score_fn``'s output, one reused
    masked copy (only with ``exclude``) and one reused boolean ground-truth mask.

    Ties are ordered as :func:`torch.topk` orders them: backend-dependent and not guaranteed stable, so tied
    scores at the cut-off can make results differ slightly across devices.

    Args:
        score_fn: ``score_fn(user_ids: LongTensor [b]) -> FloatTensor [b, num_items]`` on any device; called under
            ``torch.no_grad()`` with CPU ids. Its output is not modified.
        ground_truth: relevant items per user (e.g. the test split).
        exclude: items to remove from the candidates per user (e.g. the train split), or ``None``.
        ks: cut-offs, e.g. ``[10, 20]``; cut-offs above ``num_items`` behave as if the extra ranks were misses.
        metrics: names from :data:`~engine.evaluate.metrics.METRICS` (default: all five).
        chunk_size: users scored per call of ``score_fn`` (default: 2048).
        users: users to evaluate (default: all). Users with no ground-truth item are always skipped.

    Returns:
        ``{"recall@20": ..., "ndcg@20": ..., ...}``: means over evaluated users, as Python floats, ordered by
        metric then cut-off.

    Raises:
        ValueError: on bad ``ks``, ``metrics``, ``chunk_size``, or no user to evaluate.
        DataError: on ids outside the score matrix.
    """
    ks = check_ks(ks)
    metrics = check_metrics(metrics)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 (got {chunk_size})")
    if exclude is not None and exclude.num_users != ground_truth.num_users:
        raise ValueError(f"exclude has {exclude.num_users} users, ground_truth {ground_truth.num_users}")

    num_relevant = ground_truth.counts()
    if users is None:
        users_t = torch.nonzero(num_relevant > 0).flatten()
    else:
        users_t = _as_long(users, "users")
        if users_t.numel() and (int(users_t.min()) < 0 or int(users_t.max()) >= ground_truth.num_users):
            raise DataError(f"users must lie in [0, {ground_truth.num_users})")
        users_t = users_t[num_relevant[users_t] > 0]
    if users_t.numel() == 0:
        raise ValueError("no user to evaluate: every selected user has an empty ground-truth set")

    max_k = max(ks)
    capacity = min(chunk_size, users_t.numel())
    num_items: int | None = None
    work: Tensor | None = torch.empty(capacity, 0) if exclude is not None else None  # sized on first use
    relevant: Tensor | None = None  # [capacity, num_items] bool, all False between chunks
    totals: dict[str, Tensor] = {}
    for start in range(0, users_t.numel(), chunk_size):
        chunk = users_t[start : start + chunk_size]
        scores, work = _score_chunk(score_fn, chunk, exclude, num_items, work)
        num_items, device = scores.shape[1], scores.device
        values, top = torch.topk(scores, min(max_k, num_items), dim=1)
        del scores

        row, col = ground_truth.coo(chunk)
        if int(col.max()) >= num_items:
            raise DataError(f"ground-truth item id {int(col.max())} >= num_items {num_items}")
        if relevant is None or relevant.device != device:
            relevant = torch.zeros(capacity, num_items, dtype=torch.bool, device=device)
        index = (row.to(device), col.to(device))
        relevant.index_put_(index, torch.tensor(True, device=device))
        hits = relevant[: chunk.numel()].gather(1, top) & (values != float("-inf"))
        relevant.index_put_(index, torch.tensor(False, device=device))  # reset only what was set

        per_user = rank_metrics(hits, num_relevant[chunk].to(device), ks, metrics)
        for key, v in per_user.items():
            totals[key] = totals.get(key, 0) + v.sum()
    n = users_t.numel()
    return {key: float(total.item()) / n for key, total in totals.items()}
