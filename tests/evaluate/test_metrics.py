"""rank_metrics: hand-computed values, and a naive per-user loop on random hits."""

import itertools
import math

import pytest
import torch

from engine.evaluate.metrics import METRICS, rank_metrics

# Discounts 1 / log2(r + 1) for ranks r = 1..5:
D1, D2, D3, D4, D5 = 1.0, 0.6309297535714575, 0.5, 0.43067655807339306, 0.38685280723454163


def test_discounts_written_out_are_right():
    assert [D1, D2, D3, D4, D5] == pytest.approx([1 / math.log2(r + 1) for r in range(1, 6)], abs=1e-15)


def test_hand_computed():
    hits = torch.tensor(
        [
            [0, 1, 0, 1, 0],  # A: |G| = 2, hits at ranks 2 and 4
            [1, 0, 0, 1, 0],  # B: |G| = 2, hits at ranks 1 and 4
            [0, 0, 0, 0, 0],  # C: |G| = 3, no hit
            [1, 1, 1, 0, 0],  # D: |G| = 5, hits at ranks 1, 2, 3
        ],
        dtype=torch.bool,
    )
    out = rank_metrics(hits, torch.tensor([2, 2, 3, 5]), ks=[1, 3, 5])
    assert list(out) == [f"{m}@{k}" for m in METRICS for k in (1, 3, 5)]
    for v in out.values():
        assert v.dtype == torch.float64 and v.shape == (4,)

    expected = {
        # recall = hits in top k / |G|
        "recall@1": [0, 1 / 2, 0, 1 / 5],
        "recall@3": [1 / 2, 1 / 2, 0, 3 / 5],
        "recall@5": [2 / 2, 2 / 2, 0, 3 / 5],
        # precision = hits in top k / k
        "precision@1": [0, 1, 0, 1],
        "precision@3": [1 / 3, 1 / 3, 0, 3 / 3],
        "precision@5": [2 / 5, 2 / 5, 0, 3 / 5],
        # hr = any hit in top k
        "hr@1": [0, 1, 0, 1],
        "hr@3": [1, 1, 0, 1],
        "hr@5": [1, 1, 0, 1],
        # mrr = 1 / rank of the first hit, if within k
        "mrr@1": [0, 1, 0, 1],
        "mrr@3": [1 / 2, 1, 0, 1],
        "mrr@5": [1 / 2, 1, 0, 1],
        # ndcg = DCG / IDCG, IDCG summing min(|G|, k) discounts:
        #   A@3: D2 / (D1 + D2) = 0.6309 / 1.6309 = 0.38685      A@5: (D2 + D4) / (D1 + D2) = 1.06161 / 1.6309 = 0.65092
        #   B@3: D1 / (D1 + D2) = 1 / 1.6309 = 0.61315           B@5: (D1 + D4) / (D1 + D2) = 1.43068 / 1.6309 = 0.87722
        #   D@1: 1; D@3: (D1 + D2 + D3) / (D1 + D2 + D3) = 1;    D@5: 2.13093 / (D1 + ... + D5 = 2.94846) = 0.72273
        "ndcg@1": [0, 1, 0, 1],
        "ndcg@3": [0.38685280723454163, 0.6131471927654584, 0, 1],
        "ndcg@5": [0.6509209298071326, 0.8772153153380493, 0, 0.7227265726449519],
    }
    for key, want in expected.items():
        assert out[key].tolist() == pytest.approx(want, abs=1e-12), key
    # the hand numbers agree with the formulas written with the discounts
    assert expected["ndcg@5"][0] == pytest.approx((D2 + D4) / (D1 + D2), abs=1e-15)
    assert expected["ndcg@5"][3] == pytest.approx((D1 + D2 + D3) / (D1 + D2 + D3 + D4 + D5), abs=1e-15)


def test_subset_of_metrics_and_case():
    out = rank_metrics(torch.tensor([[True, False]]), torch.tensor([1]), ks=[2], metrics=("NDCG", "hr"))
    assert list(out) == ["ndcg@2", "hr@2"]
    assert out["ndcg@2"].item() == 1.0


def test_cutoff_beyond_hits_width_counts_as_misses():
    # Only 2 ranked items but k = 4: precision still divides by 4, IDCG uses min(|G|, 4) = 3 discounts.
    out = rank_metrics(torch.tensor([[False, True]]), torch.tensor([3]), ks=[4])
    assert out["precision@4"].item() == pytest.approx(1 / 4)
    assert out["recall@4"].item() == pytest.approx(1 / 3)
    assert out["ndcg@4"].item() == pytest.approx(D2 / (D1 + D2 + D3))
    assert out["mrr@4"].item() == pytest.approx(1 / 2)


def test_users_without_relevant_items_get_zero():
    out = rank_metrics(torch.tensor([[True, True]]), torch.tensor([0]), ks=[2])
    assert all(v.item() == 0 for v in out.values())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(ks=[]), "at least one"),
        (dict(ks=[0]), "positive int"),
        (dict(ks=[2.0]), "positive int"),
        (dict(ks=[2], metrics=("ndgc",)), "unknown metric.*known: recall"),
        (dict(ks=[2], metrics=()), "at least one"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        rank_metrics(torch.zeros(1, 2, dtype=torch.bool), torch.tensor([1]), **kwargs)


def naive_metrics(hit_row: list[bool], n_rel: int, k: int) -> dict[str, float]:
    """Obviously-correct per-user metrics, straight from the definitions."""
    top = hit_row[:k]
    h = sum(top)
    ranks = [r + 1 for r, is_hit in enumerate(top) if is_hit]
    dcg = sum(1 / math.log2(r + 1) for r in ranks)
    idcg = sum(1 / math.log2(r + 1) for r in range(1, min(n_rel, k) + 1))
    return {
        "recall": h / n_rel,
        "precision": h / k,
        "hr": float(h > 0),
        "ndcg": dcg / idcg,
        "mrr": 1 / ranks[0] if ranks else 0.0,
    }


@pytest.mark.parametrize("b, width, ks", list(itertools.product([1, 7, 50], [1, 5, 20], [[1], [3, 10], [20, 5, 1]])))
def test_matches_naive_loop(b, width, ks):
    g = torch.Generator().manual_seed(b * 100 + width)
    hits = torch.rand(b, width, generator=g) < 0.3
    n_rel = torch.randint(1, 12, (b,), generator=g)
    n_rel = torch.maximum(n_rel, hits.sum(1))  # cannot hit more items than are relevant
    out = rank_metrics(hits, n_rel, ks)
    for u, k in itertools.product(range(b), ks):
        want = naive_metrics(hits[u].tolist(), int(n_rel[u]), k)
        for m in METRICS:
            assert out[f"{m}@{k}"][u].item() == pytest.approx(want[m], abs=1e-12), (u, m, k)
