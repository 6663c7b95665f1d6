"""The ``objectives`` plugin: registers :class:`InfoNCE` and :class:`BPR` (entry point ``engine_objectives.plugin``)."""

from __future__ import annotations

from engine.hookspecs import hookimpl

from .bpr import BPR
from .infonce import InfoNCE


@hookimpl
def register_objectives(register):
    register(InfoNCE)
    register(BPR)
