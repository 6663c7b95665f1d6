"""Objectives for every engine family: contrastive losses over embeddings, and BPR.

Pairs ``(anchor, positive)``: :class:`InfoNCE` (also NT-Xent and a projection head), :class:`TiledInfoNCE` (memory
linear in the batch), :class:`SigLIP`, :class:`DCL`, :class:`CWCL`, :class:`AlignUniform`,
:class:`HardNegativeInfoNCE`, :class:`DebiasedInfoNCE`, :class:`MoCHi`, :class:`QueueInfoNCE`, :class:`AUCLoss`.
Labels: :class:`SupCon`. Three or more modalities: :class:`Symile`, :class:`GRAM`. Triples: :class:`BPR`.
Combinations: :class:`WeightedSum`. Large batches through the encoder: :func:`grad_cache`.
"""

from .align_uniform import AlignUniform, alignment_loss, uniformity_loss
from .auc import AUCLoss
from .bpr import BPR
from .cwcl import CWCL
from .dcl import DCL
from .grad_cache import grad_cache
from .gram import GRAM, gram_volume
from .hard_negative import DebiasedInfoNCE, HardNegativeInfoNCE
from .infonce import InfoNCE
from .mochi import MixDraws, MoCHi
from .projection import ProjectionHead
from .queue import NegativeQueue, QueueInfoNCE
from .siglip import SigLIP
from .supcon import SupCon
from .symile import Symile
from .tiled_infonce import TiledInfoNCE, tiled_infonce_loss
from .weighted_sum import WeightedSum

__all__ = [
    "AUCLoss",
    "AlignUniform",
    "BPR",
    "CWCL",
    "DCL",
    "DebiasedInfoNCE",
    "GRAM",
    "HardNegativeInfoNCE",
    "InfoNCE",
    "MixDraws",
    "MoCHi",
    "NegativeQueue",
    "ProjectionHead",
    "QueueInfoNCE",
    "SigLIP",
    "SupCon",
    "Symile",
    "TiledInfoNCE",
    "WeightedSum",
    "alignment_loss",
    "grad_cache",
    "gram_volume",
    "tiled_infonce_loss",
    "uniformity_loss",
]
