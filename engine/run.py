"""One pipeline run, end to end: config -> task -> data -> model -> trainer -> test -> tracking -> outputs.

Everything that can fail on user input (config, plugins, data, an old checkpoint) is checked before a tracking run
or an output file is created, so bad input leaves nothing half-written. Output files are written atomically.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .config import PipelineConfig
from .errors import ConfigError
from .files import atomic_open
from .plugins import get_registry
from .publish import Published, publish_run_export
from .tracking import Tracker, make_tracker

PACKAGES = ("engine", "engine-graphcl", "engine-objectives", "engine-seqrec", "engine-linkage", "torch",
            "torch-geometric", "polars", "mlflow-skinny", "onnx", "onnxruntime", "onnxruntime-gpu", "numpy", "pydantic",
            "pluggy", "faiss-cpu", "sentence-transformers")


@dataclass
class RunOutcome:
    run_id: str | None
    test_metrics: dict[str, float]
    best_epoch: int
    epochs_run: int
    train_seconds: float
    export: "Published | None" = None  #: where the run's ONNX export is (tracked runs with tracking.log_export)


def write_json_atomic(path: str | Path, payload: dict[str, Any]) -> None:
    with atomic_open(path, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=2, sort_keys=True)
        fh.write("\n")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def prepare(cfg: PipelineConfig):
    """Build the task, load and validate its data, build the model. Raises EngineError on bad input."""
    registry = get_registry()
    entry = registry.get("task", cfg.task, where="task")
    task = entry.cls(cfg, registry)
    task.load_data()
    from .train import seed_everything

    seed_everything(cfg.seed)  # the initial weights depend on the pipeline's seed, not on the process's RNG history
    model = task.build_model()
    return task, model


def check_monitor(cfg: PipelineConfig, task) -> None:
    """A ranking metric named in ``train.monitor`` must be one validation computes (else training would stop with an
    error after its first epoch, with a tracking run already open)."""
    from .config import METRICS

    monitor = cfg.train.monitor
    name, _, _ = monitor.partition("@")
    if monitor.startswith("loss") or name.lower() not in METRICS or not task.has_split("valid"):
        return  # a loss, a task's own metric, or no validation at all
    computed = [f"{m}@{k}" for m in cfg.evaluate.metrics for k in cfg.evaluate.ks]
    if monitor not in computed:
        raise ConfigError(f"train.monitor: {monitor!r} is not computed by validation (evaluate.metrics "
                          f"{list(cfg.evaluate.metrics)}, evaluate.ks {list(cfg.evaluate.ks)}); "
                          f"use one of: {', '.join(computed)}")


def checkpoint_dir(cfg: PipelineConfig) -> Path:
    return Path(cfg.train.checkpoint_dir) / cfg.name


def check_nproc(cfg: PipelineConfig, nproc: int) -> None:
    """``--nproc`` must be a rank count every batch can be cut into."""
    if nproc < 1:
        raise ConfigError(f"--nproc: must be >= 1 (got {nproc})")
    b = cfg.train.batch_size
    if nproc > b:
        raise ConfigError(f"--nproc: {nproc} ranks but train.batch_size is {b}: every rank needs rows of each batch; "
                          f"use --nproc <= {b} or raise train.batch_size")


def run_pipeline(
    cfg: PipelineConfig,
    metrics_out: str | Path | None = None,
    resume: bool = False,
    track: bool = True,
    nproc: int = 1,
) -> RunOutcome | None:
    """Train, validate, test and log ``cfg``. With ``nproc > 1``, data-parallel over that many processes started
    here (see :mod:`engine.train.launch`), after everything that can fail on user input was checked in this
    process; under ``torchrun`` (``WORLD_SIZE`` > 1), in the process group it set up. Returns rank 0's outcome
    (None on the other ranks of a torchrun run)."""
    from .train import resolve_device
    from .train.launch import init_from_env, launch, launched_by_torchrun

    check_nproc(cfg, nproc)
    if nproc > 1:
        if launched_by_torchrun():
            raise ConfigError("--nproc: this process was started by torchrun (WORLD_SIZE is set): the world "
                              "size is torchrun's --nproc-per-node; drop --nproc")
        device = resolve_device(cfg.train.device)
        _check_devices(device, nproc)
        _check_data_parallel(cfg, resume, device)
        import gc

        gc.collect()  # the checked data and model: the workers build their own
        return launch(nproc, device.type, _run, (cfg, metrics_out, resume, track))
    if not launched_by_torchrun():
        return _run(cfg, metrics_out, resume, track)
    import torch.distributed as dist

    from .train.launch import leave_together

    init_from_env(resolve_device(cfg.train.device).type)
    try:
        outcome = _run(cfg, metrics_out, resume, track)
    except BaseException:
        dist.destroy_process_group()
        raise
    leave_together()
    return outcome


def _check_devices(device, nproc: int) -> None:
    import torch

    if device.type == "cuda" and nproc > torch.cuda.device_count():
        raise ConfigError(f"--nproc: {nproc} ranks on CUDA need one GPU each, but {torch.cuda.device_count()} "
                          "are visible; lower --nproc or set train.device: cpu")


def _check_data_parallel(cfg: PipelineConfig, resume: bool, device) -> None:
    """Everything a data-parallel run could fail on because of its input, checked before any worker starts."""
    task, model = prepare(cfg)
    check_monitor(cfg, task)
    task.check_data_parallel(model)
    if resume:
        from .train import Trainer

        Trainer(task, cfg, Tracker(), checkpoint_dir(cfg), device).resume_state()


def _threads(cfg: PipelineConfig, world: int) -> int | None:
    """Intra-op threads: ``train.num_threads``, else the machine's cores split between the ranks."""
    if cfg.train.num_threads:
        return cfg.train.num_threads
    if world > 1:
        import os

        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(1, cores // world)
    return None


def _run(cfg: PipelineConfig, metrics_out, resume: bool, track: bool) -> RunOutcome | None:
    """One process's part of a run (the whole run without a process group): rank 0 tracks, checkpoints,
    evaluates and writes the outputs; the other ranks train and return None."""
    import torch

    from .distributed import process_shard
    from .train import Trainer, resolve_device

    shard = process_shard()
    main = shard.rank == 0
    check_nproc(cfg, shard.world)  # under torchrun, the world it set up
    threads = _threads(cfg, shard.world)
    if threads:
        torch.set_num_threads(threads)
    device = resolve_device(cfg.train.device)
    if device.type == "cuda" and shard.world > 1:
        import os

        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    task, model = prepare(cfg)
    check_monitor(cfg, task)
    if shard.world > 1:
        task.check_data_parallel(model)
    directory = checkpoint_dir(cfg)
    trainer = Trainer(task, cfg, Tracker(), directory, device, progress=main)
    state = trainer.resume_state() if resume else None
    if resume and state is None and main:
        print(f"engine: no checkpoint in {directory}; starting from scratch", file=sys.stderr)
    if state is None and main:  # a fresh run must not pick up a previous run's best weights
        for stale in (trainer.last_path, trainer.best_path):
            stale.unlink(missing_ok=True)

    tracker = make_tracker(cfg, resume_run_id=(state or {}).get("run_id"), enabled=track) if main else Tracker()
    trainer.tracker = tracker
    try:
        if main and (state is None or not state.get("run_id")):  # a new run, or resuming one never tracked
            _log_setup(cfg, task, tracker, device, shard.world)
        tic = time.perf_counter()
        result = trainer.fit(model, state)
        train_seconds = time.perf_counter() - tic
        if not main:
            return None
        trainer.load_best(model)
        test = task.evaluate(model, "test")
        tracker.log_metrics({f"test/{k}": v for k, v in test.items()}, step=result.best_epoch)
        tracker.log_metrics({"best_epoch": result.best_epoch, "time/train_s": train_seconds}, step=result.epochs_run)
        task.log_artifacts(model, tracker)
        _log_curves(result.history, tracker)
        if cfg.tracking.log_checkpoint:
            tracker.log_artifact(trainer.best_path, "checkpoints")
        export = None
        if cfg.tracking.log_export and tracker.run_id is not None:
            export = publish_run_export(task, model, directory / "onnx", tracker)
        if metrics_out:
            write_json_atomic(metrics_out, {**test, "run_id": tracker.run_id, "best_epoch": result.best_epoch,
                                            "epochs": result.epochs_run, "train_seconds": round(train_seconds, 3)})
    except KeyboardInterrupt:
        tracker.end("KILLED")
        raise
    except BaseException:
        tracker.end("FAILED")
        raise
    tracker.end("FINISHED")
    return RunOutcome(tracker.run_id, test, result.best_epoch, result.epochs_run, train_seconds, export)


def _log_setup(cfg: PipelineConfig, task, tracker: Tracker, device, world: int = 1) -> None:
    tracker.set_tags({"engine.task": cfg.task, "engine.pipeline": cfg.name, "engine.device": str(device),
                      "engine.world_size": str(world)})
    resolved = task.resolved_config()
    tracker.log_params({"config": resolved})
    tracker.log_params({"data": task.data_summary()})
    tracker.log_params({"versions": package_versions(), "seed": cfg.seed})
    tracker.log_text(yaml.safe_dump(resolved, sort_keys=False), "pipeline.yaml")


def _log_curves(history: list[dict[str, float]], tracker: Tracker) -> None:
    if not history or tracker.run_id is None:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    loss_keys = sorted({k for h in history for k in h if k.startswith("loss/")})
    shown = ("valid/recall@", "valid/ndcg@", "test_curve/recall@", "test_curve/ndcg@")
    metric_keys = sorted({k for h in history for k in h if k.startswith(shown)})
    fig, axes = plt.subplots(1, 2 if metric_keys else 1, figsize=(11 if metric_keys else 6, 4), squeeze=False)
    for key in loss_keys:
        axes[0][0].plot(epochs, [h.get(key) for h in history], label=key.removeprefix("loss/"))
    axes[0][0].set(xlabel="epoch", ylabel="loss", title="training loss by term")
    axes[0][0].legend()
    if metric_keys:
        for key in metric_keys:
            pts = [(h["epoch"], h[key]) for h in history if key in h]
            axes[0][1].plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=key)
        axes[0][1].set(xlabel="epoch", title="ranking metrics")
        axes[0][1].legend(fontsize=7)
    tracker.log_figure(fig, "plots/training_curves.png")
    plt.close(fig)
