"""Linkage metrics against hand-computed cases."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from engine_linkage.metrics import (best_threshold, classify, cluster_prf, connected_components, pair_completeness,
                                    pair_keys, prf, reduction_ratio)


def test_prf_by_hand():
    assert prf(3, 1, 2) == {"precision": 0.75, "recall": 0.6, "f1": pytest.approx(2 * 3 / (6 + 1 + 2))}
    assert prf(0, 0, 0) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_classify_counts_missed_as_false_negatives():
    scores = np.array([0.9, 0.8, 0.4, 0.2])
    labels = np.array([1, 0, 1, 0])
    # >= 0.5: tp 1 (0.9), fp 1 (0.8), fn 1 (0.4) + 2 missed
    m = classify(scores, labels, 0.5, missed=2)
    assert m["precision"] == 0.5 and m["recall"] == pytest.approx(1 / 4)
    assert m["f1"] == pytest.approx(2 / (2 + 1 + 3))


def test_best_threshold_by_hand():
    scores = np.array([0.9, 0.8, 0.7, 0.3, 0.1])
    labels = np.array([1, 1, 0, 1, 0])
    t, m = best_threshold(scores, labels)
    # cuts: top1 f1=2/4, top2 f1=4/5, top3 6/8... top4: tp3 fp1 fn0 -> 6/7 = 0.857 (best), top5 6/8
    assert m["f1"] == pytest.approx(6 / 7)
    assert t == pytest.approx((0.3 + 0.1) / 2)
    assert classify(scores, labels, t)["f1"] == pytest.approx(m["f1"])


def test_best_threshold_matches_brute_force_with_ties_and_missed():
    rng = np.random.default_rng(0)
    for _ in range(20):
        scores = rng.integers(0, 6, size=30) / 5.0
        labels = rng.integers(0, 2, size=30)
        missed = int(rng.integers(0, 4))
        t, m = best_threshold(scores, labels, missed)
        brute = max(classify(scores, labels, c, missed)["f1"] for c in np.unique(scores))
        assert m["f1"] == pytest.approx(brute)
        assert classify(scores, labels, t, missed)["f1"] == pytest.approx(brute)


def test_best_threshold_without_positives_predicts_nothing():
    t, m = best_threshold(np.array([0.5, 0.4]), np.array([0, 0]))
    assert t > 0.5 and m["f1"] == 0.0


def test_pair_completeness_and_reduction_ratio_by_hand():
    # 3 x 4 tables; candidates (0,0) (0,1) (1,2) (2,3); true links (0,1) (1,1) (2,3)
    cand = pair_keys(np.array([0, 0, 1, 2]), np.array([0, 1, 2, 3]), 4)
    true = pair_keys(np.array([0, 1, 2]), np.array([1, 1, 3]), 4)
    assert pair_completeness(cand, true) == pytest.approx(2 / 3)
    assert reduction_ratio(4, 3, 4) == pytest.approx(1 - 4 / 12)
    assert reduction_ratio(3, 5) == pytest.approx(1 - 3 / 10)  # dedup: n (n - 1) / 2 pairs


def test_connected_components():
    comp = connected_components(6, np.array([0, 4, 2]), np.array([1, 1, 3]))
    assert comp.tolist() == [0, 0, 2, 2, 0, 5]


def test_cluster_prf_against_brute_force():
    predicted = np.array([0, 0, 0, 1, 1, 2])
    truth = np.array([7, 7, 8, 8, 8, 9])
    pairs = list(itertools.combinations(range(6), 2))
    same_p = {p for p in pairs if predicted[p[0]] == predicted[p[1]]}
    same_t = {p for p in pairs if truth[p[0]] == truth[p[1]]}
    tp = len(same_p & same_t)
    m = cluster_prf(predicted, truth)
    assert m["precision"] == pytest.approx(tp / len(same_p))
    assert m["recall"] == pytest.approx(tp / len(same_t))
    assert math.isclose(m["f1"], 2 * tp / (len(same_p) + len(same_t)))
