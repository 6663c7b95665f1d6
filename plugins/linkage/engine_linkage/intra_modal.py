"""Intra-modal terms: the contrastive objective applied to each field's own vectors, beside the record vectors'.

The record-level objective trains the field encoders only through the fused record vector, where a strong field
(the OCR'd text of a scan) can carry the loss while a weak one (the scan) barely moves. An intra-modal term asks the
left and right vectors of the *same* field of a matched pair to match too, each field against the other pairs of
the batch, so every field's encoder learns to link on its own (CLIPPINGS trains each tower this way before pooling).

A pair where either side lacks the field does not take part in that field's term; a field with fewer than two such
pairs in the batch adds nothing. The loss is the mean over the fields that took part.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from engine.errors import ConfigError

__all__ = ["intra_modal_loss", "intra_slots"]


def intra_slots(slots, config) -> list[int]:
    """Indices of the field slots ``config`` (``model.intra_modal``) names: every slot of each field named, every
    slot when it names none, none without the config. An unknown field is a :class:`ConfigError`."""
    if config is None:
        return []
    names = [s.name for s in slots]
    if config.fields is None:
        return list(range(len(names)))
    unknown = [f for f in config.fields if f not in names]
    if unknown:
        raise ConfigError(f"model.intra_modal.fields: unknown field {unknown[0]!r}; the fields are "
                          f"{', '.join(dict.fromkeys(names))}")
    return [i for i, n in enumerate(names) if n in config.fields]


def intra_modal_loss(contrast, fl: Tensor, ml: Tensor, fr: Tensor, mr: Tensor,
                     slots: Sequence[int]) -> Tensor | None:
    """Mean over ``slots`` of ``contrast(fl[rows, s], fr[rows, s]).loss``, ``rows`` the pairs where both sides
    have field slot ``s``.

    Args:
        contrast: a pair objective (``(anchors [B, d], positives [B, d]) -> ObjectiveOutput``), row ``i`` of
            both sides being a matched pair and the other rows its negatives.
        fl, fr: field vectors of the left and right records of the matched pairs, ``[B, F, d]``.
        ml, mr: whether each field is present, ``bool [B, F]``.
        slots: which field slots take part (indices into ``F``).

    Returns:
        The mean loss, or None when no slot has two pairs with the field on both sides.
    """
    losses = []
    for s in slots:
        rows = ml[:, s] & mr[:, s]
        if int(rows.sum()) >= 2:
            losses.append(contrast(fl[rows, s], fr[rows, s]).loss)
    return torch.stack(losses).mean() if losses else None
