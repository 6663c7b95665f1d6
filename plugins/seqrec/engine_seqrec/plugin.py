"""Registration of the sequential recommendation family: one line per component."""

from engine.hookspecs import hookimpl

from .augment import AUGMENTERS
from .gru4rec import GRU4Rec
from .sasrec import SASRec
from .sources import InteractionSequencesSource, S3RecTxtSource
from .task import SeqRecTask


@hookimpl
def register_encoders(register):
    register(SASRec)
    register(GRU4Rec)


@hookimpl
def register_augmenters(register):
    for cls in AUGMENTERS:  # crop, mask, reorder, insert, substitute, random, learned_mlp
        register(cls)


@hookimpl
def register_data_sources(register):
    register(S3RecTxtSource)
    register(InteractionSequencesSource)


@hookimpl
def register_tasks(register):
    register(SeqRecTask)
