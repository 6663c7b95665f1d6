"""Registration of the record linkage family: one line per component."""

from engine.hookspecs import hookimpl

from .char_ngram import CharNgramEncoder
from .image import ImageEncoder
from .sentence import SentenceEncoder
from .sources import SOURCES
from .tabular import CategoricalEncoder, MultiCategoricalEncoder, NumericEncoder
from .task import LinkageTask


@hookimpl
def register_encoders(register):
    register(CharNgramEncoder)
    register(CategoricalEncoder)
    register(MultiCategoricalEncoder)
    register(NumericEncoder)
    register(SentenceEncoder)
    register(ImageEncoder)


@hookimpl
def register_data_sources(register):
    for cls in SOURCES:  # record_tables, deepmatcher_csv, ditto_txt, febrl
        register(cls)


@hookimpl
def register_tasks(register):
    register(LinkageTask)
