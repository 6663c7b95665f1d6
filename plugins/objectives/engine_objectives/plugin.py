"""The ``objectives`` plugin: registers every objective of the catalogue (entry point ``engine_objectives.plugin``)."""

from __future__ import annotations

from engine.hookspecs import hookimpl

from .align_uniform import AlignUniform
from .auc import AUCLoss
from .bpr import BPR
from .cwcl import CWCL
from .dcl import DCL
from .gram import GRAM
from .hard_negative import DebiasedInfoNCE, HardNegativeInfoNCE
from .infonce import InfoNCE
from .mochi import MoCHi
from .queue import QueueInfoNCE
from .siglip import SigLIP
from .supcon import SupCon
from .symile import Symile
from .tiled_infonce import TiledInfoNCE
from .weighted_sum import WeightedSum

#: Every objective this plugin registers, in registration order.
OBJECTIVES = (
    InfoNCE,
    BPR,
    TiledInfoNCE,
    SigLIP,
    DCL,
    SupCon,
    CWCL,
    AlignUniform,
    HardNegativeInfoNCE,
    DebiasedInfoNCE,
    MoCHi,
    QueueInfoNCE,
    AUCLoss,
    Symile,
    GRAM,
    WeightedSum,
)


@hookimpl
def register_objectives(register):
    for cls in OBJECTIVES:
        register(cls)
