"""Registration of the graph CL family: one line per component."""

from engine.hookspecs import hookimpl

from .adaptive_mask import AdaptiveMask
from .dccf import DCCF
from .edge_dropout import EdgeDropout
from .embedding_noise import EmbeddingNoise
from .lightgcn import LightGCN
from .node_dropout import NodeDropout
from .random_walk import RandomWalk
from .task import GraphCFTask


@hookimpl
def register_encoders(register):
    register(LightGCN)
    register(DCCF)


@hookimpl
def register_augmenters(register):
    register(EdgeDropout)
    register(NodeDropout)
    register(RandomWalk)
    register(EmbeddingNoise)
    register(AdaptiveMask)


@hookimpl
def register_tasks(register):
    register(GraphCFTask)
