"""The synthetic person-record generator: determinism, entity ids, corruption rates and what each corruption does."""

from __future__ import annotations

import itertools
import re
import time

import numpy as np
import polars as pl
import pytest

from engine_linkage.synthetic import ACTIONS, DIGIT_FIELDS, FIELDS, Corruption, generate_people, true_pairs
from engine_linkage.synthetic import _KEYS, _NICK, _PREFIX, _TYPES

N = 20_000


@pytest.fixture(scope="module")
def people():
    return generate_people(N, seed=7, return_log=True)


@pytest.fixture(scope="module")
def dups(people):
    """Each duplicate beside its original (``o_<field>``) and its log."""
    df, log = people
    frame = pl.concat([df, log.rename({f: f"a_{f}" for f in FIELDS})], how="horizontal")
    orig = frame.filter(~pl.col("duplicate")).select("entity", *[pl.col(f).alias(f"o_{f}") for f in FIELDS])
    return frame.filter(pl.col("duplicate")).join(orig, on="entity", how="left")


def osa_distance(a: str, b: str) -> int:
    """Optimal string alignment distance (edits: substitution, insertion, deletion, adjacent transposition)."""
    d = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        d[i][0] = i
    for j in range(len(b) + 1):
        d[0][j] = j
    for i, j in itertools.product(range(1, len(a) + 1), range(1, len(b) + 1)):
        d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
        if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
            d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[-1][-1]


def within(observed: float, p: float, n: int, sigmas: float = 4.0) -> bool:
    return abs(observed - p) <= sigmas * np.sqrt(p * (1 - p) / n) + 1e-12


# -- determinism and shape -------------------------------------------------------------------------------------------


def test_same_seed_same_frame_other_seed_other_frame():
    a, la = generate_people(3_000, seed=3, return_log=True)
    b, lb = generate_people(3_000, seed=3, return_log=True)
    assert a.equals(b) and la.equals(lb)
    c = generate_people(3_000, seed=4)
    assert not a.equals(c)
    assert a.columns == ["rec_id", "entity", *FIELDS] and a.schema["entity"] == pl.Int64
    assert all(a.schema[f] == pl.String for f in FIELDS)


@pytest.mark.parametrize("n, share, max_dups", [(1, 0.0, 1), (10, 0.5, 1), (1000, 0.4, 4), (997, 0.7, 3),
                                               (500, 0.0, 2)])
def test_entity_ids_are_consistent(n, share, max_dups):
    df = generate_people(n, duplicate_share=share, max_duplicates=max_dups, seed=1)
    assert df.height == n and df["rec_id"].n_unique() == n
    parsed = df["rec_id"].str.extract_groups(r"^rec-(\d+)-(org|dup-(\d+))$")
    assert parsed.struct.field("1").null_count() == 0
    assert (parsed.struct.field("1").cast(pl.Int64) == df["entity"]).all()
    is_org = parsed.struct.field("2") == "org"
    n_dup = int(round(n * share))
    assert int((~is_org).sum()) == n_dup
    # one original per entity, entities 0..E-1, at most max_dups duplicates numbered 0..k-1
    ent = df["entity"].to_numpy()
    assert np.array_equal(np.sort(ent[is_org.to_numpy()]), np.arange(n - n_dup))
    counts = np.bincount(ent, minlength=n - n_dup) - 1
    assert counts.max(initial=0) <= max_dups
    dup_no = parsed.struct.field("3").drop_nulls().cast(pl.Int64).to_numpy()
    ent_dup = ent[~is_org.to_numpy()]
    for e in np.unique(ent_dup)[:50]:
        assert sorted(dup_no[ent_dup == e].tolist()) == list(range(counts[e]))


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="num_records"):
        generate_people(0)
    with pytest.raises(ValueError, match="duplicate_share"):
        generate_people(10, duplicate_share=1.0)
    with pytest.raises(ValueError, match="max_duplicates"):
        generate_people(10, duplicate_share=0.9, max_duplicates=2)
    with pytest.raises(ValueError, match="probability"):
        Corruption(typo=1.5)
    with pytest.raises(ValueError, match="at most 1"):
        Corruption(missing=0.5, typo=0.4, variant=0.2)


# -- true pairs ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_true_pairs_match_a_double_loop(seed):
    entity = np.random.default_rng(seed).integers(0, 40, size=120)
    a, b = true_pairs(entity)
    naive = [(i, j) for i in range(entity.size) for j in range(i + 1, entity.size) if entity[i] == entity[j]]
    assert list(zip(a.tolist(), b.tolist())) == naive
    assert true_pairs(np.arange(5))[0].size == 0


def test_true_pairs_of_generated_records(people):
    df, _ = people
    a, b = true_pairs(df["entity"].to_numpy())
    sizes = np.bincount(df["entity"].to_numpy())
    assert a.size == int((sizes * (sizes - 1) // 2).sum())
    assert (df["entity"].to_numpy()[a] == df["entity"].to_numpy()[b]).all() and (a < b).all()


# -- corruption rates ------------------------------------------------------------------------------------------------


def test_action_rates_are_the_configured_ones(dups):
    c = Corruption()
    m = dups.height
    assert m == int(round(N * 0.4))
    for f in FIELDS:
        act = dups[f"a_{f}"].to_numpy()
        present = dups[f"o_{f}"].is_not_null().to_numpy()
        assert within(float((act == ACTIONS["missing"]).mean()), c.missing, m), f
        # a typo needs a value; the draw is exclusive, so among present values it is exactly typo
        assert within(float((act[present] == ACTIONS["typo"]).mean()), c.typo, int(present.sum())), f
    # variants: only where the field has one
    has_nick = dups["o_given_name"].is_in(list(_NICK)).fill_null(False).to_numpy()
    act = dups["a_given_name"].to_numpy()
    assert within(float((act[has_nick] == ACTIONS["variant"]).mean()), c.variant, int(has_nick.sum()))
    assert not (act[~has_nick] == ACTIONS["variant"]).any()
    for f in ("street_number", "surname", "postcode", "state", "soc_sec_id", "address_2"):
        assert not (dups[f"a_{f}"] == ACTIONS["variant"]).any(), f
    assert within(float(dups["swap_names"].mean()), c.swap_names, m)


def test_original_missing_and_address_2_share(people):
    df, log = people
    orig = df.filter(~log["duplicate"])
    c = Corruption()
    for f in ("given_name", "surname", "postcode", "soc_sec_id"):
        assert within(orig[f].null_count() / orig.height, c.original_missing, orig.height), f
    assert within(1 - orig["address_2"].null_count() / orig.height, c.address_2_share, orig.height)


def test_custom_rates_are_followed():
    c = Corruption(missing=0.2, typo=0.3, variant=0.0, swap_names=0.0, swap_words=0.0, original_missing=0.0)
    df, log = generate_people(10_000, duplicate_share=0.5, seed=5, corruption=c, return_log=True)
    d = log.filter(pl.col("duplicate"))
    for f in ("surname", "soc_sec_id", "date_of_birth"):
        assert within(float((d[f] == 1).mean()), 0.2, d.height)
        assert within(float((d[f] == 2).mean()), 0.3, d.height)  # nothing is missing in originals here
        assert not (d[f] == 3).any()
    assert not d["swap_names"].any() and not d["swap_words"].any()


# -- what each corruption does to the value --------------------------------------------------------------------------


def expected_variant(f: str, value: str) -> set[str]:
    if f == "given_name":
        return set(_NICK[value].split())
    if f == "address_1":
        name, kind = value.rsplit(" ", 1)
        return {f"{name} {_TYPES[kind]}"}
    if f == "suburb":
        pre, rest = value.split(" ", 1)
        return {f"{_PREFIX[pre]} {rest}"}
    if f == "date_of_birth":
        return {value[:4] + value[6:8] + value[4:6]}
    raise AssertionError(f)


def test_each_logged_action_has_its_effect(dups):
    rows = dups.filter(~pl.col("swap_names") & ~pl.col("swap_words")).head(4000).to_dicts()
    seen = {k: 0 for k in ACTIONS}
    for r in rows:
        for f in FIELDS:
            before, after, act = r[f"o_{f}"], r[f], r[f"a_{f}"]
            if act == ACTIONS["none"]:
                assert after == before, (f, r)
                seen["none"] += 1
            elif act == ACTIONS["missing"]:
                assert after is None
                seen["missing"] += 1
            elif act == ACTIONS["typo"]:
                assert before is not None and after != before
                assert after is None or osa_distance(before, after) == 1, (f, before, after)
                if after is not None and len(after) == len(before) and \
                        sum(x != y for x, y in zip(before, after)) == 1:  # a substitution: a keyboard neighbour
                    i = next(i for i, (x, y) in enumerate(zip(before, after)) if x != y)
                    assert after[i] in _KEYS.get(before[i], "abcdefghijklmnopqrstuvwxyz"), (before, after)
                if after is not None and f in DIGIT_FIELDS:
                    assert re.fullmatch(r"\d+", after), (f, after)
                seen["typo"] += 1
            else:
                assert after in expected_variant(f, before), (f, before, after)
                seen["variant"] += 1
    assert min(seen.values()) > 50, seen


def test_swaps(dups):
    names = dups.filter(pl.col("swap_names") & (pl.col("a_given_name") == 0) & (pl.col("a_surname") == 0))
    assert names.height > 20
    assert (names["given_name"].eq_missing(names["o_surname"])).all()
    assert (names["surname"].eq_missing(names["o_given_name"])).all()
    words = dups.filter(pl.col("swap_words") & (pl.col("a_address_1") == 0))
    assert words.height > 20
    flipped = words["o_address_1"].str.split(" ").list.reverse().list.join(" ")
    assert (words["address_1"] == flipped).all()
    assert (words["o_address_1"].str.split(" ").list.len() == 2).all()


@pytest.mark.slow
def test_a_million_records_in_well_under_a_minute():
    tic = time.perf_counter()
    df = generate_people(1_000_000, seed=0)
    assert df.height == 1_000_000 and time.perf_counter() - tic < 60
