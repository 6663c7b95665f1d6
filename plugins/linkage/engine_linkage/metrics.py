"""Linkage metrics: precision / recall / F1 of the match class, the max-F1 threshold, blocking pair completeness
and reduction ratio, connected components and pairwise cluster F1.

Conventions: a pair is predicted a match when ``score >= threshold``. ``missed`` counts true matches that never
reached the classifier (dropped by blocking): they are false negatives. Undefined ratios (0 / 0) are 0.
"""

from __future__ import annotations

import numpy as np

__all__ = ["prf", "classify", "best_threshold", "pair_keys", "pair_completeness", "reduction_ratio",
           "connected_components", "cluster_prf"]


def _ratio(a: float, b: float) -> float:
    return float(a) / float(b) if b else 0.0


def prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    p, r = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return {"precision": p, "recall": r, "f1": _ratio(2 * tp, 2 * tp + fp + fn)}


def classify(scores: np.ndarray, labels: np.ndarray, threshold: float, missed: int = 0) -> dict[str, float]:
    """Precision, recall, F1 of ``scores >= threshold`` against 0/1 ``labels`` (+ ``missed`` false negatives)."""
    pred = np.asarray(scores) >= threshold
    labels = np.asarray(labels).astype(bool)
    tp = int((pred & labels).sum())
    return prf(tp, int((pred & ~labels).sum()), int((~pred & labels).sum()) + missed)


def best_threshold(scores: np.ndarray, labels: np.ndarray, missed: int = 0) -> tuple[float, dict[str, float]]:
    """The threshold of maximal F1 over every cut between distinct scores, and its metrics.

    The threshold returned is halfway between the lowest score kept and the next lower score (so a slightly
    shifted score on another split is classified the same way); with no positive at all it is above every score.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64)
    if scores.size == 0:
        return float("inf"), prf(0, 0, missed)
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    last = np.r_[s[1:] != s[:-1], True]  # the last index of each run of equal scores
    tp = np.cumsum(y)[last]
    fp = np.cumsum(1 - y)[last]
    total = int(y.sum()) + missed
    f1 = 2 * tp / np.maximum(2 * tp + fp + (total - tp), 1)
    k = int(np.argmax(f1))
    if f1[k] == 0:
        return float(s[0]) + 1.0, prf(0, 0, total)
    cut_scores = s[last]
    threshold = float(cut_scores[k]) if k + 1 >= cut_scores.size else float((cut_scores[k] + cut_scores[k + 1]) / 2)
    return threshold, prf(int(tp[k]), int(fp[k]), int(total - tp[k]))


def pair_keys(left: np.ndarray, right: np.ndarray, num_right: int) -> np.ndarray:
    """One int64 per (left, right) pair, for set operations."""
    return np.asarray(left, dtype=np.int64) * int(num_right) + np.asarray(right, dtype=np.int64)


def pair_completeness(candidate_keys: np.ndarray, true_keys: np.ndarray) -> float:
    """Share of true matches that blocking kept as candidates."""
    true_keys = np.unique(true_keys)
    return _ratio(int(np.isin(true_keys, candidate_keys).sum()), true_keys.size)


def reduction_ratio(num_candidates: int, num_left: int, num_right: int | None = None) -> float:
    """``1 - candidates / all pairs``; all pairs are ``L * R``, or ``n (n - 1) / 2`` for deduplication."""
    total = num_left * (num_left - 1) // 2 if num_right is None else num_left * num_right
    return 1.0 - _ratio(num_candidates, total) if total else 0.0


def connected_components(num_nodes: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Component label (the smallest node id of its component) of each node, for edges ``a[i] - b[i]``."""
    parent = np.arange(num_nodes)

    def find(x: int) -> int:
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    for u, v in zip(np.asarray(a).tolist(), np.asarray(b).tolist()):
        ru, rv = find(u), find(v)
        if ru != rv:
            parent[max(ru, rv)] = min(ru, rv)
    return np.asarray([find(i) for i in range(num_nodes)], dtype=np.int64)


def _pairs_within(counts: np.ndarray) -> int:
    counts = counts.astype(np.int64)
    return int((counts * (counts - 1) // 2).sum())


def cluster_prf(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Pairwise precision / recall / F1 of a clustering: over all record pairs, "same predicted cluster" against
    "same true entity"."""
    predicted, truth = np.asarray(predicted), np.asarray(truth)
    _, joint = np.unique(np.stack([predicted, truth], 1), axis=0, return_counts=True)
    tp = _pairs_within(joint)
    pred_pairs = _pairs_within(np.unique(predicted, return_counts=True)[1])
    true_pairs = _pairs_within(np.unique(truth, return_counts=True)[1])
    return prf(tp, pred_pairs - tp, true_pairs - tp)
