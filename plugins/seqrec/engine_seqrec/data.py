"""Item sequences per user in time order, and their leave-one-out views.

The protocol of SASRec, S3Rec, CL4SRec, ICLRec and DuoRec: for a sequence :math:`s_u = [v_1, \\dots, v_n]`
(``n >= 3``), the last item :math:`v_n` is the test target, the second-to-last :math:`v_{n-1}` the validation
target, and :math:`[v_1, \\dots, v_{n-2}]` the training prefix. The model sees the training prefix to predict the
validation target, and the training prefix plus the validation item to predict the test target.

Item ids are ``1..num_items``; ``0`` is the padding id and ``num_items + 1`` the mask token of augmenters, so both
stay free in every sequence. Sequences are stored once, as CSR (``indptr`` / ``items``), and every view is a pair of
``(start, end)`` offsets into them, so no view copies the data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

__all__ = ["SequenceData", "left_pad", "Split"]

Split = Literal["train", "valid", "test"]

#: items a sequence needs to give a training prefix, a validation target and a test target
MIN_LENGTH = 3


def left_pad(items: Tensor, starts: Tensor, ends: Tensor, width: int) -> Tensor:
    """The slices ``items[starts[b]:ends[b]]`` as rows of a left-padded ``LongTensor [B, width]``.

    A slice longer than ``width`` keeps its last ``width`` items (the most recent ones), so the most recent item of
    every row sits in column ``width - 1`` and padding (``0``) fills the left. Vectorised: one gather.

    Args:
        items (Tensor): the flat item ids, ``[nnz]``.
        starts (Tensor): first offset of each slice, ``[B]``.
        ends (Tensor): one past the last offset of each slice, ``[B]`` (``ends >= starts``).
        width (int): number of columns ``L``.
    """
    if width < 1:
        raise ValueError(f"width must be >= 1 (got {width})")
    starts, ends = starts.long(), ends.long()
    n = (ends - starts).clamp(min=0, max=width)
    cols = torch.arange(width, device=items.device).unsqueeze(0)
    offset = cols - (width - n).unsqueeze(1)  # < 0 on padding
    real = offset >= 0
    index = ((ends - n).unsqueeze(1) + offset).clamp(min=0, max=max(items.numel() - 1, 0))
    if items.numel() == 0:
        return torch.zeros(starts.numel(), width, dtype=torch.long, device=items.device)
    return torch.where(real, items[index], torch.zeros((), dtype=torch.long, device=items.device))


@dataclass
class SequenceData:
    """Per-user item sequences in time order, as CSR.

    Row ``u`` is ``items[indptr[u]:indptr[u + 1]]``, oldest first. Every row has at least :data:`MIN_LENGTH`
    items (the sources drop shorter ones).

    Attributes:
        indptr: ``LongTensor [num_users + 1]``, ``indptr[0] = 0``.
        items: ``LongTensor [nnz]``, ids in ``1..num_items``.
        num_items: the largest item id; the id space is ``0..num_items + 1`` (padding, items, mask token).
        user_ids: the original user id of each row (``None`` when rows are the users).
        item_ids: the original id of internal item ``i`` at position ``i - 1`` (``None`` when ids are the file's).
        checksums: ``file path -> sha256`` of every file read.
        num_dropped: sequences the source dropped for being shorter than its ``min_length``.
    """

    indptr: Tensor
    items: Tensor
    num_items: int
    user_ids: np.ndarray | None = None
    item_ids: Any = None
    checksums: dict[str, str] = field(default_factory=dict)
    num_dropped: int = 0

    def __post_init__(self) -> None:
        self.indptr = torch.as_tensor(self.indptr, dtype=torch.long)
        self.items = torch.as_tensor(self.items, dtype=torch.long)
        if self.indptr.dim() != 1 or self.indptr.numel() < 1 or int(self.indptr[0]) != 0:
            raise ValueError("indptr must be 1-D and start at 0")
        if int(self.indptr[-1]) != self.items.numel():
            raise ValueError(f"indptr ends at {int(self.indptr[-1])} but there are {self.items.numel()} items")
        lengths = self.lengths()
        if lengths.numel() and int(lengths.min()) < MIN_LENGTH:
            raise ValueError(f"every sequence needs >= {MIN_LENGTH} items (train prefix, valid and test targets); "
                             f"the shortest has {int(lengths.min())}")
        if self.items.numel() and (int(self.items.min()) < 1 or int(self.items.max()) > self.num_items):
            raise ValueError(f"item ids must lie in [1, {self.num_items}] "
                             f"(got {int(self.items.min())}..{int(self.items.max())})")

    # -- sizes ------------------------------------------------------------------------------------------------------
    @property
    def num_users(self) -> int:
        return self.indptr.numel() - 1

    @property
    def num_interactions(self) -> int:
        return self.items.numel()

    def lengths(self) -> Tensor:
        """``LongTensor [num_users]``: the full length of each sequence."""
        return self.indptr[1:] - self.indptr[:-1]

    # -- leave-one-out views ----------------------------------------------------------------------------------------
    def bounds(self, split: Split) -> tuple[Tensor, Tensor]:
        """``(starts, ends)`` offsets of each user's history for ``split``.

        ``"train"`` and ``"valid"``: the training prefix (all but the last two items); ``"test"``: the training
        prefix and the validation item (all but the last one).
        """
        drop = {"train": 2, "valid": 2, "test": 1}.get(split)
        if drop is None:
            raise ValueError(f"split must be 'train', 'valid' or 'test' (got {split!r})")
        return self.indptr[:-1], self.indptr[1:] - drop

    def history(self, split: Split) -> tuple[Tensor, Tensor]:
        """The history of every user for ``split`` as CSR ``(indptr [num_users + 1], items [n])``."""
        starts, ends = self.bounds(split)
        counts = ends - starts
        indptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        total = int(indptr[-1])
        within = torch.arange(total) - torch.repeat_interleave(indptr[:-1], counts, output_size=total)
        return indptr, self.items[torch.repeat_interleave(starts, counts, output_size=total) + within]

    def target(self, split: Split) -> Tensor:
        """``LongTensor [num_users]``: the validation (second-to-last) or test (last) item of every user."""
        if split == "valid":
            return self.items[self.indptr[1:] - 2]
        if split == "test":
            return self.items[self.indptr[1:] - 1]
        raise ValueError(f"only 'valid' and 'test' have one target per user (got {split!r}); the training "
                         "prefix predicts each of its items from the ones before")

    def padded_history(self, split: Split, max_len: int, users: Tensor | None = None) -> Tensor:
        """``LongTensor [B, max_len]``: the histories of ``users`` (default: all), left-padded, truncated to the
        ``max_len`` most recent items."""
        starts, ends = self.bounds(split)
        if users is not None:
            starts, ends = starts[users], ends[users]
        return left_pad(self.items, starts, ends, max_len)

    def train_sequences(self) -> list[Tensor]:
        """Each user's training prefix as its own tensor (what augmenters ``fit`` their item statistics on)."""
        starts, ends = self.bounds("train")
        return [self.items[s:e] for s, e in zip(starts.tolist(), ends.tolist())]

    def summary(self) -> dict[str, Any]:
        lengths = self.lengths().double()
        out: dict[str, Any] = {
            "num_users": self.num_users,
            "num_items": self.num_items,
            "num_interactions": self.num_interactions,
            "avg_length": round(float(lengths.mean()), 4) if lengths.numel() else 0.0,
            "num_dropped": self.num_dropped,
        }
        for path, digest in self.checksums.items():
            out[f"sha256.{path.rsplit('/', 1)[-1]}"] = digest
        return out

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(num_users={self.num_users}, num_items={self.num_items}, "
                f"num_interactions={self.num_interactions})")
