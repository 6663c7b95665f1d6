"""Objectives for every engine family: :class:`InfoNCE` (in-batch contrastive) and :class:`BPR` (pairwise ranking)."""

from .bpr import BPR
from .infonce import InfoNCE

__all__ = ["BPR", "InfoNCE"]
