"""Cold / warm ranking: ``restricted_ranking`` and ``cold_warm_ranking`` against a naive per-user loop that ranks only
the candidate items (float64, no ties), plus a hand-computed case."""

from __future__ import annotations

import itertools
import math

import numpy as np
import polars as pl
import pytest
import torch

from engine.evaluate.cold import cold_warm_ranking, restricted_ranking

METRICS = ["recall", "ndcg", "hr", "precision", "mrr"]


def naive(scores: np.ndarray, truth: list[tuple[int, int]], exclude: list[tuple[int, int]],
          candidates, ks) -> dict[str, float] | None:
    """Per user with a target among ``candidates``: rank the non-excluded candidates by score; |G_u| counts every
    target among the candidates (excluded ones too, as LightGCN does); mean over those users."""
    cand = set(int(c) for c in candidates)
    targets: dict[int, set[int]] = {}
    for u, i in truth:
        if i in cand:
            targets.setdefault(u, set()).add(i)
    if not targets:
        return None
    seen: dict[int, set[int]] = {}
    for u, i in exclude:
        seen.setdefault(u, set()).add(i)
    sums = {f"{m}@{k}": 0.0 for m in METRICS for k in ks}
    for u, g in targets.items():
        ranked = sorted((i for i in cand if i not in seen.get(u, set())), key=lambda i: -scores[u, i])
        for k in ks:
            hits = [1.0 if i in g else 0.0 for i in ranked[:k]]
            dcg = sum(h / math.log2(r + 2) for r, h in enumerate(hits))
            idcg = sum(1 / math.log2(r + 2) for r in range(min(len(g), k)))
            first = next((r + 1 for r, h in enumerate(hits) if h), None)
            sums[f"recall@{k}"] += sum(hits) / len(g)
            sums[f"ndcg@{k}"] += dcg / idcg
            sums[f"hr@{k}"] += float(sum(hits) > 0)
            sums[f"precision@{k}"] += sum(hits) / k
            sums[f"mrr@{k}"] += 1 / first if first else 0.0
    return {key: v / len(targets) for key, v in sums.items()}


def frame(pairs) -> pl.DataFrame:
    return pl.DataFrame({"user": [u for u, _ in pairs], "item": [i for _, i in pairs]},
                        schema={"user": pl.Int64, "item": pl.Int64})


def random_case(seed, num_users=9, num_items=30, num_cold=8):
    rng = np.random.default_rng(seed)
    scores = rng.standard_normal((num_users, num_items))  # float64, ties have probability 0
    cold = np.sort(rng.choice(num_items, num_cold, replace=False))
    warm = np.setdiff1d(np.arange(num_items), cold)
    exclude = [(u, int(i)) for u in range(num_users) for i in rng.choice(warm, 6, replace=False)]
    truth = [(u, int(i)) for u in range(num_users - 1) for i in rng.choice(num_items, 4, replace=False)]
    truth.append((1, exclude[6][1]))  # a target that is also excluded (user 1's first training item)
    return scores, truth, exclude, cold, warm


def assert_same(got, want):
    assert got is not None and set(got) == set(want)
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-12), key


@pytest.mark.parametrize("seed, chunk", list(itertools.product(range(4), [1, 4, 100])))
def test_cold_warm_ranking_matches_naive(seed, chunk):
    scores, truth, exclude, cold, warm = random_case(seed)
    t = torch.from_numpy(scores)
    ks = [1, 3, 10]
    got = cold_warm_ranking(lambda users: t[users], frame(truth), frame(exclude), 9, 30, cold, warm, ks, METRICS,
                            chunk)
    everything = naive(scores, truth, exclude, range(30), ks)
    warm_want = naive(scores, truth, exclude, warm, ks)
    cold_want = naive(scores, truth, exclude, cold, ks)
    assert set(got) == set(everything) | {"warm_" + k for k in warm_want} | {"cold_" + k for k in cold_want}
    for key in everything:
        assert got[key] == pytest.approx(everything[key], abs=1e-12), key
        assert got["warm_" + key] == pytest.approx(warm_want[key], abs=1e-12), key
        assert got["cold_" + key] == pytest.approx(cold_want[key], abs=1e-12), key


@pytest.mark.parametrize("seed", range(3))
def test_restricted_ranking_matches_naive(seed):
    scores, truth, exclude, cold, _ = random_case(seed)
    t = torch.from_numpy(scores)
    # candidates need not be cold items: any sorted subset
    candidates = np.sort(np.random.default_rng(seed + 10).choice(30, 12, replace=False))
    got = restricted_ranking(lambda users: t[users], frame(truth), frame(exclude), 9, candidates, [2, 5, 20],
                             ["ndcg", "recall", "mrr"], chunk_size=3)
    want = naive(scores, truth, exclude, candidates, [2, 5, 20])
    assert_same(got, {k: v for k, v in want.items() if k.split("@")[0] in ("ndcg", "recall", "mrr")})
    # no exclusion at all
    got = restricted_ranking(lambda users: t[users], frame(truth), None, 9, candidates, [3], METRICS)
    assert_same(got, naive(scores, truth, [], candidates, [3]))


def test_hand_computed_case():
    """5 items, 3 and 4 cold; 2 users.

    user 0: scores 0.9 0.1 0.5 0.4 0.8, trained on item 0, targets 2 (warm) and 3 (cold)
    user 1: scores 0.1 0.2 0.3 0.9 0.7, trained on item 1, targets 4 (cold)
    """
    scores = torch.tensor([[0.9, 0.1, 0.5, 0.4, 0.8], [0.1, 0.2, 0.3, 0.9, 0.7]], dtype=torch.float64)
    truth, exclude = frame([(0, 2), (0, 3), (1, 4)]), frame([(0, 0), (1, 1)])
    got = cold_warm_ranking(lambda u: scores[u], truth, exclude, 2, 5, np.array([4, 3]), np.array([0, 1, 2]),
                            [1, 2], ["recall", "ndcg", "mrr"])
    # all items: user 0 ranks 4, 2, 3, 1 -> hits at ranks 2 and 3; user 1 ranks 3, 4, 2, 0 -> hit at rank 2
    l2 = 1 / math.log2(3)
    assert got["recall@1"] == 0.0 and got["mrr@1"] == 0.0
    assert got["recall@2"] == pytest.approx((1 / 2 + 1) / 2)
    assert got["ndcg@2"] == pytest.approx((l2 / (1 + l2) + l2 / 1) / 2)
    assert got["mrr@2"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    # warm: only user 0 has a warm target (item 2), ranked among {1, 2}: first
    assert got["warm_recall@1"] == 1.0 and got["warm_ndcg@2"] == 1.0 and got["warm_mrr@1"] == 1.0
    # cold (candidates 3 and 4): user 0 ranks 4, 3 -> hit at 2; user 1 ranks 3, 4 -> hit at 2
    assert got["cold_recall@1"] == 0.0
    assert got["cold_recall@2"] == 1.0
    assert got["cold_ndcg@2"] == pytest.approx(l2)
    assert got["cold_mrr@2"] == pytest.approx(0.5)


def test_no_cold_target_leaves_the_cold_metrics_out():
    scores = torch.arange(12, dtype=torch.float64).reshape(2, 6)
    truth, exclude = frame([(0, 1), (1, 2)]), frame([(0, 0)])
    assert restricted_ranking(lambda u: scores[u], truth, exclude, 2, np.array([4, 5]), [2], METRICS) is None
    got = cold_warm_ranking(lambda u: scores[u], truth, exclude, 2, 6, np.array([4, 5]), np.arange(4), [2], METRICS)
    assert not any(k.startswith("cold_") for k in got)
    assert {k for k in got if k.startswith("warm_")} == {f"warm_{m}@2" for m in METRICS}
    # warm candidates 0..3, items ranked by id descending: user 0 ranks 3, 2, 1 (0 excluded); user 1: 3, 2, 1, 0
    assert got["warm_recall@2"] == pytest.approx((0 + 1) / 2)
    # all items: user 0 ranks 5, 4, ...; user 1 too: no hit in the top 2
    assert got["recall@2"] == 0.0
    # an empty cold set is no candidate at all
    got_empty = cold_warm_ranking(lambda u: scores[u], truth, exclude, 2, 6, np.array([], dtype=np.int64),
                                  np.arange(6), [2], ["recall"])
    assert set(got_empty) == {"recall@2", "warm_recall@2"}


def test_score_fn_sees_every_item_and_is_not_modified():
    """The restricted view is a column selection of the full scores: ``score_fn`` always returns all items."""
    scores = torch.tensor(np.random.default_rng(0).standard_normal((3, 8)))
    original = scores.clone()
    shapes = []

    def score_fn(users):
        out = scores[users]
        shapes.append(tuple(out.shape))
        return out

    cold_warm_ranking(score_fn, frame([(0, 1), (1, 6), (2, 7)]), frame([(0, 6)]), 3, 8, np.array([6, 7]),
                      np.arange(6), [2], METRICS, chunk_size=2)
    assert all(s[1] == 8 for s in shapes)
    assert torch.equal(scores, original)
