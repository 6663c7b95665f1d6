"""The pieces of ``seqrec``'s item content and cold start, alone: the cold-item hold-out on hand-made sequences
and against a naive loop, the feature join of ``_item2attributes.json``, the cross-entropy that leaves items out of
its softmax, and SASRec's item input."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch

from engine.data.cold_start import ColdStartConfig
from engine.errors import ConfigError, DataError
from engine_seqrec.content import hold_out_sequence_items, load_sequence_content
from engine_seqrec.losses import CrossEntropyLoss
from engine_seqrec.sasrec import SASRec
from tests.seqrec.test_content import make_data, naive_hold_out, sequences_of


# -- hold_out_sequence_items on hand-made sequences ------------------------------------------------------------------

HAND = [[1, 2, 3, 4, 5], [2, 6, 1, 3], [6, 6, 2, 4], [1, 6, 5], [6, 1, 2, 6]]
HAND_USERS = [10, 11, 12, 13, 14]


def hand_eligible(*items) -> np.ndarray:
    eligible = np.zeros(8, dtype=bool)  # ids 0..7; item 7 occurs nowhere
    eligible[list(items)] = True
    return eligible


@pytest.mark.parametrize("seed, cold, want, users", [
    # 6 held out: user 12's prefix [6, 6] becomes empty (2 items left): dropped; 13 and 14 keep 6 as a target
    (0, [6], [[1, 2, 3, 4, 5], [2, 1, 3], [1, 6, 5], [1, 2, 6]], [10, 11, 13, 14]),
    # 2 held out: only user 10's prefix has it; user 12's and user 14's 2 is a validation target, kept
    (1, [2], [[1, 3, 4, 5], [6, 1, 3], [6, 6, 2, 4], [1, 6, 5], [6, 1, 2, 6]], HAND_USERS),
])
def test_hold_out_sequence_items_by_hand(seed, cold, want, users):
    data = make_data(HAND, 7, HAND_USERS, num_dropped=2)
    # eligible: 2, 6 and 7, but 7 occurs in no sequence: the pool is {2, 6}, half of it held out
    out, items, dropped = hold_out_sequence_items(data, ColdStartConfig(ratio=0.5, seed=seed), hand_eligible(2, 6, 7))
    assert items.test.tolist() == cold and items.valid.tolist() == cold
    assert sequences_of(out) == want
    assert out.user_ids.tolist() == users
    assert dropped == len(HAND) - len(users) and out.num_dropped == 2 + dropped
    assert out.num_items == 7
    assert not set(out.history("train")[1].tolist()) & set(cold)
    kept = [HAND_USERS.index(u) for u in users]
    for split in ("valid", "test"):
        assert out.target(split).tolist() == data.target(split)[kept].tolist()


@pytest.mark.parametrize("seed, ratio", [(0, 0.2), (3, 0.35), (7, 0.5)])
def test_hold_out_sequence_items_against_a_naive_loop(seed, ratio):
    rng = np.random.default_rng(seed)
    num_items = 30
    seqs = [rng.integers(1, 28, size=int(rng.integers(3, 9))).tolist() for _ in range(40)]  # 28..30 never occur
    user_ids = rng.permutation(1000)[:40]
    eligible = rng.random(num_items + 1) < 0.6
    eligible[[0, 29, 30]] = [False, True, True]  # 29, 30: eligible but absent
    data = make_data(seqs, num_items, user_ids)
    cfg = ColdStartConfig(ratio=ratio, seed=seed)
    out, items, dropped = hold_out_sequence_items(data, cfg, eligible)
    present = {i for s in seqs for i in s}
    pool = sorted(i for i in present if eligible[i])
    cold = set(items.test.tolist())
    assert cold <= set(pool) and len(cold) == round(ratio * len(pool))  # only eligible, present items
    assert items.test.tolist() == sorted(cold)
    want, want_users, want_dropped = naive_hold_out(seqs, user_ids.tolist(), cold)
    assert sequences_of(out) == want and out.user_ids.tolist() == want_users
    assert dropped == want_dropped == out.num_dropped
    assert not cold & set(out.history("train")[1].tolist())  # never in a training prefix afterwards
    kept = [user_ids.tolist().index(u) for u in want_users]
    for split in ("valid", "test"):
        assert out.target(split).tolist() == data.target(split)[kept].tolist()
    # the same seed draws the same items; another seed draws others
    again, again_items, _ = hold_out_sequence_items(data, cfg, eligible)
    assert np.array_equal(again_items.test, items.test) and torch.equal(again.items, out.items)
    draws = {tuple(hold_out_sequence_items(data, ColdStartConfig(ratio=ratio, seed=s), eligible)[1].test)
             for s in range(seed, seed + 5)}
    assert len(draws) > 1


def test_hold_out_sequence_items_drops_and_counts_emptied_prefixes():
    # pool {3, 4}: the seed-0 draw of one of them; a user whose whole prefix is that item is dropped
    data = make_data([[3, 3, 1, 2], [4, 1, 2], [1, 3, 4, 2], [3, 4, 1]], 4, [5, 6, 7, 8])
    out, items, dropped = hold_out_sequence_items(data, ColdStartConfig(ratio=0.5, seed=0), hand_eligible(3, 4)[:5])
    c = int(items.test[0])
    want, users, n = naive_hold_out(sequences_of(data), [5, 6, 7, 8], {c})
    assert n >= 1 and dropped == n and sequences_of(out) == want and out.user_ids.tolist() == users


def test_hold_out_sequence_items_ratio_errors():
    data = make_data(HAND, 7, HAND_USERS)
    eligible = hand_eligible(1, 2, 3, 6)  # a pool of 4 items
    with pytest.raises(DataError, match=r"data\.cold_items\.ratio: 0\.1 of 4 eligible items holds out 0"):
        hold_out_sequence_items(data, ColdStartConfig(ratio=0.1), eligible)
    with pytest.raises(DataError, match=r"data\.cold_items\.ratio: 0\.9 of 4 eligible items holds out 4"):
        hold_out_sequence_items(data, ColdStartConfig(ratio=0.9), eligible)
    _, items, _ = hold_out_sequence_items(data, ColdStartConfig(ratio=0.75), eligible)  # 3 of 4: allowed
    assert items.test.size == 3
    # item 1 (the seed-1 draw of {1, 3}) is every training prefix: nothing is left to train on
    data = make_data([[1, 5, 6], [1, 6, 5], [1, 3, 5]], 6)
    with pytest.raises(DataError, match="no sequence keeps a training item"):
        hold_out_sequence_items(data, ColdStartConfig(ratio=0.5, seed=1), hand_eligible(1, 3)[:7])


# -- load_sequence_content -------------------------------------------------------------------------------------------

HAND_ATTRIBUTES = {"1": [3, 7], "2": [7], "3": ["a", 9, 10], "4": [1], "5": [], "6": [2, 2], "42": [5]}


def write_hand_files(tmp_path):
    txt = tmp_path / "X.txt"
    txt.write_text("".join(f"{u} {' '.join(map(str, s))}\n" for u, s in zip(HAND_USERS, HAND)))
    (tmp_path / "X_item2attributes.json").write_text(json.dumps(HAND_ATTRIBUTES))
    return txt


def data_spec(txt, **extra):
    from engine.config import DataSpec

    return DataSpec(source="s3rec_txt", path=str(txt), **extra)


def test_load_sequence_content_joins_attributes_by_item_id(tmp_path):
    txt = write_hand_files(tmp_path)
    data = make_data(HAND, 7, HAND_USERS)
    out, features, cold, warm = load_sequence_content(data_spec(txt, item_features={}), data)
    assert out is data and cold is None
    assert features.path == str(tmp_path / "X_item2attributes.json")
    assert features.fields == {"attributes": "multi_categorical"}
    # rows aligned to item ids: row 0 (padding) and item 7 have no row; item 5's list is empty; "42" is no item
    assert features.columns["attributes"] == [None, "3 7", "7", "a 9 10", "1", None, "2 2", None]
    assert features.has_row.tolist() == [False, True, True, True, True, True, True, False]
    assert features.has_content.tolist() == [False, True, True, True, True, False, True, False]
    assert features.num_unknown_rows == 1
    # warm: the items of the training prefixes [1 2 3] [2 6] [6 6] [1] [6 1]
    assert torch.nonzero(warm).flatten().tolist() == [1, 2, 3, 6]


def test_load_sequence_content_with_cold_items(tmp_path):
    txt = write_hand_files(tmp_path)
    data = make_data(HAND, 7, HAND_USERS)
    spec = data_spec(txt, item_features={}, cold_items={"ratio": 0.4, "seed": 3})
    out, features, cold, warm = load_sequence_content(spec, data)
    # the eligible items are those with content: 1, 2, 3, 4, 6 (5 has an empty list, 7 no row)
    want_out, want_cold, _ = hold_out_sequence_items(data, spec.cold_items, features.has_content)
    assert cold.test.size == 2 and set(cold.test.tolist()) <= {1, 2, 3, 4, 6}
    assert np.array_equal(cold.test, want_cold.test) and sequences_of(out) == sequences_of(want_out)
    prefixes = {i for s in sequences_of(out) for i in s[:-2]}
    assert torch.nonzero(warm).flatten().tolist() == sorted(prefixes)
    assert not prefixes & set(cold.test.tolist())
    with pytest.raises(ConfigError, match=r"data\.cold_items: needs data\.item_features"):
        load_sequence_content(data_spec(txt, cold_items={"ratio": 0.4}), data)


# -- the cross-entropy with excluded items ---------------------------------------------------------------------------


def test_cross_entropy_exclude_by_hand():
    hidden = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    items = torch.tensor([[9.0, 9.0], [1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [0.0, -1.0]], dtype=torch.float64,
                         requires_grad=True)
    exclude = torch.tensor([True, False, False, True, False])  # row 0 (padding) is never a class anyway
    loss = CrossEntropyLoss(exclude=exclude)
    out = loss(hidden, items, torch.tensor([1, 2]))
    # row 0: logits of items 1, 2, 4 are 1, 0, 0 (item 3's 3 is left out); row 1: 0, 2, -1
    want = ((math.log(math.e + 2) - 1) + (math.log(1 + math.exp(2) + math.exp(-1)) - 2)) / 2
    assert out.loss.item() == pytest.approx(want, abs=1e-12) and out.parts["ce"].item() == pytest.approx(want)
    assert torch.isinf(loss.get_logits(hidden, items)[:, 2]).all()
    out.loss.backward()
    assert items.grad[3].abs().sum() == 0 and items.grad[0].abs().sum() == 0 and items.grad[1].abs().sum() > 0
    with_3 = ((math.log(math.e + 2 + math.exp(3)) - 1) + (math.log(2 + math.exp(2) + math.exp(-1)) - 2)) / 2
    assert CrossEntropyLoss()(hidden, items, torch.tensor([1, 2])).loss.item() == pytest.approx(with_3, abs=1e-12)


def test_cross_entropy_exclude_against_a_loop():
    g = torch.Generator().manual_seed(0)
    n, d, num_items = 7, 5, 12
    hidden = torch.randn(n, d, generator=g, dtype=torch.float64)
    items = torch.randn(num_items + 1, d, generator=g, dtype=torch.float64)
    exclude = torch.rand(num_items + 1, generator=g) < 0.4
    exclude[0] = True
    allowed = [i for i in range(1, num_items + 1) if not exclude[i]]
    targets = torch.tensor([allowed[k % len(allowed)] for k in range(n)])
    got = CrossEntropyLoss(exclude=exclude)(hidden, items, targets).loss.item()
    want = 0.0
    for r in range(n):
        logits = [float(hidden[r] @ items[i]) for i in allowed]
        top = max(logits)
        want += top + math.log(sum(math.exp(x - top) for x in logits)) - float(hidden[r] @ items[targets[r]])
    assert got == pytest.approx(want / n, abs=1e-12)


# -- SASRec's item input ---------------------------------------------------------------------------------------------


def test_sasrec_item_input_equals_shifted_item_embeddings():
    torch.manual_seed(0)
    num_items, d = 11, 8
    model = SASRec(num_items, max_len=6, hidden_dim=d, num_layers=2, num_heads=2, inner_dim=16).double().eval()
    item_input = torch.randn(num_items + 2, d, dtype=torch.float64)
    item_input[0] = item_input[-1] = 0  # padding and mask token rows
    shifted = copy.deepcopy(model)
    with torch.no_grad():
        shifted.item_embedding.weight += item_input
    seqs = torch.tensor([[0, 0, 3, 7, 1, 11], [4, 4, 2, 9, 10, 5], [0, 0, 0, 0, 0, 6], [0, 12, 3, 1, 2, 8]])
    with torch.no_grad():
        assert torch.allclose(model.encode(seqs, item_input), shifted.encode(seqs), atol=1e-12)
        assert torch.allclose(model(seqs, item_input), shifted(seqs), atol=1e-12)
        assert not torch.allclose(model.encode(seqs), shifted.encode(seqs))
        table = model.item_embeddings(item_input)
    assert table.shape == (num_items + 1, d)
    assert torch.equal(table, model.item_embedding.weight[: num_items + 1] + item_input[: num_items + 1])
    assert torch.allclose(table, shifted.item_embeddings(), atol=1e-12)
    assert torch.equal(model.item_embeddings(), model.item_embedding.weight[: num_items + 1])
