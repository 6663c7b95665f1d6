"""Serving for engine: resumable batch scoring jobs and an HTTP server, on onnxruntime, from ``engine export``
directories (or MLflow runs that logged one). See :mod:`engine_serving.job` and :mod:`engine_serving.server`."""

from .errors import JobError, ModelError
from .job import JobSummary, run_job, score_chunk, write_part
from .model import ExportedModel, load_model
from .server import make_server
from .topk import masked_topk

__all__ = ["ExportedModel", "JobError", "JobSummary", "ModelError", "load_model", "make_server", "masked_topk",
           "run_job", "score_chunk", "write_part"]
