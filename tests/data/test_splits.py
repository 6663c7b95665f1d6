import polars as pl
import pytest

from engine.data.splits import check_ratios, split_counts, split_leave_one_out, split_random, split_temporal
from engine.errors import DataError


def interactions(sizes: dict[int, int]) -> pl.DataFrame:
    """User u gets sizes[u] rows with items 0..n-1 and timestamps decreasing with the row (so time != row order)."""
    rows = [(u, i, 1000 - 10 * i) for u, n in sizes.items() for i in range(n)]
    return pl.DataFrame(rows, schema=["user", "item", "timestamp"], orient="row")


def keys(df: pl.DataFrame | None) -> set[tuple[int, int]]:
    return set() if df is None else set(df.select("user", "item").iter_rows())


def per_user(df: pl.DataFrame | None) -> dict[int, int]:
    return {} if df is None else dict(df.group_by("user").len().iter_rows())


@pytest.mark.parametrize(
    "n, expected",
    [(1, [1, 0, 0]), (2, [1, 0, 1]), (3, [1, 1, 1]), (4, [2, 1, 1]), (10, [8, 1, 1]), (20, [16, 2, 2]),
     (25, [21, 2, 2])],
)
def test_split_counts_recbole_rule(n, expected):
    assert split_counts(n, (0.8, 0.1, 0.1)) == expected


def test_split_counts_two_parts():
    assert split_counts(1, (0.7, 0.3)) == [1, 0]
    assert split_counts(2, (0.7, 0.3)) == [1, 1]
    assert split_counts(10, (0.7, 0.3)) == [7, 3]


@pytest.mark.parametrize(
    "ratios, match",
    [
        ([0.8, 0.2, 0.1], "sum to 1"),
        ([1.0], "2 .* or 3"),
        ([0.5, 0.5, 0.0], "> 0"),
        ([1.2, -0.2], "> 0"),
        ([0.25, 0.25, 0.25, 0.25], "2 .* or 3"),
    ],
)
def test_check_ratios_rejects(ratios, match):
    with pytest.raises(ValueError, match=match):
        check_ratios(ratios)
    with pytest.raises(ValueError, match=match):
        split_random(interactions({0: 5}), ratios)


def test_check_ratios_tolerance():
    assert check_ratios([0.7, 0.2, 0.1 + 5e-7]) == (0.7, 0.2, 0.1 + 5e-7)


SIZES = {0: 1, 1: 2, 2: 3, 3: 10, 4: 20, 5: 4}


@pytest.mark.parametrize("strategy", ["random", "temporal"])
def test_ratio_splits_sizes_and_disjointness(strategy):
    df = interactions(SIZES)
    train, valid, test = split_random(df, seed=7) if strategy == "random" else split_temporal(df)
    assert train.height + valid.height + test.height == df.height
    assert keys(train) | keys(valid) | keys(test) == keys(df)
    assert not (keys(train) & keys(valid)) and not (keys(train) & keys(test)) and not (keys(valid) & keys(test))
    # hand-computed per-user counts (RecBole's rule): 1 -> train only, 2 -> 1/0/1, 3 -> 1/1/1, ...
    assert per_user(train) == {0: 1, 1: 1, 2: 1, 3: 8, 4: 16, 5: 2}
    assert per_user(valid) == {2: 1, 3: 1, 4: 2, 5: 1}
    assert per_user(test) == {1: 1, 2: 1, 3: 1, 4: 2, 5: 1}
    assert train.columns == df.columns


def test_random_split_is_deterministic_and_depends_on_seed():
    df = interactions({u: 30 for u in range(20)})
    a = split_random(df, seed=1)
    b = split_random(df, seed=1)
    c = split_random(df, seed=2)
    for x, y in zip(a, b):
        assert x.equals(y)
    assert keys(a[2]) != keys(c[2])
    # rows keep their original order inside a split
    assert a[0]["item"].to_list() == a[0].sort("user", "item")["item"].to_list()


def test_random_split_two_ratios():
    train, valid, test = split_random(interactions({0: 10, 1: 1}), ratios=[0.7, 0.3], seed=0)
    assert valid is None
    assert per_user(train) == {0: 7, 1: 1} and per_user(test) == {0: 3}


def test_temporal_split_puts_oldest_in_train():
    df = interactions({0: 10})  # item i has timestamp 1000 - 10 i: item 9 is the oldest
    train, valid, test = split_temporal(df)
    assert sorted(train["item"]) == list(range(2, 10))
    assert valid["item"].to_list() == [1] and test["item"].to_list() == [0]


def test_temporal_ties_follow_row_order():
    df = pl.DataFrame({"user": [0, 0, 0], "item": [5, 6, 7], "timestamp": [1, 1, 1]})
    train, valid, test = split_temporal(df)
    assert (train["item"].to_list(), valid["item"].to_list(), test["item"].to_list()) == ([5], [6], [7])


def test_leave_one_out_picks_by_timestamp():
    df = pl.DataFrame(
        {
            "user": [0, 0, 0, 0, 1, 1, 2],
            "item": [10, 11, 12, 13, 20, 21, 30],
            "timestamp": [40, 10, 30, 20, 5, 6, 1],
        }
    )
    train, valid, test = split_leave_one_out(df)
    assert test.rows() == [(0, 10, 40)]
    assert valid.rows() == [(0, 12, 30)]
    # user 0 keeps its two oldest; users 1 (2 rows) and 2 (1 row) have fewer than 3: all in train
    assert train.rows() == [(0, 11, 10), (0, 13, 20), (1, 20, 5), (1, 21, 6), (2, 30, 1)]


def test_time_splits_need_a_timestamp():
    df = pl.DataFrame({"user": [0], "item": [1]})
    with pytest.raises(DataError, match="'temporal' needs column.*timestamp.*set timestamp_col"):
        split_temporal(df)
    with pytest.raises(DataError, match="'leave_one_out' needs column"):
        split_leave_one_out(df)


def test_empty_input():
    empty = interactions({})
    for out in (split_random(empty), split_temporal(empty), split_leave_one_out(empty)):
        assert all(part.height == 0 for part in out)
