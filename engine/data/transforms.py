"""Filters and id maps over interaction frames (columns ``user``, ``item``, optional ``rating``, ``timestamp``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import polars as pl

from ..errors import DataError

__all__ = ["filter_rating", "kcore", "dedupe", "IdMap", "map_ids", "check_dense_ids"]


def filter_rating(df: pl.DataFrame, threshold: float) -> pl.DataFrame:
    """Keep the rows with ``rating >= threshold`` (explicit feedback -> implicit positives).

    Raises:
        DataError: the frame has no ``rating`` column.
    """
    if "rating" not in df.columns:
        raise DataError(
            f"rating_threshold={threshold} needs a rating column, but the data has only: {', '.join(df.columns)}"
        )
    return df.filter(pl.col("rating") >= threshold)


def kcore(df: pl.DataFrame, user_k: int, item_k: int) -> pl.DataFrame:
    """Iterative k-core: drop users with fewer than ``user_k`` rows and items with fewer than ``item_k``, repeatedly,
    until every remaining user and item meets its bound (removing an item can push a user below ``user_k``).

    A bound of 0 or 1 switches that side off. Row order is kept.
    """
    if user_k <= 1 and item_k <= 1:
        return df
    while True:
        keep = pl.lit(True)
        if user_k > 1:
            keep = keep & (pl.len().over("user") >= user_k)
        if item_k > 1:
            keep = keep & (pl.len().over("item") >= item_k)
        out = df.filter(keep)
        if out.height == df.height:
            return out
        df = out


def dedupe(df: pl.DataFrame) -> pl.DataFrame:
    """Drop repeated ``(user, item)`` pairs, keeping the last one: the latest by ``timestamp`` when there is one
    (ties broken by row order), else the last in row order. The kept rows stay in their original order."""
    idx = "__row"
    order = ["timestamp", idx] if "timestamp" in df.columns else [idx]
    return (
        df.with_row_index(idx)
        .sort(order, nulls_last=False)
        .unique(subset=["user", "item"], keep="last")
        .sort(idx)
        .drop(idx)
    )


def _union_ids(frames: list[pl.DataFrame], col: str) -> pl.Series:
    parts = [f[col] for f in frames]
    dtypes = {p.dtype for p in parts}
    if len(dtypes) > 1:  # e.g. ints in one file, strings in another: compare as text
        parts = [p.cast(pl.String) for p in parts]
    return pl.concat(parts).unique().sort().rename(col)


@dataclass(frozen=True)
class IdMap:
    """Original ids -> dense 0-based ``Int64`` ids, sorted by original id (so the map is deterministic).

    Attributes:
        user_ids, item_ids: internal index -> original id.
    """

    user_ids: pl.Series
    item_ids: pl.Series

    @classmethod
    def fit(cls, frames: Mapping[str, pl.DataFrame | None]) -> "IdMap":
        """Build the map over the union of the ids in every frame (``None`` frames are skipped)."""
        present = [f for f in frames.values() if f is not None]
        if not present:
            raise DataError("no interaction frames to map ids over")
        return cls(_union_ids(present, "user"), _union_ids(present, "item"))

    @property
    def num_users(self) -> int:
        return self.user_ids.len()

    @property
    def num_items(self) -> int:
        return self.item_ids.len()

    def transform(self, df: pl.DataFrame) -> pl.DataFrame:
        """Replace ``user`` and ``item`` by their dense ids (every id must be in the map)."""
        out = df
        for col, ids in (("user", self.user_ids), ("item", self.item_ids)):
            src = out[col] if out[col].dtype == ids.dtype else out[col].cast(ids.dtype)
            dense = pl.Series(col, range(ids.len()), dtype=pl.Int64)
            try:
                mapped = src.replace_strict(ids, dense, return_dtype=pl.Int64)
            except pl.exceptions.InvalidOperationError:
                unknown = src.filter(~src.is_in(ids.implode()))
                raise DataError(f"{col} id {unknown[0]!r} is not in the id map") from None
            out = out.with_columns(mapped.alias(col))
        return out


def map_ids(
    frames: Mapping[str, pl.DataFrame | None],
) -> tuple[dict[str, pl.DataFrame | None], pl.Series, pl.Series]:
    """Map ``user`` / ``item`` in every frame to dense 0-based ``Int64`` ids over the union of all frames.

    Args:
        frames: name -> frame (``None`` passes through, e.g. a missing validation split).

    Returns:
        ``(mapped frames, user_ids, item_ids)``, where ``user_ids[i]`` is the original id of internal user ``i``;
        ids are numbered in sorted order of the original ids.
    """
    idmap = IdMap.fit(frames)
    mapped = {name: None if f is None else idmap.transform(f) for name, f in frames.items()}
    return mapped, idmap.user_ids, idmap.item_ids


def check_dense_ids(frames: Mapping[str, pl.DataFrame | None]) -> tuple[int, int]:
    """Check ids that are already dense 0-based integers (LightGCN format) and size the id spaces.

    Args:
        frames: split name -> frame (``None`` skipped).

    Returns:
        ``(num_users, num_items)``: one more than the largest id over all frames (0 when every frame is empty).

    Raises:
        DataError: an id column is not integer, or an id is negative (the message names the split).
    """
    num = {"user": 0, "item": 0}
    for name, df in frames.items():
        if df is None:
            continue
        for col in ("user", "item"):
            s = df[col]
            if not s.dtype.is_integer():
                raise DataError(f"{name} split: {col} ids must be integers (got {s.dtype})")
            if s.len() == 0:
                continue
            lo, hi = s.min(), s.max()
            if lo < 0:
                raise DataError(f"{name} split: {col} ids must be >= 0 (dense 0-based ids), found {lo}")
            num[col] = max(num[col], int(hi) + 1)
    return num["user"], num["item"]
