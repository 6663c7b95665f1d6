"""Sequence augmenters for contrastive sequential recommendation (CL4SRec, CoSeRec).

Each is a component with ``view_kind = "sequence"`` called as ``aug(seqs, lengths, generator)`` on a left-padded
``LongTensor [B, L]`` batch and returning ``(seqs, lengths)`` in the same layout. :class:`Insert`,
:class:`Substitute` and :class:`RandomChoice` also need ``fit(train_sequences, num_items)`` before use.

:class:`LearnedMLP` (MCLRec) is different: a trainable module with ``view_kind = "representation"`` that maps a
sequence representation ``[B, D]`` to another view of it.
"""

from .correlation import ItemCorrelation
from .crop import Crop
from .insert import Insert
from .learned import LearnedMLP
from .mask import Mask
from .random_choice import RandomChoice
from .reorder import Reorder
from .substitute import Substitute

AUGMENTERS = (Crop, Mask, Reorder, Insert, Substitute, RandomChoice, LearnedMLP)

__all__ = ["AUGMENTERS", "Crop", "Insert", "ItemCorrelation", "LearnedMLP", "Mask", "RandomChoice", "Reorder", "Substitute"]
