"""Per-user train / valid / test splits with RecBole's semantics (``group_by: user``).

Each user's interactions are ordered (shuffled with a seed, or by time) and cut by ratio; every user appears in
train. Rows keep their original order within each returned split, and the three splits are disjoint.

How many rows each part gets, for a user with ``n`` interactions (RecBole's ``_calcu_split_ids``): valid and test get
``floor(ratio * n)``; then, from the last part backwards and while train keeps more than one row, a part whose
``ratio * n`` is in ``(0, 1)`` takes one row from train. With ``0.8 / 0.1 / 0.1``: ``n = 1`` -> train only;
``n = 2`` -> 1 train, 1 test; ``n = 3`` -> 1 / 1 / 1; ``n = 10`` -> 8 / 1 / 1.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import polars as pl

from ..errors import DataError

__all__ = ["check_ratios", "split_counts", "split_random", "split_temporal", "split_leave_one_out"]

Splits = tuple[pl.DataFrame, pl.DataFrame | None, pl.DataFrame]


def check_ratios(ratios: Sequence[float]) -> tuple[float, ...]:
    """Validate split ratios: 2 (train, test) or 3 (train, valid, test) positive numbers summing to 1 (within 1e-6).

    Raises:
        ValueError: with a message saying which rule failed (a config validator turns it into a ConfigError).
    """
    ratios = tuple(float(r) for r in ratios)
    if len(ratios) not in (2, 3):
        raise ValueError(f"ratios must have 2 (train, test) or 3 (train, valid, test) entries, got {list(ratios)}")
    if any(not math.isfinite(r) or r <= 0 for r in ratios):
        raise ValueError(f"ratios must all be > 0, got {list(ratios)}")
    if abs(sum(ratios) - 1.0) > 1e-6:
        raise ValueError(f"ratios must sum to 1, got {list(ratios)} (sum {sum(ratios):.6g})")
    return ratios


def split_counts(n: int, ratios: Sequence[float]) -> list[int]:
    """Rows per part for a user with ``n`` interactions (RecBole's rule; see the module docstring)."""
    cnt = [int(r * n) for r in ratios]
    cnt[0] = n - sum(cnt[1:])
    for i in range(1, len(ratios)):
        if cnt[0] <= 1:
            break
        if 0 < ratios[-i] * n < 1:
            cnt[-i] += 1
            cnt[0] -= 1
    return cnt


def _require_columns(df: pl.DataFrame, strategy: str, *cols: str) -> None:
    missing = [c for c in ("user", "item", *cols) if c not in df.columns]
    if missing:
        hint = " (set timestamp_col, or use split strategy 'random')" if "timestamp" in missing else ""
        raise DataError(
            f"split {strategy!r} needs column(s) {', '.join(missing)}{hint}; the data has: {', '.join(df.columns)}"
        )


def _cut(df: pl.DataFrame, rank: pl.Series, ratios: tuple[float, ...]) -> Splits:
    """Assign each row its part from its 0-based ``rank`` within its user, then split."""
    sizes = df.group_by("user").len().get_column("len")
    table = {n: split_counts(n, ratios) for n in sizes.unique().to_list()}
    n_parts = len(ratios)
    lengths = pl.len().over("user")
    bounds = [
        pl.col("__n").replace_strict(list(table), [int(np.cumsum(c)[k]) for c in table.values()], return_dtype=pl.Int64)
        for k in range(n_parts - 1)
    ]
    part = pl.when(pl.col("__rank") < bounds[0]).then(0)
    for k in range(1, n_parts - 1):
        part = part.when(pl.col("__rank") < bounds[k]).then(k)
    part = part.otherwise(n_parts - 1)
    labels = df.select(lengths.alias("__n"), rank.alias("__rank")).select(part.alias("part"))["part"]
    frames = [df.filter(labels == k) for k in range(n_parts)]
    if n_parts == 2:
        return frames[0], None, frames[1]
    return frames[0], frames[1], frames[2]


def _rank_by(df: pl.DataFrame, key: pl.Series) -> pl.Series:
    """0-based position of each row within its user when the user's rows are sorted by ``key`` (ties: row order)."""
    ordered = (
        df.select(pl.col("user"), key.alias("__key"), pl.int_range(pl.len(), dtype=pl.Int64).alias("__row"))
        .sort(["user", "__key", "__row"])
        .with_columns(pl.int_range(pl.len(), dtype=pl.Int64).over("user").alias("__rank"))
    )
    return ordered.sort("__row")["__rank"]


def split_random(df: pl.DataFrame, ratios: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 2020) -> Splits:
    """Shuffle each user's interactions with ``seed`` and cut them by ``ratios``.

    Args:
        df: interactions with ``user`` and ``item``.
        ratios: ``(train, valid, test)`` or ``(train, test)``.
        seed: the shuffle seed; the same input and seed give the same splits.

    Returns:
        ``(train, valid, test)``; ``valid`` is ``None`` with 2 ratios.
    """
    ratios = check_ratios(ratios)
    _require_columns(df, "random")
    key = pl.Series(np.random.default_rng(seed).random(df.height))
    return _cut(df, _rank_by(df, key), ratios)


def split_temporal(df: pl.DataFrame, ratios: Sequence[float] = (0.8, 0.1, 0.1)) -> Splits:
    """Order each user's interactions by ``timestamp`` (ties: row order) and cut by ``ratios``: oldest to train,
    newest to test.

    Raises:
        DataError: no ``timestamp`` column.
    """
    ratios = check_ratios(ratios)
    _require_columns(df, "temporal", "timestamp")
    return _cut(df, _rank_by(df, df["timestamp"]), ratios)


def split_leave_one_out(df: pl.DataFrame) -> Splits:
    """Per user: the latest interaction (by ``timestamp``, ties by row order) goes to test, the second latest to
    valid, the rest to train. Users with fewer than 3 interactions keep all of them in train.

    Raises:
        DataError: no ``timestamp`` column.
    """
    _require_columns(df, "leave_one_out", "timestamp")
    rank = _rank_by(df, df["timestamp"])
    labels = df.select(pl.len().over("user").alias("n"), rank.alias("r")).select(
        pl.when(pl.col("n") < 3)
        .then(0)
        .when(pl.col("r") == pl.col("n") - 1)
        .then(2)
        .when(pl.col("r") == pl.col("n") - 2)
        .then(1)
        .otherwise(0)
        .alias("part")
    )["part"]
    return df.filter(labels == 0), df.filter(labels == 1), df.filter(labels == 2)
