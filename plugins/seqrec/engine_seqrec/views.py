"""Where the second view of a sequence comes from, for the contrastive term of the ``seqrec`` task.

* :func:`augmented_views` — CL4SRec (Xie et al., ICDE'22, https://arxiv.org/abs/2010.14395): each sequence gets two
  views, each made by an augmenter drawn at random (independently per sequence and per view) from a list.
* :class:`SameTargetIndex` — DuoRec's supervised positives (Qiu et al., WSDM'22, https://arxiv.org/abs/2110.05730):
  another training sequence with the same next item, drawn from every prefix of every training sequence.

DuoRec's unsupervised view (a second forward pass with other dropout masks) needs no data and lives in the task.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from .data import SequenceData, left_pad

__all__ = ["augmented_views", "SameTargetIndex"]


def augmented_views(seqs: Tensor, lengths: Tensor, augmenters: Sequence[Any], generator: torch.Generator
                    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Two augmented views of a left-padded batch: ``(view1, lengths1, view2, lengths2)``, each view ``[B, L]``.

    Every row of every view is passed to one augmenter, drawn uniformly from ``augmenters`` (so a row may get the
    same kind of augmentation twice, as in CL4SRec's code). Each augmenter is called once per view, on its rows.

    Args:
        seqs (Tensor): ``[B, L]`` item ids, left-padded with 0.
        lengths (Tensor): ``[B]`` real items per row.
        augmenters: objects with ``__call__(seqs, lengths, generator) -> (seqs, lengths)``.
        generator (torch.Generator): the source of every random choice.
    """
    if not augmenters:
        raise ValueError("augmented_views needs at least one augmenter")
    out: list[Tensor] = []
    for _ in range(2):
        choice = torch.randint(len(augmenters), (seqs.shape[0],), generator=generator)
        view, view_lengths = seqs.clone(), lengths.clone()
        for a, augmenter in enumerate(augmenters):
            rows = torch.nonzero(choice == a).flatten()
            if rows.numel() == 0:
                continue
            new, new_lengths = augmenter(seqs[rows], lengths[rows], generator)
            if new.shape != (rows.numel(), seqs.shape[1]):
                raise ValueError(f"augmenter {augmenter!r} returned shape {tuple(new.shape)}; expected "
                                 f"{(rows.numel(), seqs.shape[1])} (same width, left-padded)")
            view[rows], view_lengths[rows] = new.to(view.dtype), new_lengths.to(view_lengths.dtype)
        out += [view, view_lengths]
    return out[0], out[1], out[2], out[3]


class SameTargetIndex:
    """Every prefix of every training prefix, grouped by its next item, to draw same-target positives.

    A prefix is ``items[start:end]`` of one user's training prefix (at least one item), and its next item is
    ``items[end]``. Prefixes are sorted by next item (CSR over item ids), so drawing one with a given next item is a
    uniform integer and a lookup.

    Args:
        data (SequenceData): the sequences; only training prefixes are indexed.
    """

    def __init__(self, data: SequenceData) -> None:
        self.data = data
        starts, ends = data.bounds("train")
        counts = (ends - starts - 1).clamp(min=0)  # prefixes ending before each item after the first
        total = int(counts.sum())
        user_start = torch.repeat_interleave(starts, counts, output_size=total)
        first = torch.repeat_interleave(counts.cumsum(0) - counts, counts, output_size=total)
        end = user_start + 1 + (torch.arange(total) - first)
        target = data.items[end]
        order = torch.argsort(target, stable=True)
        self.starts, self.ends, self.next_item = user_start[order], end[order], target[order]
        per_item = torch.bincount(self.next_item, minlength=data.num_items + 2)
        self.indptr = torch.cat([per_item.new_zeros(1), per_item.cumsum(0)])
        self.rank = torch.full((data.items.numel(),), -1, dtype=torch.long)
        self.rank[self.ends] = torch.arange(total)  # a prefix is identified by its end offset

    def __len__(self) -> int:
        return self.ends.numel()

    def sample(self, ends: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """For each example ending at offset ``ends[b]``, another prefix with the same next item.

        Returns:
            ``(index [B], found [B])``: positions in this index of the drawn prefixes, and whether one exists
            (where it does not, ``index`` is meaningless).
        """
        target = self.data.items[ends]
        lo = self.indptr[target]
        others = self.indptr[target + 1] - lo - 1  # the example itself is in the index
        found = others > 0
        u = torch.rand(ends.shape, generator=generator, dtype=torch.float64)
        r = torch.minimum((u * others.clamp(min=1)).long(), (others - 1).clamp(min=0))
        own = self.rank[ends]
        r = r + (lo + r >= own).long()
        return (lo + r).clamp(max=max(len(self) - 1, 0)), found

    def sequences(self, index: Tensor, max_len: int) -> Tensor:
        """The prefixes at ``index`` as a left-padded ``[B, max_len]`` batch."""
        return left_pad(self.data.items, self.starts[index], self.ends[index], max_len)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} prefixes)"
