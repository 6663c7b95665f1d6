"""Per-user top-k ranking metrics computed from a hits matrix (the LightGCN / RecBole full-ranking protocol).

Given, for ``b`` users, a boolean matrix ``hits[u, r]`` (``r`` is the 0-based position in the user's ranked list: is
the item at rank ``r + 1`` relevant?) and the number of relevant items ``|G_u|`` of each user, the metrics at cut-off
``k`` are:

.. math::

    h_u(k)             &= \\sum_{r=1}^{k} \\mathrm{hit}_u(r)

    \\mathrm{recall@}k    &= h_u(k) / |G_u|

    \\mathrm{precision@}k &= h_u(k) / k

    \\mathrm{hr@}k        &= \\mathbb{1}[h_u(k) > 0]

    \\mathrm{ndcg@}k      &= \\frac{\\sum_{r=1}^{k} \\mathrm{hit}_u(r) / \\log_2(r + 1)}
                             {\\sum_{r=1}^{\\min(|G_u|, k)} 1 / \\log_2(r + 1)}

    \\mathrm{mrr@}k       &= 1 / r^*_u \\text{ if the first hit } r^*_u \\le k \\text{, else } 0

Ranks are 1-based. Precision divides by ``k`` even when fewer than ``k`` items could be ranked, and the ideal DCG
assumes every relevant item could be placed at the top (as in LightGCN and RecBole).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["METRICS", "rank_metrics", "check_ks", "check_metrics"]

#: Names accepted by :func:`rank_metrics`, in their default order.
METRICS: tuple[str, ...] = ("recall", "ndcg", "hr", "precision", "mrr")


def check_ks(ks: Sequence[int]) -> list[int]:
    """Validate cut-offs: a non-empty sequence of positive ints. Returns them as a list (order kept)."""
    ks = list(ks)
    if not ks:
        raise ValueError("ks must name at least one cut-off, e.g. ks=[10, 20]")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"every cut-off in ks must be a positive int (got {k!r})")
    return ks


def check_metrics(metrics: Sequence[str]) -> list[str]:
    """Validate metric names (case-insensitive) against :data:`METRICS`. Returns them lower-cased."""
    if isinstance(metrics, str):
        metrics = [metrics]
    out = [m.lower() for m in metrics]
    if not out:
        raise ValueError(f"metrics must name at least one metric; known: {', '.join(METRICS)}")
    unknown = [m for m in out if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(map(repr, unknown))}; known: {', '.join(METRICS)}")
    return out


def _float_dtype(device: torch.device) -> torch.dtype:
    # float64 everywhere except on backends that lack it.
    return torch.float32 if device.type == "mps" else torch.float64


def rank_metrics(
    hits: Tensor,
    num_relevant: Tensor,
    ks: Sequence[int],
    metrics: Sequence[str] = METRICS,
) -> dict[str, Tensor]:
    """Per-user ranking metrics at each cut-off, from a hits matrix.

    See the module docstring for the formulas.

    Args:
        hits: ``BoolTensor [b, K]``; ``hits[u, r]`` says whether the item ranked ``r + 1`` for user ``u`` is relevant.
            ``K`` is normally ``max(ks)``; when it is smaller (fewer items than the cut-off), the missing positions
            count as misses.
        num_relevant: ``LongTensor [b]``, the size of each user's ground-truth set ``|G_u|``. Rows with
            ``|G_u| = 0`` get ``0`` for every metric (callers normally drop such users beforehand).
        ks: cut-offs, positive ints.
        metrics: any of ``"recall"``, ``"ndcg"``, ``"hr"``, ``"precision"``, ``"mrr"`` (default: all).

    Returns:
        ``{"<metric>@<k>": Tensor[b]}`` for every metric and cut-off, in float64 (float32 on MPS), on the device of
        ``hits``; ordered by metric, then by cut-off.
    """
    ks = check_ks(ks)
    metrics = check_metrics(metrics)
    if hits.dim() != 2:
        raise ValueError(f"hits must be 2-D [users, K] (got shape {tuple(hits.shape)})")
    num_relevant = torch.as_tensor(num_relevant, device=hits.device)
    if num_relevant.shape != hits.shape[:1]:
        raise ValueError(f"num_relevant must have shape [{hits.shape[0]}] (got {tuple(num_relevant.shape)})")

    device = hits.device
    dtype = _float_dtype(device)
    b, width = hits.shape
    max_k = max(ks)
    hits_f = hits.to(dtype)
    if width < max_k:  # pad with misses so every cut-off can be sliced
        hits_f = torch.cat([hits_f, hits_f.new_zeros(b, max_k - width)], dim=1)
    else:
        hits_f = hits_f[:, :max_k]

    n_rel = num_relevant.to(torch.long)
    valid = n_rel > 0
    denom = n_rel.clamp_min(1).to(dtype)
    cum_hits = hits_f.cumsum(dim=1)  # [b, max_k]: h_u(k) at column k - 1

    # 1 / log2(r + 1) for r = 1..max_k, and the ideal DCG table idcg[n] = sum_{r<=n} of it (idcg[0] = 0).
    discount = 1.0 / torch.log2(torch.arange(2, max_k + 2, device=device, dtype=dtype))
    cum_dcg = (hits_f * discount).cumsum(dim=1)
    idcg_table = torch.cat([discount.new_zeros(1), discount.cumsum(0)])

    # 1-based rank of the first hit; max_k + 1 ("never") when a row has none.
    any_hit = hits_f.any(dim=1)
    first = torch.where(any_hit, hits_f.argmax(dim=1) + 1, torch.full_like(n_rel, max_k + 1))

    out: dict[str, Tensor] = {}
    for metric in metrics:
        for k in ks:
            h = cum_hits[:, k - 1]
            if metric == "recall":
                value = h / denom
            elif metric == "precision":
                value = h / k
            elif metric == "hr":
                value = (h > 0).to(dtype)
            elif metric == "ndcg":
                value = cum_dcg[:, k - 1] / idcg_table[n_rel.clamp(1, k)]
            else:  # mrr
                value = torch.where(first <= k, 1.0 / first.to(dtype), torch.zeros((), dtype=dtype, device=device))
            out[f"{metric}@{k}"] = torch.where(valid, value, torch.zeros((), dtype=dtype, device=device))
    return out
