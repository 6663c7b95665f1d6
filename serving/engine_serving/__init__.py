"""Serving for engine: resumable batch scoring jobs, an HTTP API (FastAPI, the ``serve`` extra) and an MLflow pyfunc
model, on onnxruntime, from ``engine export`` directories (or MLflow runs that logged one). See
:mod:`engine_serving.job`, :mod:`engine_serving.app` (``create_app``), :mod:`engine_serving.pyfunc` and, for record
linkage, :mod:`engine_serving.linkage`. The app and the pyfunc model are imported from their own modules, so that
batch scoring imports neither FastAPI nor MLflow."""

from .errors import JobError, ModelError
from .faiss_index import FaissTopK
from .job import JobSummary, run_job, score_chunk, write_part
from .linkage import LinkageModel, match_chunk
from .model import ExportedModel, load_model, load_with_new_items
from .topk import masked_topk

__all__ = ["ExportedModel", "FaissTopK", "JobError", "JobSummary", "LinkageModel", "ModelError", "load_model",
           "load_with_new_items", "masked_topk", "match_chunk", "run_job", "score_chunk", "write_part"]
