"""Batch scoring on Ray (``engine score --backend ray``): the job's chunks scored by Ray tasks.

The unit of work stays the chunk of :mod:`engine_serving.job`. The driver (the ``engine score`` process) validates
the input, reads each pending chunk's rows and submits one Ray task per chunk, keeping a bounded number of chunks in
flight, so its memory is bounded by them. A task loads the model once per worker process (one onnxruntime session
per worker, cached in the process), scores its chunk and either writes the part itself (a local cluster, or
``--shared-output``) or returns it to the driver, which writes it; every part is written atomically, whoever writes
it, so the exactly-once argument of the single-process job holds unchanged:

* a worker killed mid-chunk leaves no part (at most a temporary file, removed at the end of the job): Ray runs the
  task again on another worker (``max_retries``), which writes the same part;
* a driver killed mid-job loses only the parts in flight: the same command started again skips the parts on disk.

Why tasks over chunk ids rather than Ray Data's ``map_batches``: the chunk is already the unit of the atomic part
and of resumption; Ray Data re-batches rows and writes its own files, so the part layout, the manifest and the
restart rule would have to be rebuilt on top of it (and its dependencies, pandas + pyarrow + its planner, cost more
per job than a few hundred task submissions do).

Without ``address``, a local cluster is started with every server bound to 127.0.0.1 and shut down after the job.
With ``address`` (``HOST:PORT`` of a running cluster's GCS, or ``auto``) the job joins that cluster and leaves it
running; the model directory is shipped through the object store to nodes that do not see it at the same path.
"""

from __future__ import annotations

import hashlib
import os
import resource
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import polars as pl

from engine.errors import EngineError

from .errors import JobError
from .job import ChunkOptions, write_part
from .ray_cluster import RayCluster

__all__ = ["ModelSpec", "RayRunner", "score_remote"]


@dataclass(frozen=True)
class ModelSpec:
    """How a worker rebuilds the driver's scoring model: the export directory and what was added to it."""

    directory: str
    threads: int | None = None
    new_items: str | None = None
    new_items_id: str | None = None
    faiss: tuple[tuple[str, Any], ...] | None = None  # use_faiss options; None: exact top-k
    prefer_gpu: bool = True

    def load(self, directory: str | None = None, new_items: str | None = None):
        from .model import load_model

        model = load_model(directory or self.directory, prefer_gpu=self.prefer_gpu, threads=self.threads)
        if self.new_items:
            model.add_items(new_items or self.new_items, self.new_items_id)
        if self.faiss is not None:
            model.use_faiss(**dict(self.faiss))
        return model

    def bundle(self) -> dict[str, bytes]:
        """Every file of the export (and the new-items table) as bytes, for nodes without a shared filesystem."""
        root = Path(self.directory)
        files = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
        if self.new_items:
            files["\0new_items"] = Path(self.new_items).read_bytes()
        return files


# -- worker side ------------------------------------------------------------------------------------------------------
_WORKER_MODELS: dict[ModelSpec, Any] = {}


def _same_export(spec: ModelSpec, digest: str) -> bool:
    meta = Path(spec.directory) / "export.json"
    try:
        return hashlib.sha256(meta.read_bytes()).hexdigest() == digest
    except OSError:
        return False


def _materialise(spec: ModelSpec, bundle_ref, digest: str) -> tuple[str, str | None]:
    """The export unpacked from the object store into this node's temp directory (once per node and model)."""
    import ray

    target = Path(tempfile.gettempdir()) / "engine-ray-models" / digest
    new_items = str(target / "new_items" / Path(spec.new_items).name) if spec.new_items else None
    if not (target / "export.json").is_file():
        files = ray.get(bundle_ref)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{digest}-", dir=target.parent))
        for name, data in files.items():
            dest = staging / ("new_items/" + Path(spec.new_items).name if name == "\0new_items" else name)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
        try:
            os.replace(staging, target)
        except OSError:  # another worker of this node got there first
            import shutil

            shutil.rmtree(staging, ignore_errors=True)
    return str(target), new_items


def _worker_model(spec: ModelSpec, bundle: list, digest: str):
    model = _WORKER_MODELS.get(spec)
    if model is None:
        if bundle and not _same_export(spec, digest):
            directory, new_items = _materialise(spec, bundle[0], digest)
            model = spec.load(directory, new_items)
        else:
            model = spec.load()
        _WORKER_MODELS[spec] = model
    return model


def score_remote(spec: ModelSpec, bundle: list, digest: str, chunk_index: int, rows: pl.DataFrame,
                 options: ChunkOptions, output: str | None = None) -> tuple[pl.DataFrame | None, dict[str, Any]]:
    """The body of one Ray task: the part of chunk ``chunk_index`` and what it cost this worker. ``bundle`` is
    ``[ObjectRef]`` of :meth:`ModelSpec.bundle` (a list, so Ray does not fetch it unless this node needs it) or
    ``[]`` on a local cluster. With ``output`` (a directory this worker sees), the worker writes the part there
    itself, atomically, and returns None in its place."""
    tic = time.perf_counter()
    model = _worker_model(spec, bundle, digest)
    loaded = time.perf_counter()
    part = options.score(model, chunk_index, rows)
    if output is not None:
        write_part(output, chunk_index, part)
        part = None
    done = time.perf_counter()
    return part, {"pid": os.getpid(), "host": socket.gethostname(), "rows": rows.height,
                  "load_s": loaded - tic, "score_s": done - loaded, "provider": model.provider,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


# -- driver side ------------------------------------------------------------------------------------------------------
@dataclass
class WorkerStats:
    chunks: int = 0
    rows: int = 0
    score_s: float = 0.0
    load_s: float = 0.0
    peak_rss_mb: float = 0.0
    host: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"chunks": self.chunks, "rows": self.rows, "score_s": round(self.score_s, 3),
                "load_s": round(self.load_s, 3), "peak_rss_mb": round(self.peak_rss_mb, 1),
                "rows_per_s": round(self.rows / self.score_s, 1) if self.score_s else None, "host": self.host}


@dataclass
class RayRunner:
    """Scores a job's chunks as Ray tasks (see the module docstring).

    Args:
        model: the driver's loaded model (its provider is reported until a worker says which one it used).
        spec: how workers load the same model.
        address: a running cluster (``HOST:PORT`` or ``auto``); None starts a local one on 127.0.0.1.
        workers: tasks running at once (local default: every core; on a cluster: its CPUs over ``threads``).
        threads: CPUs (and onnxruntime threads) per task; default 1.
        gpus: GPUs per task (``--gpus-per-worker``; 0: CPU sessions).
        max_retries: times Ray runs a chunk again after its worker died.
        worker_writes: the workers write the parts into the output directory themselves (it must be the same
            directory on every node: always so on a local cluster, the default there); otherwise each part comes
            back to the driver, which writes it. Atomic either way, so a retried chunk rewrites the same file.
    """

    model: Any
    spec: ModelSpec
    address: str | None = None
    workers: int | None = None
    threads: int | None = None
    gpus: float = 0.0
    max_retries: int = 3
    worker_writes: bool | None = None
    name: str = "ray"
    provider: str = ""
    workers_seen: dict[int, WorkerStats] = field(default_factory=dict)
    cluster: RayCluster | None = None

    def start(self) -> None:
        self.provider = self.model.provider
        threads = self.threads or 1
        local_cpus = (self.workers or os.cpu_count() or 1) * threads
        self.cluster = RayCluster(self.address, local_cpus if self.address is None else None)
        self.cluster.start()
        if self.workers is None:
            self.workers = max(1, self.cluster.cpus() // threads)
        if self.worker_writes is None:
            self.worker_writes = self.address is None

    def parts(self, lf: pl.LazyFrame, pending: list[int], chunk_size: int, options: ChunkOptions,
              output: Path) -> Iterator[tuple[int, int, pl.DataFrame | None]]:
        ray = self.cluster.ray
        threads = self.threads or 1
        remote = ray.remote(num_cpus=threads, num_gpus=self.gpus or 0, max_retries=self.max_retries)(score_remote)
        digest = hashlib.sha256((Path(self.spec.directory) / "export.json").read_bytes()).hexdigest()
        bundle = [] if self.address is None else [ray.put(self.spec.bundle())]
        window = self.workers * (2 if self.address is None else 1)  # a local cluster queues the extra ones
        target = str(Path(output).resolve()) if self.worker_writes else None  # None: the part comes back
        queue = iter(pending)
        in_flight: dict[Any, int] = {}

        def submit() -> bool:
            i = next(queue, None)
            if i is None:
                return False
            rows = lf.slice(i * chunk_size, chunk_size).collect()
            in_flight[remote.remote(self.spec, bundle, digest, i, rows, options, target)] = i
            return True

        try:
            while len(in_flight) < window and submit():
                pass
            while in_flight:
                [ref], _ = ray.wait(list(in_flight), num_returns=1)
                i = in_flight.pop(ref)
                part, stats = self._result(ref, i)
                self._record(stats)
                yield i, stats["rows"], part
                submit()
        finally:
            for ref in in_flight:
                ray.cancel(ref, force=True)

    def _result(self, ref, chunk_index: int):
        ray = self.cluster.ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, EngineError):
                raise cause from None
            raise
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError) as exc:
            raise JobError(f"chunk {chunk_index}: its Ray worker died {self.max_retries + 1} times "
                           f"({type(exc).__name__}); the finished parts are kept: run the same command again") \
                from None

    def _record(self, stats: dict[str, Any]) -> None:
        self.provider = stats["provider"]
        seen = self.workers_seen.setdefault(stats["pid"], WorkerStats(host=stats["host"]))
        seen.chunks += 1
        seen.rows += stats["rows"]
        seen.score_s += stats["score_s"]
        seen.load_s += stats["load_s"]
        seen.peak_rss_mb = max(seen.peak_rss_mb, stats["peak_rss_mb"])

    def report(self) -> dict[str, Any]:
        return {"backend": "ray", "ray_address": self.address or "local", "workers": self.workers,
                "threads_per_worker": self.threads or 1, "parts_written_by": "workers" if self.worker_writes
                else "driver",
                "ray_startup_s": round(self.cluster.startup_s, 3) if self.cluster else None,
                "worker_processes": {str(pid): s.as_dict() for pid, s in sorted(self.workers_seen.items())}}

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
