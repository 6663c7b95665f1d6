"""ANN blocking: neighbours and pair completeness on hand-made vectors."""

from __future__ import annotations

import numpy as np
import pytest

from engine_linkage.blocking import knn_candidates
from engine_linkage.metrics import pair_completeness, pair_keys, reduction_ratio


def unit(*angles):
    return np.array([[np.cos(a), np.sin(a)] for a in angles], dtype=np.float32)


def test_linkage_candidates_and_pair_completeness_by_hand():
    left = unit(0.0, 1.0, 2.0)
    right = unit(0.05, 1.6, 2.1, 3.0)
    li, ri = knn_candidates(left, right, k=1)
    # nearest right of each left: 0 -> 0 (0.05), 1 -> 1 (1.6 vs 0.05: 0.6 < 0.95), 2 -> 2 (2.1)
    assert list(zip(li.tolist(), ri.tolist())) == [(0, 0), (1, 1), (2, 2)]
    true = pair_keys(np.array([0, 1, 2]), np.array([0, 1, 3]), 4)  # 2 <-> 3 is missed at k=1
    assert pair_completeness(pair_keys(li, ri, 4), true) == pytest.approx(2 / 3)
    li, ri = knn_candidates(left, right, k=2)  # 2's second neighbour is 1 (1.6), not 3 (3.0)
    assert set(zip(li.tolist(), ri.tolist())) == {(0, 0), (0, 1), (1, 1), (1, 0), (2, 2), (2, 1)}
    li, ri = knn_candidates(left, right, k=3)
    assert (2, 3) in set(zip(li.tolist(), ri.tolist())) and li.size == 9
    assert pair_completeness(pair_keys(li, ri, 4), true) == 1.0
    assert reduction_ratio(li.size, 3, 4) == pytest.approx(0.25)


def test_dedup_candidates_are_unordered_without_self_pairs():
    x = unit(0.0, 0.1, 3.0, 3.1)
    li, ri = knn_candidates(x, None, k=1)
    assert list(zip(li.tolist(), ri.tolist())) == [(0, 1), (2, 3)]


def test_k_larger_than_the_table():
    li, ri = knn_candidates(unit(0.0), unit(0.0, 1.0), k=10)
    assert li.tolist() == [0, 0] and ri.tolist() == [0, 1]
