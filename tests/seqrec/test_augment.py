"""Crop, Mask, Reorder and RandomChoice against per-row reference checks on left-padded batches."""

import itertools
import time

import pytest
import torch
from pydantic import ValidationError

from engine_seqrec.augment import AUGMENTERS, Crop, Insert, Mask, RandomChoice, Reorder, Substitute

NUM_ITEMS = 30
MASK = NUM_ITEMS + 1


def gen(seed):
    return torch.Generator().manual_seed(seed)


def left_pad(rows, L):
    """A left-padded ``[B, L]`` batch and its lengths from python lists of items."""
    seqs = torch.zeros(len(rows), L, dtype=torch.long)
    for b, row in enumerate(rows):
        if row:
            seqs[b, L - len(row) :] = torch.tensor(row)
    return seqs, torch.tensor([len(r) for r in rows])


def rows_of(seqs, lengths):
    """The real items of each row, checking the layout: zeros on the left, non-zero items on the right."""
    L = seqs.size(1)
    out = []
    for b in range(seqs.size(0)):
        n = int(lengths[b])
        assert 0 <= n <= L
        assert seqs[b, : L - n].eq(0).all(), f"row {b}: padding not zero"
        assert seqs[b, L - n :].ne(0).all(), f"row {b}: a real item is 0"
        out.append(seqs[b, L - n :].tolist())
    return out


def random_batch(seed, B=40, L=12, num_items=NUM_ITEMS):
    g = gen(seed)
    lengths = torch.randint(0, L + 1, (B,), generator=g)
    lengths[:3] = torch.tensor([0, 1, L])  # always an empty, a single-item and a full row
    rows = [torch.randint(1, num_items + 1, (int(n),), generator=g).tolist() for n in lengths]
    return left_pad(rows, L)


# ----------------------------------------------------------------------------------------------------------- crop


@pytest.mark.parametrize("eta,seed", list(itertools.product([0.2, 0.5, 1.0], [0, 1, 2])))
def test_crop_keeps_a_contiguous_window_of_floor_eta_n(eta, seed):
    seqs, lengths = random_batch(seed)
    out, out_len = Crop(eta=eta)(seqs, lengths, gen(seed))
    assert out.shape == seqs.shape and out.dtype == torch.long
    for before, after in zip(rows_of(seqs, lengths), rows_of(out, out_len)):
        n = len(before)
        k = 0 if n == 0 else max(1, int(eta * n))
        assert len(after) == k
        assert any(before[c : c + k] == after for c in range(n - k + 1))


def test_crop_hand_example_and_every_start_reachable():
    seqs, lengths = left_pad([[1, 2, 3, 4, 5]], 7)
    seen = set()
    for seed in range(200):
        out, out_len = Crop(eta=0.4)(seqs, lengths, gen(seed))
        assert out_len.tolist() == [2]
        assert out[0, :5].tolist() == [0] * 5
        seen.add(tuple(out[0, 5:].tolist()))
    # CoSeRec's randint(0, n - k - 1) never keeps the last window; here every window occurs
    assert seen == {(1, 2), (2, 3), (3, 4), (4, 5)}


# ----------------------------------------------------------------------------------------------------------- mask


@pytest.mark.parametrize("gamma,seed", list(itertools.product([0.3, 0.7, 1.0], [0, 1])))
def test_mask_replaces_floor_gamma_n_items_by_the_mask_token(gamma, seed):
    seqs, lengths = random_batch(seed)
    out, out_len = Mask(num_items=NUM_ITEMS, gamma=gamma)(seqs, lengths, gen(seed))
    assert torch.equal(out_len, lengths)
    for before, after in zip(rows_of(seqs, lengths), rows_of(out, out_len)):
        masked = [t for t, v in enumerate(after) if v == MASK]
        assert len(masked) == int(gamma * len(before))
        assert all(after[t] == before[t] for t in range(len(before)) if t not in masked)


def test_mask_positions_are_uniform_over_real_items():
    seqs, lengths = left_pad([[1, 2, 3, 4]], 6)
    counts = torch.zeros(6, dtype=torch.long)
    for seed in range(400):
        out, _ = Mask(num_items=NUM_ITEMS, gamma=0.25)(seqs, lengths, gen(seed))
        counts += (out[0] == MASK).long()
    assert counts[:2].tolist() == [0, 0] and counts.sum() == 400
    assert counts[2:].min() > 60  # each of 4 positions about 100 times


# -------------------------------------------------------------------------------------------------------- reorder


def window_shuffle_of(before, after, k):
    """True when ``after`` equals ``before`` outside some window of ``k`` items, and is a permutation inside it."""
    n = len(before)
    if len(after) != n:
        return False
    for c in range(n - k + 1):
        outside = before[:c] == after[:c] and before[c + k :] == after[c + k :]
        if outside and sorted(before[c : c + k]) == sorted(after[c : c + k]):
            return True
    return False


@pytest.mark.parametrize("beta,seed", list(itertools.product([0.2, 0.5, 1.0], [0, 1, 2])))
def test_reorder_permutes_one_contiguous_window(beta, seed):
    seqs, lengths = random_batch(seed)
    out, out_len = Reorder(beta=beta)(seqs, lengths, gen(seed))
    assert torch.equal(out_len, lengths)
    for before, after in zip(rows_of(seqs, lengths), rows_of(out, out_len)):
        assert sorted(before) == sorted(after)
        assert window_shuffle_of(before, after, int(beta * len(before)))


def test_reorder_draws_every_window_and_order():
    seqs, lengths = left_pad([[7, 8, 9, 10, 11, 12]], 8)
    perms = set()
    for seed in range(300):
        out, _ = Reorder(beta=0.5)(seqs, lengths, gen(seed))  # k = 3
        after = out[0, 2:].tolist()
        assert window_shuffle_of([7, 8, 9, 10, 11, 12], after, 3)
        perms.add(tuple(after))
    base = [7, 8, 9, 10, 11, 12]
    expected = {
        tuple(base[:c] + list(p) + base[c + 3 :]) for c in range(4) for p in itertools.permutations(base[c : c + 3])
    }
    assert perms == expected and len(expected) == 18  # 4 windows x 6 orders; overlaps share 6 of them


# ----------------------------------------------------------------------------------------------- shared behaviour


def fitted_insert_substitute():
    train = [torch.arange(1, NUM_ITEMS + 1)]
    ins, sub = Insert(rate=0.5), Substitute(rate=0.5)
    ins.fit(train, NUM_ITEMS)
    sub.fit(train, NUM_ITEMS)
    return ins, sub


def all_augmenters():
    ins, sub = fitted_insert_substitute()
    rnd = RandomChoice(num_items=NUM_ITEMS, augmenters=["crop", "mask", "reorder", "insert", "substitute"])
    rnd.fit([torch.arange(1, NUM_ITEMS + 1)], NUM_ITEMS)
    return [Crop(eta=0.5), Mask(num_items=NUM_ITEMS, gamma=0.5), Reorder(beta=0.5), ins, sub, rnd]


def test_registry_attributes():
    names = [cls.name for cls in AUGMENTERS]
    assert names == ["crop", "mask", "reorder", "insert", "substitute", "random", "learned_mlp"]
    assert [cls.view_kind for cls in AUGMENTERS] == ["sequence"] * 6 + ["representation"]


@pytest.mark.parametrize("index", range(6))
def test_deterministic_per_generator_seed_and_input_untouched(index):
    aug = all_augmenters()[index]
    seqs, lengths = random_batch(5, B=64)
    seqs_copy, lengths_copy = seqs.clone(), lengths.clone()
    a, b, c = aug(seqs, lengths, gen(3)), aug(seqs, lengths, gen(3)), aug(seqs, lengths, gen(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert torch.equal(seqs, seqs_copy) and torch.equal(lengths, lengths_copy)
    rows_of(*a)  # layout holds


@pytest.mark.parametrize("index", range(6))
def test_all_padding_batch_stays_empty(index):
    aug = all_augmenters()[index]
    seqs, lengths = torch.zeros(4, 6, dtype=torch.long), torch.zeros(4, dtype=torch.long)
    out, out_len = aug(seqs, lengths, gen(0))
    assert torch.equal(out, seqs) and out_len.tolist() == [0, 0, 0, 0]
    out, out_len = aug(torch.zeros(0, 6, dtype=torch.long), torch.zeros(0, dtype=torch.long), gen(0))
    assert out.shape == (0, 6) and out_len.shape == (0,)


def test_single_item_rows():
    """Documented behaviour on one-item rows: crop keeps it, mask (gamma < 1) and reorder leave it, insert adds its
    correlated item before it, substitute replaces it."""
    seqs, lengths = left_pad([[4], [], [9]], 3)
    ins, sub = fitted_insert_substitute()  # top1 on the chain 1..30: item v -> v - 1 (ties to the smaller id)
    g = gen(0)
    assert Crop()(seqs, lengths, g)[0].tolist() == seqs.tolist()
    assert Mask(num_items=NUM_ITEMS)(seqs, lengths, g)[0].tolist() == seqs.tolist()
    assert Mask(num_items=NUM_ITEMS, gamma=1.0)(seqs, lengths, g)[0].tolist() == [[0, 0, MASK], [0, 0, 0], [0, 0, MASK]]
    assert Reorder(beta=1.0)(seqs, lengths, g)[0].tolist() == seqs.tolist()
    out, out_len = ins(seqs, lengths, g)
    assert out.tolist() == [[0, 3, 4], [0, 0, 0], [0, 8, 9]] and out_len.tolist() == [2, 0, 2]
    out, out_len = sub(seqs, lengths, g)
    assert out.tolist() == [[0, 0, 3], [0, 0, 0], [0, 0, 8]] and out_len.tolist() == [1, 0, 1]


def test_bad_batches_are_rejected():
    with pytest.raises(ValueError, match="LongTensor"):
        Crop()(torch.zeros(2, 3, dtype=torch.int32), torch.zeros(2, dtype=torch.long), gen(0))
    with pytest.raises(ValueError, match="lengths"):
        Crop()(torch.zeros(2, 3, dtype=torch.long), torch.tensor([1, 4]), gen(0))


# --------------------------------------------------------------------------------------------------- random choice


def test_random_choice_gives_each_row_one_of_the_views():
    seqs, lengths = left_pad([[1, 2, 3, 4, 5, 6, 7, 8]] * 200, 10)
    out, out_len = RandomChoice(num_items=NUM_ITEMS, augmenters=["crop", "mask"], eta=0.5, gamma=0.5)(
        seqs, lengths, gen(0)
    )
    kinds = []
    for after in rows_of(out, out_len):
        if len(after) == 4:
            assert any(after == list(range(c + 1, c + 5)) for c in range(5))
            kinds.append("crop")
        else:
            assert len(after) == 8 and after.count(MASK) == 4
            kinds.append("mask")
    assert 60 < kinds.count("crop") < 140


def test_random_choice_shares_one_correlation_and_needs_num_items_for_mask():
    rnd = RandomChoice(augmenters=["insert", "substitute"])
    with pytest.raises(RuntimeError, match="fit"):
        rnd(*left_pad([[1, 2]], 3), gen(0))
    rnd.fit([torch.arange(1, 6)], 5)
    assert rnd.augmenters[0].correlation is rnd.augmenters[1].correlation
    with pytest.raises(ValueError, match="num_items"):
        RandomChoice(augmenters=["mask"])


# --------------------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "cls,bad",
    [
        (Crop, {"eta": 0.0}),
        (Crop, {"eta": 1.2}),
        (Mask, {"gamma": 1.5}),
        (Mask, {"gamma": 0.0}),
        (Reorder, {"beta": -0.1}),
        (Insert, {"rate": 0.0}),
        (Insert, {"window": 0}),
        (Substitute, {"rate": 2.0}),
        (RandomChoice, {"augmenters": []}),
        (RandomChoice, {"augmenters": ["crop", "shuffle"]}),
        (Crop, {"tao": 0.2}),
    ],
)
def test_config_rejects_out_of_bounds_and_unknown_keys(cls, bad):
    with pytest.raises(ValidationError):
        cls.Config(**bad)


def test_constructors_validate_too_and_from_config_takes_num_items():
    with pytest.raises(ValueError, match="eta"):
        Crop(eta=0)
    with pytest.raises(ValueError, match="gamma"):
        Mask(num_items=5, gamma=1.5)
    mask = Mask.from_config(Mask.Config(gamma=0.5), num_items=9, batch_size=3)
    assert (mask.num_items, mask.gamma, mask.mask_token) == (9, 0.5, 10)
    assert repr(mask) == "Mask(num_items=9, gamma=0.5)"
    assert Crop.from_config(Crop.Config(), num_items=9).eta == 0.2
    rnd = RandomChoice.from_config(RandomChoice.Config(), num_items=9)
    assert [a.name for a in rnd.augmenters] == ["crop", "mask", "reorder"]
    assert Insert.Config().rate == 0.4 and Substitute.Config().rate == 0.1
    assert Mask.Config().gamma == 0.3 and Reorder.Config().beta == 0.2


# ---------------------------------------------------------------------------------------------------------- speed


def test_batch_256_by_50_is_fast():
    g = gen(0)
    num_items = 12000
    lengths = torch.randint(0, 51, (256,), generator=g)
    seqs = torch.randint(1, num_items + 1, (256, 50), generator=g)
    seqs[torch.arange(50).unsqueeze(0) < (50 - lengths).unsqueeze(1)] = 0
    train = [torch.randint(1, num_items + 1, (50,), generator=g) for _ in range(2000)]
    ins, sub = Insert(), Substitute()
    ins.fit(train, num_items)
    sub.fit(train, num_items)
    rnd = RandomChoice(num_items=num_items, augmenters=["crop", "mask", "reorder", "insert", "substitute"])
    rnd.fit(train, num_items)
    timings = {}
    for aug in [Crop(), Mask(num_items=num_items), Reorder(), ins, sub, rnd]:
        aug(seqs, lengths, g)  # warm-up
        start = time.perf_counter()
        for _ in range(10):
            aug(seqs, lengths, g)
        timings[aug.name] = (time.perf_counter() - start) / 10
    print("augment 256x50 (ms):", {k: round(v * 1e3, 2) for k, v in timings.items()})
    assert max(timings.values()) < 0.5
