"""Cold-start items: a share of the items is held out entirely, so the model never sees them in training.

``hold_out_items`` draws ``ratio`` of the eligible items (those with content, by default) with ``seed``, splits them
into cold-valid and cold-test items (``valid_share`` of them to valid), and moves *every* interaction with a cold item
out of train: to valid for cold-valid items, to test for cold-test items (all of them to test when there is no valid
split). The warm interactions keep their split. Item ids are unchanged, so cold items keep their rows in any item
table; their embeddings must come from content alone.

Evaluation (see :func:`engine.evaluate.cold.cold_warm_ranking`) ranks, per split: all items (``recall@20``...), the
warm items only (``warm_``), and the split's cold items only (``cold_``), the usual protocol of cold-start papers
(e.g. CLCRec, Wei et al. 2021).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import polars as pl
from pydantic import Field

from ..components import ComponentConfig
from ..errors import DataError
from .interactions import InteractionData

__all__ = ["ColdStartConfig", "ColdItems", "draw_cold_items", "hold_out_items"]


class ColdStartConfig(ComponentConfig):
    """``data.cold_items``: hold out a share of items for cold-start evaluation."""

    ratio: float = Field(0.2, gt=0, lt=1, description="share of eligible items held out (never in training)")
    valid_share: float = Field(0.5, ge=0, le=1, description="share of the held-out items whose interactions "
                                                             "form cold validation; the rest are test")
    seed: int = Field(2020, description="draw seed")


@dataclass(frozen=True)
class ColdItems:
    """The held-out item ids (sorted)."""

    valid: np.ndarray
    test: np.ndarray

    @property
    def all(self) -> np.ndarray:
        return np.union1d(self.valid, self.test)

    def of_split(self, split: str) -> np.ndarray:
        return self.valid if split == "valid" else self.test


def draw_cold_items(present: np.ndarray, eligible: np.ndarray | None, cfg: ColdStartConfig) -> np.ndarray:
    """``cfg.ratio`` of the items that are ``present`` (bool, by id) and ``eligible`` (default all), drawn with
    ``cfg.seed``; sorted ids.

    Raises:
        DataError: the draw would hold out no item, or every item.
    """
    pool = np.flatnonzero(present if eligible is None else present & eligible)
    n_cold = int(round(cfg.ratio * pool.size))
    if n_cold < 1 or n_cold >= pool.size:
        raise DataError(f"data.cold_items.ratio: {cfg.ratio} of {pool.size} eligible items holds out {n_cold}; "
                        "need at least one cold and one warm item")
    return np.sort(np.random.default_rng(cfg.seed).choice(pool, n_cold, replace=False))


def hold_out_items(data: InteractionData, cfg: ColdStartConfig,
                   eligible: np.ndarray | None = None) -> tuple[InteractionData, ColdItems]:
    """Hold out ``cfg.ratio`` of the ``eligible`` items (bool ``[num_items]``; default all) that have interactions.

    Raises:
        DataError: too few eligible items to hold any out, or train / test empty afterwards.
    """
    frames = [data.train] + ([data.valid] if data.valid is not None else []) + [data.test]
    all_rows = pl.concat([f.select("user", "item") for f in frames])
    present = np.zeros(data.num_items, dtype=bool)
    present[all_rows["item"].unique().to_numpy()] = True
    cold = draw_cold_items(present, eligible, cfg)
    n_cold = cold.size
    perm = np.random.default_rng(cfg.seed + 1).permutation(cold)
    n_valid = int(round(cfg.valid_share * n_cold)) if data.valid is not None else 0
    cold_valid, cold_test = np.sort(perm[:n_valid]), np.sort(perm[n_valid:])

    def pick(items: np.ndarray) -> pl.Expr:
        return pl.col("item").is_in(items.tolist())

    is_cold = pick(cold)
    everything = pl.concat(frames, how="diagonal_relaxed")
    train = data.train.filter(~is_cold)
    valid = None
    if data.valid is not None:
        valid = pl.concat([data.valid.filter(~is_cold), everything.filter(pick(cold_valid))],
                          how="diagonal_relaxed").select(data.valid.columns)
    test = pl.concat([data.test.filter(~is_cold), everything.filter(pick(cold_test))],
                     how="diagonal_relaxed").select(data.test.columns)
    if train.height == 0 or test.height == 0:
        raise DataError("data.cold_items: the train or test split is empty once the cold items are held out")
    return replace(data, train=train, valid=valid, test=test), ColdItems(cold_valid, cold_test)
