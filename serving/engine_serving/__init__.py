"""Serving for engine: resumable batch scoring jobs and an HTTP server, on onnxruntime, from ``engine export``
directories (or MLflow runs that logged one). See :mod:`engine_serving.job`, :mod:`engine_serving.server` and, for
record linkage, :mod:`engine_serving.linkage`."""

from .errors import JobError, ModelError
from .faiss_index import FaissTopK
from .job import JobSummary, run_job, score_chunk, write_part
from .linkage import LinkageModel, match_chunk
from .model import ExportedModel, load_model
from .server import make_server
from .topk import masked_topk

__all__ = ["ExportedModel", "FaissTopK", "JobError", "JobSummary", "LinkageModel", "ModelError", "load_model",
           "make_server", "masked_topk", "match_chunk", "run_job", "score_chunk", "write_part"]
