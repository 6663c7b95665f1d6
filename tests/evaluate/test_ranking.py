"""ItemSets and full_ranking: hand-computed cases, and a naive float64 per-user reference on random data."""

import itertools
import math

import numpy as np
import polars as pl
import pytest
import torch

from engine.errors import DataError
from engine.evaluate import ItemSets, full_ranking, topk_items
from engine.evaluate.metrics import METRICS

# ---------------------------------------------------------------------------------------------------------------------
# ItemSets


def test_from_pairs_dedupes_and_sorts():
    sets = ItemSets.from_pairs(torch.tensor([2, 0, 2, 2, 0, 3]), torch.tensor([5, 1, 3, 5, 0, 9]), num_users=5)
    assert sets.indptr.tolist() == [0, 2, 2, 4, 5, 5]
    assert sets.indices.tolist() == [0, 1, 3, 5, 9]
    assert sets.counts().tolist() == [2, 0, 2, 1, 0]
    assert (sets.num_users, sets.nnz) == (5, 5)
    assert repr(sets) == "ItemSets(num_users=5, nnz=5)"


def test_rows_and_coo_for_a_chunk():
    sets = ItemSets.from_pairs([2, 0, 2, 0, 3], [5, 1, 3, 0, 9], num_users=5)
    users = torch.tensor([3, 1, 2, 0])
    row_ptr, cols = sets.rows(users)
    assert row_ptr.tolist() == [0, 1, 1, 3, 5]
    assert cols.tolist() == [9, 3, 5, 0, 1]
    rows, cols = sets.coo(users)
    assert rows.tolist() == [0, 2, 2, 3, 3]
    assert cols.tolist() == [9, 3, 5, 0, 1]
    empty_rows, empty_cols = sets.coo(torch.tensor([1, 4]))
    assert empty_rows.numel() == empty_cols.numel() == 0


def test_from_numpy_and_frame_agree():
    df = pl.DataFrame({"user": [1, 0, 1, 1], "item": [4, 2, 0, 4], "rating": [1.0, 2.0, 3.0, 4.0]})
    a = ItemSets.from_frame(df, num_users=3)
    b = ItemSets.from_pairs(np.array([1, 0, 1, 1]), np.array([4, 2, 0, 4]), num_users=3)
    assert a.indptr.tolist() == b.indptr.tolist() == [0, 1, 3, 3]
    assert a.indices.tolist() == b.indices.tolist() == [2, 0, 4]


def test_empty_pairs():
    sets = ItemSets.from_pairs(np.array([], dtype=np.int64), np.array([], dtype=np.int64), num_users=3)
    assert sets.counts().tolist() == [0, 0, 0]
    assert sets.nnz == 0


def test_bad_pairs():
    with pytest.raises(DataError, match=r"user ids must lie in \[0, 2\)"):
        ItemSets.from_pairs([0, 2], [0, 0], num_users=2)
    with pytest.raises(DataError, match="item ids must be >= 0"):
        ItemSets.from_pairs([0, 1], [0, -1], num_users=2)
    with pytest.raises(ValueError, match="differ in length"):
        ItemSets.from_pairs([0, 1], [0], num_users=2)
    with pytest.raises(ValueError, match="integer ids"):
        ItemSets.from_pairs([0.0], [1.0], num_users=2)
    with pytest.raises(DataError, match="lacks column"):
        ItemSets.from_frame(pl.DataFrame({"user": [0], "i": [0]}), num_users=1)


# ---------------------------------------------------------------------------------------------------------------------
# full_ranking: a hand-computed case
#
# user 0: scores [0.9, 0.1, 0.8, 0.3, 0.5], ground truth {2, 3}, nothing excluded
#         ranking 0, 2, 4, 3, 1 -> hits at ranks 2 and 4: [0, 1, 0, 1, 0]
# user 1: scores [0.2, 0.7, 0.6, 0.4, 0.0], ground truth {1, 4}, item 2 excluded
#         ranking 1, 3, 0, 4, (2 at -inf) -> hits at ranks 1 and 4: [1, 0, 0, 1, 0]
# user 2: no ground truth -> skipped (its scores would otherwise give all-ones metrics)
#
# With D(r) = 1 / log2(r + 1): D1 = 1, D2 = 0.63093, D4 = 0.43068; both users have IDCG@3 = IDCG@5 = D1 + D2 = 1.63093.
#   @1: u0 misses, u1 hits -> recall (0 + 1/2)/2 = 0.25, precision (0 + 1)/2 = 0.5, hr 0.5, mrr 0.5, ndcg 0.5
#   @3: one hit each     -> recall 0.5, precision 1/3, hr 1, mrr (1/2 + 1)/2 = 0.75,
#                           ndcg (D2/1.63093 + D1/1.63093)/2 = (0.38685 + 0.61315)/2 = 0.5
#   @5: two hits each    -> recall 1, precision 0.4, hr 1, mrr 0.75,
#                           ndcg ((D2 + D4) + (D1 + D4))/1.63093/2 = (0.65092 + 0.87722)/2 = 0.76407

HAND_SCORES = torch.tensor(
    [[0.9, 0.1, 0.8, 0.3, 0.5], [0.2, 0.7, 0.6, 0.4, 0.0], [0.1, 0.2, 0.3, 0.4, 0.5]], dtype=torch.float32
)
HAND_GT = ItemSets.from_pairs([0, 0, 1, 1], [2, 3, 1, 4], num_users=3)
HAND_EXCLUDE = ItemSets.from_pairs([1], [2], num_users=3)
HAND_EXPECTED = {
    "recall@1": 0.25, "recall@3": 0.5, "recall@5": 1.0,
    "ndcg@1": 0.5, "ndcg@3": 0.5, "ndcg@5": 0.7640681225725909,
    "hr@1": 0.5, "hr@3": 1.0, "hr@5": 1.0,
    "precision@1": 0.5, "precision@3": 1 / 3, "precision@5": 0.4,
    "mrr@1": 0.5, "mrr@3": 0.75, "mrr@5": 0.75,
}  # fmt: skip


@pytest.mark.parametrize("chunk_size", [1, 2, 2048])
def test_hand_computed(chunk_size):
    before = HAND_SCORES.clone()
    out = full_ranking(lambda u: HAND_SCORES[u], HAND_GT, HAND_EXCLUDE, ks=[1, 3, 5], chunk_size=chunk_size)
    assert list(out) == list(HAND_EXPECTED)
    assert all(isinstance(v, float) for v in out.values())
    assert out == pytest.approx(HAND_EXPECTED, abs=1e-12)
    d2, d4 = 1 / math.log2(3), 1 / math.log2(5)
    assert HAND_EXPECTED["ndcg@5"] == pytest.approx(((d2 + d4) + (1 + d4)) / (1 + d2) / 2)
    assert torch.equal(HAND_SCORES, before)  # scores are masked out of place


def test_view_returning_score_fn_is_not_modified():
    out = full_ranking(lambda u: HAND_SCORES[u.min() : u.max() + 1], HAND_GT, HAND_EXCLUDE, ks=[5], chunk_size=1)
    assert out["ndcg@5"] == pytest.approx(HAND_EXPECTED["ndcg@5"])
    assert HAND_SCORES[1, 2].item() == pytest.approx(0.6)


def test_excluded_ground_truth_item_is_never_a_hit():
    # Item 2 is both excluded and relevant; 3 items, k = 3 reaches it at -inf but it must not count.
    gt = ItemSets.from_pairs([0], [2], num_users=1)
    out = full_ranking(lambda u: torch.tensor([[0.1, 0.2, 0.9]]), gt, gt, ks=[3])
    assert all(v == 0.0 for v in out.values())


def test_excluded_items_never_in_topk():
    g = torch.Generator().manual_seed(1)
    num_users, num_items, k = 40, 30, 10
    scores = torch.rand(num_users, num_items, generator=g)
    pairs = torch.rand(num_users, num_items, generator=g) < 0.4  # at most ~60% excluded; keep >= k allowed per user
    pairs[:, :k] = False
    u, i = pairs.nonzero(as_tuple=True)
    exclude = ItemSets.from_pairs(u, i, num_users)
    scores[u, i] += 10.0  # excluded items would otherwise top every list
    values, top = topk_items(lambda b: scores[b], torch.arange(num_users), k, exclude)
    assert torch.isfinite(values).all()
    for user in range(num_users):
        assert not set(top[user].tolist()) & set(i[u == user].tolist())
    # and as ground truth they score nothing in full_ranking
    out = full_ranking(lambda b: scores[b], exclude, exclude, ks=[1, k], chunk_size=7)
    assert all(v == 0.0 for v in out.values())


def test_users_without_ground_truth_are_skipped():
    calls = []

    def score_fn(u):
        calls.append(u.clone())
        return HAND_SCORES[u]

    out = full_ranking(score_fn, HAND_GT, HAND_EXCLUDE, ks=[1, 3, 5], users=torch.tensor([2, 0, 1]))
    assert out == pytest.approx(HAND_EXPECTED)
    assert torch.cat(calls).tolist() == [0, 1]
    only0 = full_ranking(score_fn, HAND_GT, HAND_EXCLUDE, ks=[3], metrics=["mrr"], users=[0, 2])
    assert only0 == pytest.approx({"mrr@3": 0.5})


def test_errors():
    score_fn = lambda u: HAND_SCORES[u]  # noqa: E731
    with pytest.raises(ValueError, match="no user to evaluate"):
        full_ranking(score_fn, HAND_GT, None, ks=[1], users=[2])
    with pytest.raises(ValueError, match="chunk_size"):
        full_ranking(score_fn, HAND_GT, None, ks=[1], chunk_size=0)
    with pytest.raises(ValueError, match="unknown metric"):
        full_ranking(score_fn, HAND_GT, None, ks=[1], metrics=["auc"])
    with pytest.raises(ValueError, match="score_fn returned shape"):
        full_ranking(lambda u: HAND_SCORES[u][:, None], HAND_GT, None, ks=[1])
    with pytest.raises(DataError, match="ground-truth item id 7"):
        full_ranking(score_fn, ItemSets.from_pairs([0], [7], num_users=3), None, ks=[1])
    with pytest.raises(DataError, match="excluded item id 9"):
        full_ranking(score_fn, HAND_GT, ItemSets.from_pairs([0], [9], num_users=3), ks=[1])
    with pytest.raises(ValueError, match="exclude has 2 users"):
        full_ranking(score_fn, HAND_GT, ItemSets.from_pairs([0], [0], num_users=2), ks=[1])


# ---------------------------------------------------------------------------------------------------------------------
# full_ranking against a naive reference


def naive_full_ranking(scores, gt_sets, excl_sets, ks, users):
    """Per-user Python loop: sort the allowed items by float64 score, then apply the textbook definitions."""
    totals = {f"{m}@{k}": 0.0 for m in METRICS for k in ks}
    evaluated = [u for u in users if gt_sets[u]]
    for u in evaluated:
        row = scores[u].double().tolist()
        ranked = sorted((i for i in range(len(row)) if i not in excl_sets[u]), key=lambda i: -row[i])
        gt = gt_sets[u]
        for k in ks:
            hit_ranks = [r + 1 for r, item in enumerate(ranked[:k]) if item in gt]
            dcg = sum(1 / math.log2(r + 1) for r in hit_ranks)
            idcg = sum(1 / math.log2(r + 1) for r in range(1, min(len(gt), k) + 1))
            totals[f"recall@{k}"] += len(hit_ranks) / len(gt)
            totals[f"precision@{k}"] += len(hit_ranks) / k
            totals[f"hr@{k}"] += float(bool(hit_ranks))
            totals[f"ndcg@{k}"] += dcg / idcg
            totals[f"mrr@{k}"] += 1 / hit_ranks[0] if hit_ranks else 0.0
    return {key: v / len(evaluated) for key, v in totals.items()}


def random_case(seed, num_users=37, num_items=23, dim=8):
    g = torch.Generator().manual_seed(seed)
    user_emb, item_emb = torch.randn(num_users, dim, generator=g), torch.randn(num_items, dim, generator=g)
    gt_mask = torch.rand(num_users, num_items, generator=g) < 0.15
    gt_mask[:5] = False  # some users have no ground truth
    ex_mask = torch.rand(num_users, num_items, generator=g) < 0.3  # overlaps the ground truth on purpose
    gt_u, gt_i = gt_mask.nonzero(as_tuple=True)
    ex_u, ex_i = ex_mask.nonzero(as_tuple=True)
    gt_sets = [set(gt_i[gt_u == u].tolist()) for u in range(num_users)]
    ex_sets = [set(ex_i[ex_u == u].tolist()) for u in range(num_users)]
    return (
        user_emb,
        item_emb,
        ItemSets.from_pairs(gt_u, gt_i, num_users),
        ItemSets.from_pairs(ex_u, ex_i, num_users),
        gt_sets,
        ex_sets,
    )


@pytest.mark.parametrize(
    "seed, chunk_size, ks", list(itertools.product([0, 1, 2], [1, 3, 16, 1000], [[1], [5, 10], [20, 3, 30]]))
)
def test_matches_naive_reference(seed, chunk_size, ks):
    user_emb, item_emb, gt, excl, gt_sets, ex_sets = random_case(seed)
    scores = user_emb @ item_emb.T  # the naive reference sorts exactly these float32 scores, in float64
    out = full_ranking(lambda u: user_emb[u] @ item_emb.T, gt, excl, ks=ks, chunk_size=chunk_size)
    want = naive_full_ranking(scores, gt_sets, ex_sets, ks, range(user_emb.shape[0]))
    assert list(out) == list(want)
    assert out == pytest.approx(want, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("chunk_size", [1, 4, 100])
def test_user_subset_and_no_exclusion_match_naive(chunk_size):
    user_emb, item_emb, gt, _, gt_sets, _ = random_case(7)
    users = [30, 2, 11, 4, 19, 36, 0, 25]  # 2, 4 and 0 have no ground truth
    out = full_ranking(lambda u: user_emb[u] @ item_emb.T, gt, None, ks=[2, 7], chunk_size=chunk_size, users=users)
    no_excl = [set() for _ in gt_sets]
    assert out == pytest.approx(naive_full_ranking(user_emb @ item_emb.T, gt_sets, no_excl, [2, 7], users), rel=1e-12)


def test_chunks_bound_the_batch_and_cover_each_user_once():
    user_emb, item_emb, gt, excl, _, _ = random_case(3, num_users=50)
    seen = []

    def score_fn(u):
        assert u.dtype == torch.long and u.numel() <= 8
        seen.append(u)
        return user_emb[u] @ item_emb.T

    full_ranking(score_fn, gt, excl, ks=[5], chunk_size=8)
    assert sorted(torch.cat(seen).tolist()) == torch.nonzero(gt.counts() > 0).flatten().tolist()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_scores_match_cpu():
    user_emb, item_emb, gt, excl, _, _ = random_case(4, num_users=300, num_items=500)
    cpu = full_ranking(lambda u: user_emb[u] @ item_emb.T, gt, excl, ks=[10, 20], chunk_size=64)
    scores = (user_emb @ item_emb.T).cuda()  # identical scores, only the device differs
    gpu = full_ranking(lambda u: scores[u.cuda()], gt, excl, ks=[10, 20], chunk_size=64)
    assert gpu == pytest.approx(cpu, rel=1e-12)
