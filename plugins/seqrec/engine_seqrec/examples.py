"""Training examples cut from the training prefixes, and the batches the ``seqrec`` task trains on.

An example is a slice ``items[start:end]`` of one user's training prefix; its targets are the same slice shifted by
one (``items[start + 1:end + 1]``), so position ``t`` learns to predict the item after it. Without prefix
augmentation each user gives one example, the whole prefix but its last item (SASRec, CL4SRec, ICLRec); with it,
every prefix of the training prefix is an example (RecBole, DuoRec, MCLRec), usually trained on its last position
only (``train_positions: last``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .data import SequenceData, left_pad

__all__ = ["TrainingExamples", "SeqBatch"]


class SeqBatch(NamedTuple):
    """One training batch; every tensor is left-padded to the same width ``L``.

    Args:
        inputs (Tensor): ``[B, L]`` item ids, 0 on padding.
        targets (Tensor): ``[B, L]`` the next item of each position, 0 on padding.
        lengths (Tensor): ``[B]`` real items per row.
        negatives (Tensor, optional): ``[B, L, K]`` sampled negatives of each position (sampled losses only).
        views (tuple[Tensor, ...]): extra sequence batches ``[B, L]`` for the contrastive term (two augmented views,
            or the supervised positives); empty when there is none.
        index (Tensor): ``[B]`` the example ids (positions in :class:`TrainingExamples`).
    """

    inputs: Tensor
    targets: Tensor
    lengths: Tensor
    negatives: Tensor | None
    views: tuple[Tensor, ...]
    index: Tensor

    def to(self, device: torch.device | str) -> "SeqBatch":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return SeqBatch(move(self.inputs), move(self.targets), move(self.lengths), move(self.negatives),
                        tuple(move(v) for v in self.views), move(self.index))


class TrainingExamples:
    """The training examples of a :class:`SequenceData`, as ``(start, end)`` offsets into its items.

    Args:
        data (SequenceData): the sequences.
        prefix_augmentation (bool, optional): every prefix of each training prefix is an example, instead of one
            example per user. (default: :obj:`False`)

    Users whose training prefix has a single item give no example (there is no pair to learn from), but they are
    still evaluated.
    """

    def __init__(self, data: SequenceData, prefix_augmentation: bool = False) -> None:
        self.data = data
        self.prefix_augmentation = prefix_augmentation
        starts, ends = data.bounds("train")
        n = ends - starts  # training prefix lengths, >= 1
        if prefix_augmentation:
            counts = (n - 1).clamp(min=0)
            total = int(counts.sum())
            user = torch.repeat_interleave(torch.arange(n.numel()), counts, output_size=total)
            first = torch.repeat_interleave(counts.cumsum(0) - counts, counts, output_size=total)
            self.starts = starts[user]
            self.ends = starts[user] + 1 + (torch.arange(total) - first)  # input ends 1..n-1 after the start
        else:
            has = n >= 2
            self.starts, self.ends = starts[has], ends[has] - 1
            user = torch.nonzero(has).flatten()
        self.users = user

    def __len__(self) -> int:
        return self.starts.numel()

    def next_items(self, index: Tensor) -> Tensor:
        """``[B]``: the item after the last input position of each example (its last target)."""
        return self.data.items[self.ends[index]]

    def lengths(self, index: Tensor, max_len: int) -> Tensor:
        return (self.ends[index] - self.starts[index]).clamp(max=max_len)

    def inputs(self, index: Tensor, max_len: int) -> Tensor:
        return left_pad(self.data.items, self.starts[index], self.ends[index], max_len)

    def targets(self, index: Tensor, max_len: int) -> Tensor:
        return left_pad(self.data.items, self.starts[index] + 1, self.ends[index] + 1, max_len)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)}, prefix_augmentation={self.prefix_augmentation})"
