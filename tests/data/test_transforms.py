import polars as pl
import pytest

from engine.data.transforms import IdMap, check_dense_ids, dedupe, filter_rating, kcore, map_ids
from engine.errors import DataError


def frame(rows, cols=("user", "item")):
    return pl.DataFrame(rows, schema=list(cols), orient="row")


def test_filter_rating():
    df = frame([(1, 1, 5.0), (1, 2, 3.5), (2, 1, 4.0)], ("user", "item", "rating"))
    assert filter_rating(df, 4).rows() == [(1, 1, 5.0), (2, 1, 4.0)]
    with pytest.raises(DataError, match="needs a rating column"):
        filter_rating(frame([(1, 1)]), 4)


def naive_kcore(rows, uk, ik):
    rows = list(rows)
    while True:
        uc, ic = {}, {}
        for u, i in rows:
            uc[u] = uc.get(u, 0) + 1
            ic[i] = ic.get(i, 0) + 1
        kept = [(u, i) for u, i in rows if uc[u] >= uk and ic[i] >= ik]
        if kept == rows:
            return kept
        rows = kept


def test_kcore_needs_iteration():
    # 2-core on both sides. Pass 1 drops B-c (item c has 1 row), so user B falls to 1 row. Pass 2 drops B-b, so
    # item b falls to 1 row. Pass 3 drops A-b; A keeps a and d. Pass 4 changes nothing.
    rows = [
        ("A", "a"), ("A", "b"), ("A", "d"),
        ("B", "b"), ("B", "c"),
        ("C", "a"), ("C", "d"),
    ]
    df = frame(rows)
    one_pass = df.filter((pl.len().over("user") >= 2) & (pl.len().over("item") >= 2))
    assert one_pass.height == 6  # a single pass is not enough
    out = kcore(df, 2, 2)
    assert out.rows() == [("A", "a"), ("A", "d"), ("C", "a"), ("C", "d")]
    assert out.rows() == naive_kcore(rows, 2, 2)
    # every survivor meets the bounds
    assert out.group_by("user").len()["len"].min() >= 2 and out.group_by("item").len()["len"].min() >= 2


@pytest.mark.parametrize("uk, ik", [(0, 0), (1, 1), (3, 0), (0, 2), (2, 3), (3, 3)])
def test_kcore_matches_naive(uk, ik):
    import random

    rnd = random.Random(uk * 10 + ik)
    rows = sorted({(rnd.randrange(30), rnd.randrange(20)) for _ in range(150)})
    assert kcore(frame(rows), uk, ik).rows() == naive_kcore(rows, uk, ik)


def test_dedupe_keeps_latest_by_timestamp_in_row_order():
    df = frame(
        [(1, 1, 5.0, 30), (1, 2, 1.0, 10), (1, 1, 2.0, 20), (2, 1, 3.0, 5), (1, 2, 4.0, 10)],
        ("user", "item", "rating", "timestamp"),
    )
    # (1,1): latest is ts 30 (row 0). (1,2): tie at ts 10, the later row wins (row 4).
    assert dedupe(df).rows() == [(1, 1, 5.0, 30), (2, 1, 3.0, 5), (1, 2, 4.0, 10)]


def test_dedupe_without_timestamp_keeps_last_row():
    df = frame([(1, 1, 5.0), (1, 2, 1.0), (1, 1, 2.0)], ("user", "item", "rating"))
    assert dedupe(df).rows() == [(1, 2, 1.0), (1, 1, 2.0)]


def test_map_ids_dense_sorted_over_union():
    train = frame([("u3", "b"), ("u1", "a")])
    test = frame([("u2", "c"), ("u1", "b")])
    mapped, users, items = map_ids({"train": train, "valid": None, "test": test})
    assert users.to_list() == ["u1", "u2", "u3"] and items.to_list() == ["a", "b", "c"]
    assert mapped["valid"] is None
    assert mapped["train"].rows() == [(2, 1), (0, 0)]
    assert mapped["test"].rows() == [(1, 2), (0, 1)]
    assert mapped["train"].schema == pl.Schema({"user": pl.Int64, "item": pl.Int64})


def test_map_ids_integers_sort_numerically_and_extra_columns_survive():
    df = frame([(100, 7, 1.0), (9, 7, 2.0), (20, 3, 3.0)], ("user", "item", "rating"))
    mapped, users, items = map_ids({"all": df})
    assert users.to_list() == [9, 20, 100] and items.to_list() == [3, 7]
    assert mapped["all"].rows() == [(2, 1, 1.0), (0, 1, 2.0), (1, 0, 3.0)]


def test_map_ids_mixed_dtypes_become_text():
    _, users, _ = map_ids({"a": frame([(1, 1)]), "b": frame([("x", 1)])})
    assert users.to_list() == ["1", "x"]


def test_idmap_unknown_id():
    idmap = IdMap.fit({"train": frame([(1, 1)])})
    assert (idmap.num_users, idmap.num_items) == (1, 1)
    with pytest.raises(DataError, match="user id 5 is not in the id map"):
        idmap.transform(frame([(5, 1)]))


def test_check_dense_ids():
    train = frame([(0, 3), (2, 1)])
    test = frame([(4, 0)])
    assert check_dense_ids({"train": train, "valid": None, "test": test}) == (5, 4)
    assert check_dense_ids({"train": frame([]).cast(pl.Int64)}) == (0, 0)
    with pytest.raises(DataError, match="test split: item ids must be >= 0"):
        check_dense_ids({"train": train, "test": frame([(0, -1)])})
    with pytest.raises(DataError, match="user ids must be integers"):
        check_dense_ids({"train": frame([("a", 1)])})
