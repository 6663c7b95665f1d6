"""Bodies of ``engine evaluate`` and ``engine export``: rebuild a pipeline's task and model, load weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import load_pipeline
from .run import checkpoint_dir, prepare, write_json_atomic
from .train import load_checkpoint


def _load(pipeline: str, overrides, checkpoint: str | None):
    cfg = load_pipeline(pipeline, overrides)
    task, model = prepare(cfg)
    path = Path(checkpoint) if checkpoint else checkpoint_dir(cfg) / "best.pt"
    state = load_checkpoint(path, remedy="train it again with `engine run`, or name another with --checkpoint")
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        from .errors import CheckpointError

        raise CheckpointError(f"{path}: does not fit this pipeline's model ({str(exc).splitlines()[0]})") from None
    return cfg, task, model.eval()


def evaluate_checkpoint(pipeline: str, overrides, checkpoint: str | None, split: str,
                        metrics_out: str | None) -> dict[str, float]:
    _, task, model = _load(pipeline, overrides, checkpoint)
    metrics = task.evaluate(model, split)
    if metrics_out:
        write_json_atomic(metrics_out, metrics)
    return metrics


def export_checkpoint(pipeline: str, overrides, checkpoint: str | None, output: str) -> dict[str, Any]:
    cfg, task, model = _load(pipeline, overrides, checkpoint)
    report = task.export_onnx(model, output)
    write_json_atomic(Path(output) / "export.json", report)
    logged = log_export(cfg, Path(checkpoint) if checkpoint else checkpoint_dir(cfg) / "best.pt", output)
    return {**report, **({"mlflow_model": logged} if logged else {})}


# -- serving (engine score / engine serve) ------------------------------------------------------------------------


def log_export(cfg, checkpoint: Path, output: str) -> str | None:
    """Log the export directory ``output`` to the MLflow run that trained ``checkpoint`` (artifact path ``onnx``), so
    ``engine score --model RUN_ID`` finds it. Returns ``runs:/<run_id>/onnx``, or None when the pipeline is not
    tracked or the checkpoint names no run (trained with ``--no-track``). A failure to log warns: the export stands."""
    if not cfg.tracking.enabled:
        return None
    run_id = None
    for path in (checkpoint, checkpoint.with_name("last.pt")):  # best.pt does not record the run; last.pt does
        if path.is_file():
            try:
                import torch

                run_id = torch.load(path, map_location="cpu", weights_only=False).get("run_id")
            except Exception:  # noqa: BLE001 - unreadable: no run to log to
                run_id = None
        if run_id:
            break
    if not run_id:
        return None
    from .publish import log_export_dir
    from .tracking import tracking_uri

    return log_export_dir(tracking_uri(cfg.tracking.uri), run_id, output)


def _serving():
    """Import :mod:`engine_serving` (the ``serving/`` package of this distribution) with a remedy if it is absent."""
    try:
        import engine_serving
    except ModuleNotFoundError as exc:  # pragma: no cover - installed with engine
        from .errors import EngineError

        raise EngineError(f"serving is not installed ({exc}); reinstall engine: pip install -e .") from None
    return engine_serving


def score_file(model: str, input_path: str, output: str, top_k: int | None, chunk_size: int,
               exclude_seen: bool = True, tracking_uri: str | None = None, threads: int | None = None,
               progress: bool = True, index: str = "exact", nprobe: int | None = None, id_column: str = "id",
               matches_only: bool = False, new_items: str | None = None, new_items_id: str | None = None,
               echo=print, backend: str = "local", ray_address: str | None = None, workers: int | None = None,
               gpus_per_worker: float = 0.0, shared_output: bool = False) -> dict[str, Any]:
    """Body of ``engine score``: a resumable batch scoring job (see :mod:`engine_serving.job`). ``top_k`` None:
    20 for recommendations, the export's ``blocking_k`` for linkage. ``new_items``: a feature table of items to
    add to the catalogue (see :mod:`engine_serving.new_items`). ``backend="ray"``: the chunks are scored by Ray
    workers (:mod:`engine_serving.ray_runner`), on the cluster at ``ray_address`` or a local one."""
    from .errors import ConfigError

    if backend != "ray" and (ray_address or workers or gpus_per_worker or shared_output):
        raise ConfigError("--ray-address, --workers, --gpus-per-worker and --shared-output go with --backend ray")
    if backend == "ray":
        from engine_serving.ray_cluster import import_ray

        import_ray()  # Ray not installed: say which extra, before loading anything
    serving = _serving()
    loaded, added = _scoring_model(serving, model, tracking_uri, threads, new_items, new_items_id, echo)
    faiss_options = {"nprobe": nprobe} if nprobe else {}
    if index == "faiss":
        loaded.use_faiss(**faiss_options)
    top_k = top_k or loaded.default_k
    runner = None
    if backend == "ray":
        from engine_serving.ray_runner import ModelSpec, RayRunner

        spec = ModelSpec(str(loaded.directory.resolve()), threads or 1,
                         str(Path(new_items).resolve()) if new_items else None, new_items_id,
                         tuple(sorted(faiss_options.items())) if index == "faiss" else None)
        runner = RayRunner(loaded, spec, address=ray_address, workers=workers, threads=threads,
                           gpus=gpus_per_worker, worker_writes=True if shared_output else None)
    where = "" if runner is None else f", on Ray ({ray_address or 'local cluster'})"
    echo(f"engine score: {loaded.family} model {loaded.directory}, onnxruntime provider {loaded.provider}, "
         f"top-k by {loaded.index_kind}{where}")
    summary = serving.run_job(loaded, input_path, output, top_k=top_k, chunk_size=chunk_size,
                              exclude_seen=exclude_seen, progress=progress, id_column=id_column,
                              matches_only=matches_only, runner=runner)
    return {"rows": summary.rows, "parts": summary.parts, "parts_written": summary.parts_written,
            "parts_skipped": summary.parts_skipped, "output_rows": summary.output_rows,
            "seconds": round(summary.seconds, 3), "rows_per_second": round(summary.rows_per_second, 1),
            "provider": summary.provider, "index": loaded.index_kind, "top_k": top_k, "output": str(output),
            **added, **({"backend": "local"} if runner is None else runner.report())}


def _scoring_model(serving, model: str, tracking_uri: str | None, threads: int | None, new_items: str | None,
          new_items_id: str | None, echo) -> tuple[Any, dict[str, int]]:
    """The model of ``engine score`` / ``engine serve``, with ``new_items`` added to its catalogue."""
    loaded, added = serving.load_with_new_items(model, tracking_uri=tracking_uri, threads=threads,
                                                new_items=new_items, new_items_id=new_items_id)
    if not added:
        return loaded, added
    echo(f"new items from {new_items}: {added['new_items']} added, {added['new_items_skipped']} already in the "
         "catalogue (kept the model's own vectors)")
    return loaded, added


def serve_model(model: str, host: str, port: int, tracking_uri: str | None = None, threads: int | None = None,
                new_items: str | None = None, new_items_id: str | None = None, batching: bool = True,
                max_batch: int = 64, batch_wait_ms: float = 0.0, echo=print) -> None:
    """Body of ``engine serve``: the FastAPI app of :mod:`engine_serving.app` under uvicorn, until Ctrl-C or
    SIGTERM. ``batching``: concurrent ``/recommend`` requests scored together (:mod:`engine_serving.batching`)."""
    from .errors import EngineError

    serving = _serving()
    try:
        from engine_serving.app import bind, create_app, run
    except ModuleNotFoundError as exc:
        raise EngineError(f"engine serve needs the `serve` extra ({exc}): pip install -e '.[serve]'") from None
    loaded, _ = _scoring_model(serving, model, tracking_uri, threads, new_items, new_items_id, echo)
    app = create_app(loaded, batching=batching, max_batch=max_batch, batch_wait_ms=batch_wait_ms)
    try:
        sock = bind(host, port)
    except OSError as exc:
        raise EngineError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    bound_host, bound_port = sock.getsockname()[:2]
    route = "POST /match" if loaded.family == "linkage" else "POST /recommend"
    batched = f", request batching up to {max_batch}" if batching and loaded.family != "linkage" else ""
    echo(f"engine serve: {loaded.family} model {loaded.directory}, onnxruntime provider {loaded.provider}{batched}; "
         f"listening on http://{bound_host}:{bound_port} (GET /health, {route}, GET /docs)")
    try:
        run(app, sock)
    finally:
        sock.close()
