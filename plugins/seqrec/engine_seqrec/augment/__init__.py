"""Sequence augmenters for contrastive sequential recommendation (CL4SRec, CoSeRec).

Each is a component with ``view_kind = "sequence"`` called as ``aug(seqs, lengths, generator)`` on a left-padded
``LongTensor [B, L]`` batch and returning ``(seqs, lengths)`` in the same layout. :class:`Insert`,
:class:`Substitute` and :class:`RandomChoice` also need ``fit(train_sequences, num_items)`` before use.
"""

from .correlation import ItemCorrelation
from .crop import Crop
from .insert import Insert
from .mask import Mask
from .random_choice import RandomChoice
from .reorder import Reorder
from .substitute import Substitute

AUGMENTERS = (Crop, Mask, Reorder, Insert, Substitute, RandomChoice)

__all__ = ["AUGMENTERS", "Crop", "Insert", "ItemCorrelation", "Mask", "RandomChoice", "Reorder", "Substitute"]
