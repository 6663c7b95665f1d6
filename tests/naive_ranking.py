"""The naive reference of the ranking metrics, shared by the task tests: sort each user's candidates by score in
plain Python and apply the definitions (LightGCN / RecBole: recall over min-free |G_u|, NDCG with the ideal DCG of
min(|G_u|, k) hits, HR, precision over k, MRR of the first hit in the top k)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

__all__ = ["user_metrics", "naive_ranking"]


def user_metrics(ranked: list[int], relevant: set[int], ks: Iterable[int]) -> dict[str, float]:
    """``recall``, ``ndcg``, ``hr``, ``precision`` and ``mrr`` at each k of one user's ranked list."""
    out: dict[str, float] = {}
    for k in ks:
        hits = [1.0 if i in relevant else 0.0 for i in ranked[:k]]
        dcg = sum(h / math.log2(r + 2) for r, h in enumerate(hits))
        idcg = sum(1 / math.log2(r + 2) for r in range(min(len(relevant), k)))
        first = next((r + 1 for r, h in enumerate(hits) if h), None)
        out.update({f"recall@{k}": sum(hits) / len(relevant), f"ndcg@{k}": dcg / idcg,
                    f"hr@{k}": float(sum(hits) > 0), f"precision@{k}": sum(hits) / k,
                    f"mrr@{k}": 1 / first if first else 0.0})
    return out


def naive_ranking(scores, truth: Mapping[int, Iterable[int]], exclude: Mapping[int, Iterable[int]],
                  candidates: Iterable[int], ks: Iterable[int]) -> dict[str, float] | None:
    """Mean over users of :func:`user_metrics`: each user ranks the ``candidates`` not in ``exclude[u]`` by
    ``scores[u, i]``; ``G_u`` is ``truth[u]`` among the candidates; users with an empty ``G_u`` are skipped (None
    when every user is)."""
    cand = {int(c) for c in candidates}
    ks = list(ks)
    sums: dict[str, float] = {}
    users = 0
    for u in range(len(scores)):
        relevant = {int(i) for i in truth.get(u, ())} & cand
        if not relevant:
            continue
        users += 1
        excluded = {int(i) for i in exclude.get(u, ())}
        ranked = sorted((i for i in cand if i not in excluded), key=lambda i: -scores[u][i])
        for key, value in user_metrics(ranked, relevant, ks).items():
            sums[key] = sums.get(key, 0.0) + value
    return {key: value / users for key, value in sums.items()} if users else None
