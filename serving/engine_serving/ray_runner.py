"""Batch scoring on Ray (``engine score --backend ray``): the job's chunks scored by Ray tasks.

The unit of work stays the chunk of :mod:`engine_serving.job`. The driver (the ``engine score`` process) validates
the input, reads each pending chunk's rows, submits one Ray task per chunk, and writes each part atomically as its
result comes back; it keeps a bounded number of chunks in flight, so its memory is bounded by them. A task loads the
model once per worker process (one onnxruntime session per worker, cached in the process) and returns the part.
Only the driver writes, so the exactly-once argument of the single-process job holds unchanged:

* a worker killed mid-chunk loses nothing written: Ray runs the task again on another worker (``max_retries``);
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
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import polars as pl

from engine.errors import EngineError

from .errors import JobError
from .job import ChunkOptions

__all__ = ["ModelSpec", "RayRunner", "import_ray", "RAY_INSTALL"]

RAY_INSTALL = "pip install 'engine[ray]' (in a checkout: pip install -e \".[ray]\")"


def import_ray():
    """The ``ray`` module, or a JobError naming the extra to install."""
    try:
        import ray
    except ModuleNotFoundError:
        raise JobError(f"--backend ray needs Ray, which is not installed here: {RAY_INSTALL}") from None
    return ray


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
                 options: ChunkOptions) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The body of one Ray task: the part of chunk ``chunk_index`` and what it cost this worker. ``bundle`` is
    ``[ObjectRef]`` of :meth:`ModelSpec.bundle` (a list, so Ray does not fetch it unless this node needs it) or
    ``[]`` on a local cluster."""
    tic = time.perf_counter()
    model = _worker_model(spec, bundle, digest)
    loaded = time.perf_counter()
    part = options.score(model, chunk_index, rows)
    done = time.perf_counter()
    return part, {"pid": os.getpid(), "host": socket.gethostname(), "rows": rows.height,
                  "load_s": loaded - tic, "score_s": done - loaded, "provider": model.provider,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


# -- driver side ------------------------------------------------------------------------------------------------------
def _check_reachable(address: str, timeout: float = 3.0) -> None:
    """A one-line JobError unless ``HOST:PORT`` accepts a TCP connection (Ray itself retries for a minute)."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise JobError(f"--ray-address: expected HOST:PORT of a running Ray cluster's head (or 'auto'), "
                       f"got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise JobError(f"--ray-address {address}: cannot reach a Ray cluster there "
                       f"({exc.strerror or exc}); start one with `ray start --head` or leave out --ray-address "
                       "to use a local one") from None


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
    """

    model: Any
    spec: ModelSpec
    address: str | None = None
    workers: int | None = None
    threads: int | None = None
    gpus: float = 0.0
    max_retries: int = 3
    name: str = "ray"
    provider: str = ""
    workers_seen: dict[int, WorkerStats] = field(default_factory=dict)
    startup_s: float = 0.0
    _ray: Any = None
    _started_local: bool = False
    _env_restore: dict[str, str | None] = field(default_factory=dict)
    _stdout: Any = None

    def start(self) -> None:
        # Ray's driver prints cluster events (a worker died, a task retried) on stdout from a thread of its own;
        # during the job they go to stderr with the progress, so stdout carries only the command's report.
        self._stdout, sys.stdout = sys.stdout, sys.stderr
        try:
            self._start()
        except BaseException:
            self._restore()
            raise

    def _start(self) -> None:
        tic = time.perf_counter()
        self.provider = self.model.provider
        if self.address not in (None, "auto"):
            _check_reachable(self.address)
        if self.address is None:
            # Every Ray server of the local cluster on the loopback interface: Ray binds 127.0.0.1 only when it
            # treats the machine as a single-node (laptop) install, which this variable selects.
            for key, value in {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}.items():
                self._env_restore[key] = os.environ.get(key)
                os.environ[key] = value
        ray = import_ray()
        threads = self.threads or 1
        try:
            if self.address is None:
                import ray._private.ray_constants as constants

                constants.ENABLE_RAY_CLUSTER = False  # when ray was imported before the variable was set
                cpus = (self.workers or os.cpu_count() or 1) * threads
                ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False,
                         _node_ip_address="127.0.0.1", configure_logging=False)
                self._started_local = True
            else:
                ray.init(address=self.address, log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise JobError(f"--ray-address {self.address or '(local)'}: cannot start or join the Ray cluster "
                           f"({str(exc).splitlines()[0]}); a cluster with token authentication needs RAY_AUTH_MODE"
                           "=token and its token (RAY_AUTH_TOKEN)") from None
        self._ray = ray
        if self.workers is None:
            self.workers = max(1, int(ray.cluster_resources().get("CPU", 1) // threads))
        self.startup_s = time.perf_counter() - tic

    def parts(self, lf: pl.LazyFrame, pending: list[int], chunk_size: int,
              options: ChunkOptions) -> Iterator[tuple[int, int, pl.DataFrame]]:
        ray = self._ray
        threads = self.threads or 1
        remote = ray.remote(num_cpus=threads, num_gpus=self.gpus or 0, max_retries=self.max_retries)(score_remote)
        digest = hashlib.sha256((Path(self.spec.directory) / "export.json").read_bytes()).hexdigest()
        bundle = [] if self.address is None else [ray.put(self.spec.bundle())]
        window = self.workers * (2 if self.address is None else 1)  # a local cluster queues the extra ones
        queue = iter(pending)
        in_flight: dict[Any, int] = {}

        def submit() -> bool:
            i = next(queue, None)
            if i is None:
                return False
            rows = lf.slice(i * chunk_size, chunk_size).collect()
            in_flight[remote.remote(self.spec, bundle, digest, i, rows, options)] = i
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
        ray = self._ray
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
                "threads_per_worker": self.threads or 1, "ray_startup_s": round(self.startup_s, 3),
                "worker_processes": {str(pid): s.as_dict() for pid, s in sorted(self.workers_seen.items())}}

    def close(self) -> None:
        if self._ray is not None:
            self._ray.shutdown()  # stops a local cluster; only disconnects from a running one
            self._ray = None
        self._restore()

    def _restore(self) -> None:
        if self._stdout is not None:
            sys.stdout, self._stdout = self._stdout, None
        for key, value in self._env_restore.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._env_restore.clear()
