"""Item content and cold-start items in sequential recommendation (``model.content``, ``data.item_features``,
``data.cold_items``; the terms are described in :mod:`engine.content`).

* ``input``: the content embedding is added to the item embedding wherever the encoder reads an item (its input
  and the tied output table), through the encoder's ``item_input``.
* The content view of the items (their content embeddings) is trained with the same next-item loss
  (``rec_weight``): the sequence representations score it, which is what ranks a cold item. At evaluation and
  export, an item that never occurs in a training prefix is represented by its content view.
* ``align``: the pair objective between the table rows of the batch's target items and their content (shared part).

Cold start (:func:`hold_out_sequence_items`): a share of the items with content is drawn; they are removed from
every training prefix, so they never appear in training; validation and test targets are kept (a held-out target
makes a cold user for that split). A sequence whose training prefix becomes empty is dropped (counted).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch import Tensor

from engine.content import ContentConfig, ContentParts, alignment_terms, attach_content, item_features_of
from engine.data.cold_start import ColdItems, ColdStartConfig, draw_cold_items
from engine.errors import DataError

from .data import MIN_LENGTH, SequenceData

__all__ = ["SeqContent", "hold_out_sequence_items"]


def hold_out_sequence_items(data: SequenceData, cfg: ColdStartConfig, eligible: np.ndarray
                            ) -> tuple[SequenceData, ColdItems, int]:
    """``(data without the cold items in any training prefix, cold items, sequences dropped)``.

    Args:
        eligible: bool ``[num_items + 1]``, the items that may be held out (those with content).
    """
    present = np.zeros(data.num_items + 1, dtype=bool)
    present[data.items.numpy()] = True
    cold = draw_cold_items(present, eligible, cfg)
    is_cold = torch.zeros(data.num_items + 1, dtype=torch.bool)
    is_cold[torch.from_numpy(cold)] = True
    lengths = data.lengths()
    position = torch.arange(data.items.numel()) - torch.repeat_interleave(data.indptr[:-1], lengths)
    in_prefix = position < torch.repeat_interleave(lengths - 2, lengths)
    keep_item = ~(in_prefix & is_cold[data.items])
    user_of = torch.repeat_interleave(torch.arange(data.num_users), lengths)
    new_lengths = torch.zeros(data.num_users, dtype=torch.long).index_add_(0, user_of, keep_item.long())
    keep_user = new_lengths >= MIN_LENGTH
    keep_item &= keep_user[user_of]
    kept_lengths = new_lengths[keep_user]
    indptr = torch.cat([kept_lengths.new_zeros(1), kept_lengths.cumsum(0)])
    if kept_lengths.numel() == 0:
        raise DataError("data.cold_items: no sequence keeps a training item once the cold items are held out")
    # rows were the users: once some are dropped, keep which ones remain
    if data.user_ids is not None:
        user_ids = np.asarray(data.user_ids)[keep_user.numpy()]
    else:
        user_ids = None if bool(keep_user.all()) else np.flatnonzero(keep_user.numpy())
    dropped = int((~keep_user).sum())
    out = replace(data, indptr=indptr, items=data.items[keep_item], user_ids=user_ids,
                  num_dropped=data.num_dropped + dropped)
    return out, ColdItems(cold, cold), dropped


class SeqContent:
    """What the seqrec task needs of the content: item inputs, losses, and the item table for ranking."""

    def __init__(self, cfg: ContentConfig, warm: Tensor) -> None:
        self.cfg, self.warm = cfg, warm  # warm: bool [num_items + 1], items of some training prefix

    @classmethod
    def build(cls, registry, cfg: ContentConfig, features, warm: Tensor, dim: int, model) -> "SeqContent":
        """Add ``model.content`` (and ``model.content_align``) to ``model``."""
        attach_content(registry, cfg, features, dim, model)
        return cls(cfg, warm)

    @staticmethod
    def padded(content: Tensor) -> Tensor:
        """``[num_items + 1, D]`` content rows -> ``[num_items + 2, D]`` item input: padding row 0 and the mask
        token row ``num_items + 1`` are zero."""
        zero = content.new_zeros(1, content.shape[1])
        return torch.cat([zero, content[1:], zero])

    def item_input(self, content: Tensor) -> Tensor | None:
        return self.padded(content) if self.cfg.input else None

    def losses(self, model, h: Tensor, t: Tensor, table: Tensor, parts: ContentParts) -> dict[str, Tensor]:
        """Terms on the positions ``h`` ``[N, D]`` with targets ``t`` ``[N]``, given the tower's table."""
        cfg = self.cfg
        out: dict[str, Tensor] = {}
        if cfg.rec_weight > 0:
            out["content/rec"] = cfg.rec_weight * model.loss(h.detach() if cfg.detach else h,
                                                             self.padded(parts.total)[:-1], t).loss
        out.update(alignment_terms(cfg, model, table, parts, t))
        return out

    def serving_table(self, table: Tensor, content: Tensor) -> Tensor:
        """``[num_items + 1, D]``: the tower's rows for warm items, content rows for the others (row 0 zero)."""
        view = self.padded(content)[:-1]
        return torch.where(self.warm.to(table.device).unsqueeze(1), table, view)


def load_sequence_content(spec, data: SequenceData):
    """``data.item_features`` and ``data.cold_items`` applied to sequences: ``(data, item features or None,
    ColdItems or None, warm)`` where ``warm`` (bool ``[num_items + 1]``) marks the items of some training prefix.

    Item ``i`` (``1..num_items``) is joined to the feature row whose id is its original id (the file's id for
    S3Rec files, ``item_ids[i - 1]`` for interaction tables).
    """
    import polars as pl

    ids = None if data.item_ids is None else pl.Series([None, *pl.Series(data.item_ids).cast(pl.String)])
    features = item_features_of(spec, ids, data.num_items + 1)
    cold = None
    if spec.cold_items is not None:
        data, cold, _ = hold_out_sequence_items(data, spec.cold_items, features.has_content)
    warm = torch.zeros(data.num_items + 1, dtype=torch.bool)
    warm[data.history("train")[1]] = True
    return data, features, cold, warm
