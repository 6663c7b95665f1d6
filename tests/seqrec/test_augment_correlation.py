"""ItemCorrelation against a naive dict-based ItemCF-IUF, and Insert / Substitute on hand-built correlations."""

import itertools
import math
from collections import Counter, defaultdict

import pytest
import torch

from engine_seqrec.augment import Insert, ItemCorrelation, Substitute

# hand example, window 1:  N = {1: 1, 2: 2, 3: 3, 4: 1}, IUF weights w0 = 1/ln 4, w1 = w2 = 1/ln 3
#   sim(1,2) = w0/sqrt(2) = .510   sim(2,3) = (w0 + w1)/sqrt(6) = .666   sim(3,4) = w2/sqrt(3) = .526
#   top1: 1 -> 2, 2 -> 3, 3 -> 2, 4 -> 3; item 5 never co-occurs -> itself; 0 and the mask id 6 -> themselves
HAND = [torch.tensor([1, 2, 3]), torch.tensor([2, 3]), torch.tensor([3, 4])]
HAND_TOP1 = [0, 2, 3, 2, 3, 5, 6]


def gen(seed):
    return torch.Generator().manual_seed(seed)


def left_pad(rows, L):
    seqs = torch.zeros(len(rows), L, dtype=torch.long)
    for b, row in enumerate(rows):
        if row:
            seqs[b, L - len(row) :] = torch.tensor(row)
    return seqs, torch.tensor([len(r) for r in rows])


def real_rows(seqs, lengths):
    L = seqs.size(1)
    for b in range(seqs.size(0)):
        assert seqs[b, : L - int(lengths[b])].eq(0).all()
    return [seqs[b, L - int(lengths[b]) :].tolist() for b in range(seqs.size(0))]


def naive_itemcf_iuf(train, window):
    """CoSeRec's ItemCF_IUF loop (``window=None``), restricted to pairs at most ``window`` positions apart."""
    N, C = Counter(), defaultdict(float)
    for seq in train:
        items = set(seq)
        N.update(items)
        pairs = {
            (seq[p], seq[q])
            for p, q in itertools.product(range(len(seq)), repeat=2)
            if p != q and seq[p] != seq[q] and (window is None or abs(p - q) <= window)
        }
        for pair in pairs:
            C[pair] += 1 / math.log(1 + len(items))
    return {(i, j): c / math.sqrt(N[i] * N[j]) for (i, j), c in C.items()}


def test_hand_example_top1_and_scores():
    corr = ItemCorrelation(window=1).fit(HAND, num_items=5)
    assert corr.neighbours[:, 0].tolist() == HAND_TOP1
    w0, w1 = 1 / math.log(4), 1 / math.log(3)
    expected = [0, w0 / math.sqrt(2), (w0 + w1) / math.sqrt(6), (w0 + w1) / math.sqrt(6), w1 / math.sqrt(3), 0, 0]
    assert torch.allclose(corr.scores[:, 0], torch.tensor(expected, dtype=torch.float64))
    # whole sequences add (1, 3) with w0 / sqrt(3) = .416, which changes no top1
    assert ItemCorrelation(window=None).fit(HAND, 5).neighbours[:, 0].tolist() == HAND_TOP1
    # top_k = 2: second best, or the item itself when there is none
    top2 = ItemCorrelation(window=1, top_k=2).fit(HAND, 5).neighbours
    assert top2[1:5].tolist() == [[2, 1], [3, 1], [2, 4], [3, 4]]


@pytest.mark.parametrize("window,seed", list(itertools.product([1, 2, None], [0, 1, 2])))
def test_matches_naive_dict_itemcf_iuf(window, seed):
    g = gen(seed)
    num_items = 15
    train = [torch.randint(1, num_items + 1, (int(n),), generator=g) for n in torch.randint(1, 9, (25,), generator=g)]
    corr = ItemCorrelation(window=window).fit(train, num_items)
    sim = naive_itemcf_iuf([t.tolist() for t in train], window)
    for i in range(num_items + 2):
        cand = {j: s for (a, j), s in sim.items() if a == i}
        got, score = int(corr.neighbours[i, 0]), float(corr.scores[i, 0])
        if not cand:
            assert (got, score) == (i, 0.0)
            continue
        best = max(cand.values())
        assert math.isclose(score, best, rel_tol=1e-12)
        # ties (equal up to rounding) go to the smallest item id
        assert got == min(j for j, s in cand.items() if math.isclose(s, best, rel_tol=1e-12))


def test_fit_skips_padding_and_rejects_bad_ids():
    padded = [torch.tensor([0, 0, 1, 2, 3]), torch.tensor([0, 2, 3]), torch.tensor([3, 4])]
    assert ItemCorrelation().fit(padded, 5).neighbours[:, 0].tolist() == HAND_TOP1
    with pytest.raises(ValueError, match="num_items"):
        ItemCorrelation().fit([torch.tensor([1, 6])], 5)
    with pytest.raises(ValueError, match="window"):
        ItemCorrelation(window=0)
    empty = ItemCorrelation().fit([], 3)
    assert empty.neighbours[:, 0].tolist() == [0, 1, 2, 3, 4]


def test_large_catalogue_stays_sparse():
    g = gen(0)
    num_items = 20000
    train = [torch.randint(1, num_items + 1, (40,), generator=g) for _ in range(3000)]
    corr = ItemCorrelation(window=2).fit(train, num_items)
    assert corr.neighbours.shape == (num_items + 2, 1)
    first = train[0].tolist()
    # an item's best neighbour co-occurs with it somewhere within 2 positions
    i = first[10]
    j = int(corr.neighbours[i, 0])
    near = False
    for s in (t.tolist() for t in train):
        pi, pj = [p for p, v in enumerate(s) if v == i], [q for q, v in enumerate(s) if v == j]
        near = near or any(abs(p - q) <= 2 for p in pi for q in pj)
    assert near


# ------------------------------------------------------------------------------------------------------- insert


def build_insert(row, chosen, top1, L):
    out = []
    for t, v in enumerate(row):
        if t in chosen:
            out.append(top1[v])
        out.append(v)
    return out[-L:]


def test_insert_rate_1_inserts_before_every_item_and_truncates_left():
    ins = Insert(rate=1.0)
    ins.fit(HAND, 5)
    seqs, lengths = left_pad([[1, 2, 3], [4, 3, 2, 1], [1, 2, 3, 4, 1], [5]], 8)
    out, out_len = ins(seqs, lengths, gen(0))
    assert real_rows(out, out_len) == [
        [2, 1, 3, 2, 2, 3],
        [3, 4, 2, 3, 3, 2, 2, 1],
        [3, 2, 2, 3, 3, 4, 2, 1],  # 10 items, the oldest 2 dropped
        [5, 5],  # no correlated item: the item itself
    ]
    assert out_len.tolist() == [6, 8, 8, 2]


@pytest.mark.parametrize("rate,seed", list(itertools.product([0.3, 0.5], range(4))))
def test_insert_matches_some_subset_of_the_right_size(rate, seed):
    ins = Insert(rate=rate)
    ins.fit(HAND, 5)
    g = gen(100 + seed)
    rows = [torch.randint(1, 6, (int(n),), generator=g).tolist() for n in torch.randint(0, 7, (30,), generator=g)]
    L = 6
    seqs, lengths = left_pad(rows, L)
    out, out_len = ins(seqs, lengths, gen(seed))
    for row, after in zip(rows, real_rows(out, out_len)):
        m = max(1, int(rate * len(row))) if row else 0
        assert len(after) == min(len(row) + m, L)
        assert any(
            build_insert(row, set(c), HAND_TOP1, L) == after for c in itertools.combinations(range(len(row)), m)
        )


# --------------------------------------------------------------------------------------------------- substitute


@pytest.mark.parametrize("rate,seed", list(itertools.product([0.1, 0.5, 1.0], range(3))))
def test_substitute_replaces_max1_floor_rate_n_items_by_top1(rate, seed):
    sub = Substitute(rate=rate)
    sub.fit(HAND, 5)
    g = gen(200 + seed)
    rows = [torch.randint(1, 5, (int(n),), generator=g).tolist() for n in torch.randint(0, 11, (30,), generator=g)]
    seqs, lengths = left_pad(rows, 10)
    out, out_len = sub(seqs, lengths, gen(seed))
    assert torch.equal(out_len, lengths)
    for row, after in zip(rows, real_rows(out, out_len)):
        changed = [t for t in range(len(row)) if after[t] != row[t]]
        # items 1..4 all have a correlated item different from themselves, so every substitution shows
        assert len(changed) == (max(1, int(rate * len(row))) if row else 0)
        assert all(after[t] == HAND_TOP1[row[t]] for t in changed)


@pytest.mark.parametrize("cls", [Insert, Substitute])
def test_call_before_fit_is_a_clear_error(cls):
    with pytest.raises(RuntimeError, match=rf"{cls.__name__}\.fit\(train_sequences, num_items\)"):
        cls()(*left_pad([[1, 2]], 3), gen(0))
