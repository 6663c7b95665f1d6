"""Cold-start items: ``hold_out_items`` moves every interaction of the held-out items out of train (to valid / test),
loses and duplicates nothing, respects eligibility, and is deterministic by seed; checked against a naive per-row
reference of where each interaction must end up."""

from __future__ import annotations

import collections
import itertools

import numpy as np
import polars as pl
import pytest

from engine.data import InteractionData
from engine.data.cold_start import ColdItems, ColdStartConfig, hold_out_items
from engine.errors import DataError

NUM_USERS, NUM_ITEMS = 15, 40


def make_data(seed=0, valid=True, num_items=NUM_ITEMS) -> InteractionData:
    """Random interactions with a timestamp (a row key) and a rating; item ``num_items - 1`` never occurs; one pair
    occurs twice (in train and in test)."""
    rng = np.random.default_rng(seed)
    rows = {"train": [], "valid": [], "test": []}
    t = 0
    for u in range(NUM_USERS):
        items = rng.choice(num_items - 1, 12, replace=False)
        for n, i in enumerate(items):
            split = "train" if n < 8 else ("valid" if n < 10 and valid else "test")
            rows[split].append((u, int(i), t, float(rng.integers(1, 6))))
            t += 1
    rows["test"].append(rows["train"][0][:2] + (t, 5.0))  # a repeated pair, later in time

    def frame(r):
        return pl.DataFrame(r, schema={"user": pl.Int64, "item": pl.Int64, "timestamp": pl.Int64,
                                       "rating": pl.Float64}, orient="row")

    return InteractionData(frame(rows["train"]), frame(rows["valid"]) if valid else None, frame(rows["test"]),
                           NUM_USERS, num_items)


def present_items(data: InteractionData) -> set[int]:
    return {row[1] for f in (data.train, data.valid, data.test) if f is not None for row in f.iter_rows()}


def rows_of(frame: pl.DataFrame | None) -> collections.Counter:
    return collections.Counter(frame.iter_rows()) if frame is not None else collections.Counter()


def expected_splits(data: InteractionData, cold: ColdItems):
    """Naive reference: each interaction of a cold-valid item goes to valid, of a cold-test item to test, the rest
    stays where it was."""
    cv, ct = set(cold.valid.tolist()), set(cold.test.tolist())
    out = {"train": collections.Counter(), "valid": collections.Counter(), "test": collections.Counter()}
    for split in ("train", "valid", "test"):
        frame = getattr(data, split)
        if frame is None:
            continue
        for row in frame.iter_rows():
            item = row[1]
            out["valid" if item in cv else "test" if item in ct else split][row] += 1
    return out


@pytest.mark.parametrize("ratio, valid_share, seed", list(itertools.product([0.1, 0.25, 0.5], [0.0, 0.5, 1.0],
                                                                             [0, 7])))
def test_every_interaction_lands_once_in_the_right_split(ratio, valid_share, seed):
    data = make_data(seed)
    out, cold = hold_out_items(data, ColdStartConfig(ratio=ratio, valid_share=valid_share, seed=seed))
    pool = present_items(data)
    assert NUM_ITEMS - 1 not in pool and len(pool) > 30
    n_cold = int(round(ratio * len(pool)))
    assert cold.all.size == n_cold
    assert cold.valid.size == int(round(valid_share * n_cold)) and cold.test.size == n_cold - cold.valid.size
    assert np.intersect1d(cold.valid, cold.test).size == 0  # cold valid and cold test are disjoint
    assert np.array_equal(cold.valid, np.sort(cold.valid)) and np.array_equal(cold.test, np.sort(cold.test))
    assert set(cold.all.tolist()) <= pool  # an item without interactions is never drawn
    assert not set(out.train["item"].to_list()) & set(cold.all.tolist())  # no cold item in train
    assert not set(out.valid["item"].to_list()) & set(cold.test.tolist())
    assert not set(out.test["item"].to_list()) & set(cold.valid.tolist())

    want = expected_splits(data, cold)
    for split in ("train", "valid", "test"):
        assert rows_of(getattr(out, split)) == want[split], split
    # every original interaction exactly once across the splits (the repeated pair twice, as given)
    before = rows_of(data.train) + rows_of(data.valid) + rows_of(data.test)
    after = rows_of(out.train) + rows_of(out.valid) + rows_of(out.test)
    assert after == before
    # schemas, sizes and ids untouched
    for split in ("train", "valid", "test"):
        assert getattr(out, split).schema == getattr(data, split).schema
    assert (out.num_users, out.num_items, out.user_ids, out.item_ids) == (NUM_USERS, NUM_ITEMS, None, None)
    assert data.train.height == 120  # the input is not modified


def test_without_valid_every_cold_item_goes_to_test():
    data = make_data(3, valid=False)
    out, cold = hold_out_items(data, ColdStartConfig(ratio=0.3, valid_share=0.5, seed=1))
    assert out.valid is None and cold.valid.size == 0 and cold.test.size == round(0.3 * len(present_items(data)))
    assert np.array_equal(cold.all, cold.test) and np.array_equal(cold.of_split("test"), cold.test)
    want = expected_splits(data, cold)
    assert rows_of(out.train) == want["train"] and rows_of(out.test) == want["test"]
    assert set(cold.test.tolist()) <= set(out.test["item"].to_list())  # every cold item is a test target


def test_eligible_mask_limits_the_draw():
    data = make_data(1)
    eligible = np.zeros(NUM_ITEMS, dtype=bool)
    eligible[::3] = True  # items with content: 0, 3, 6, ..., 39 (39 has no interaction)
    out, cold = hold_out_items(data, ColdStartConfig(ratio=0.5, seed=4), eligible=eligible)
    pool = [i for i in range(0, NUM_ITEMS, 3) if i in present_items(data)]
    assert 8 <= len(pool) <= 13 and cold.all.size == round(0.5 * len(pool))
    assert set(cold.all.tolist()) <= set(pool)
    assert rows_of(out.train) == expected_splits(data, cold)["train"]


def test_deterministic_by_seed():
    data = make_data(2)
    draws = {}
    for seed in (11, 11, 12):
        out, cold = hold_out_items(data, ColdStartConfig(ratio=0.3, seed=seed))
        draws.setdefault(seed, []).append((cold.valid.tolist(), cold.test.tolist(), out.train.rows()))
    assert draws[11][0] == draws[11][1]
    assert draws[11][0][:2] != draws[12][0][:2]
    # the seed of the item draw: the same items whatever the split of the data around them
    _, cold_again = hold_out_items(make_data(2), ColdStartConfig(ratio=0.3, seed=11))
    assert cold_again.valid.tolist() == draws[11][0][0]


def test_cold_items_accessors():
    cold = ColdItems(np.array([2, 9]), np.array([1, 5, 7]))
    assert cold.all.tolist() == [1, 2, 5, 7, 9]
    assert cold.of_split("valid").tolist() == [2, 9] and cold.of_split("test").tolist() == [1, 5, 7]


def test_too_few_items_is_an_error():
    data = make_data(0)
    assert len(present_items(data)) == 38
    with pytest.raises(DataError, match=r"data\.cold_items\.ratio: 0\.01 of 38 eligible items holds out 0; need at "
                                        r"least one cold and one warm item"):
        hold_out_items(data, ColdStartConfig(ratio=0.01))
    eligible = np.zeros(NUM_ITEMS, dtype=bool)
    eligible[[4, 5]] = True
    with pytest.raises(DataError, match=r"0\.9 of 2 eligible items holds out 2"):
        hold_out_items(data, ColdStartConfig(ratio=0.9), eligible=eligible)


def test_empty_train_is_an_error():
    # every training interaction is with item 0, every test one with item 1: holding out item 0 empties train,
    # holding out item 1 changes nothing (it was test only)
    train = pl.DataFrame({"user": [0, 1], "item": [0, 0]})
    test = pl.DataFrame({"user": [0, 1], "item": [1, 1]})
    data = InteractionData(train, None, test, 2, 2)
    outcomes = collections.Counter()
    for seed in range(20):
        try:
            out, cold = hold_out_items(data, ColdStartConfig(ratio=0.5, seed=seed))
        except DataError as e:
            assert str(e) == "data.cold_items: the train or test split is empty once the cold items are held out"
            outcomes["item 0"] += 1
            continue
        assert cold.test.tolist() == [1] and out.train.equals(train) and out.test.equals(test)
        outcomes["item 1"] += 1
    assert set(outcomes) == {"item 0", "item 1"}


def test_config_bounds():
    for bad in ({"ratio": 0.0}, {"ratio": 1.0}, {"valid_share": 1.5}, {"rato": 0.2}):
        with pytest.raises(Exception):
            ColdStartConfig(**bad)
    for name, field in ColdStartConfig.model_fields.items():
        assert field.description, name
