"""The re-ranker of the linkage scale benchmarks: ``engine_linkage.model.PairClassifier`` (per-field cosines and
presence flags, record cosine; an MLP) trained on labelled candidate pairs, then scoring candidate pairs in chunks.

``table`` / ``mask`` / ``x`` are the field vectors (``float16 [R, F, D]``), their presence (``bool [R, F]``) and the
unit record vectors (``float32 [R, D]``) of the records ``a`` and ``b`` point into: every record, or only those a
shard's pairs touch (``benchmarks/linkage_scale_ray.py``), with the same numbers either way.
"""

from __future__ import annotations

import numpy as np

from phases import release_free_memory


def pair_logits(clf, table, mask, x, a: np.ndarray, b: np.ndarray):
    """The classifier's logits of the pairs ``(a, b)`` (rows of ``table`` / ``mask`` / ``x``)."""
    import torch

    ia, ib = torch.from_numpy(a), torch.from_numpy(b)
    return clf(table[ia].float(), mask[ia], table[ib].float(), mask[ib], torch.from_numpy(x[a]), torch.from_numpy(x[b]))


def reranker_rows(train_mask: np.ndarray, args):
    """The candidate pairs the re-ranker trains on (at most ``--rerank-max-pairs``) and the generator it goes on with."""
    rows = np.flatnonzero(train_mask)
    g = np.random.default_rng(args.seed + 3)
    if rows.size > args.rerank_max_pairs:
        rows = np.sort(g.choice(rows, size=args.rerank_max_pairs, replace=False))
    return rows, g


def train_reranker(table, mask, x, a, b, y: np.ndarray, g, args, log):
    """``PairClassifier`` (per-field cosines and presence, record cosine) trained on the pairs ``(a, b)`` with labels
    ``y``, batches drawn by ``g``."""
    import torch
    import torch.nn.functional as F

    from engine_linkage.model import PairClassifier

    clf = PairClassifier(table.shape[1], x.shape[1], 0, 64)
    opt = torch.optim.Adam(clf.parameters(), lr=args.rerank_lr)
    y = torch.from_numpy(y.astype(np.float32))
    batch = int(np.clip(a.size // 50, 256, 4096))  # at least ~50 steps an epoch on small samples
    for epoch in range(args.rerank_epochs):
        total = []
        for step, idx in enumerate(np.array_split(g.permutation(a.size), max(1, a.size // batch))):
            loss = F.binary_cross_entropy_with_logits(pair_logits(clf, table, mask, x, a[idx], b[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total.append(loss.item())
            if step % 64 == 63:
                release_free_memory()
        log.append({"epoch": epoch, "bce": float(np.mean(total))})
        release_free_memory()
    return clf.eval()


def score_pairs(clf, table, mask, x, a, b, chunk: int = 8192) -> np.ndarray:
    """The match probability of each pair ``(a, b)``, ``chunk`` pairs at a time."""
    import torch

    out = np.empty(a.size, np.float64)
    with torch.no_grad():
        for step, i in enumerate(range(0, a.size, chunk)):
            out[i:i + chunk] = torch.sigmoid(pair_logits(clf, table, mask, x, a[i:i + chunk], b[i:i + chunk])).numpy()
            if step % 64 == 63:
                release_free_memory()
    return out


def rerank(table, mask, x, a, b, train_mask, labels, args, log) -> np.ndarray:
    """Re-score candidate pairs with ``PairClassifier`` trained on the candidates that touch a train record (labels
    known: a train entity's records are all known)."""
    rows, g = reranker_rows(train_mask, args)
    clf = train_reranker(table, mask, x, a[rows], b[rows], labels[rows], g, args, log)
    return score_pairs(clf, table, mask, x, a, b)
