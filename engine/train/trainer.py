"""The training loop every task shares.

Seeded and reproducible (a per-epoch batch generator derived from the seed, RNG states saved in checkpoints, so a
resumed run continues exactly as an uninterrupted one), CPU or CUDA, bf16 autocast on CUDA when asked, a checkpoint
after every epoch (``last.pt``) and of the best validation state (``best.pt``), resume from ``last.pt``, early
stopping on a validation metric, and a progress bar.

Data-parallel (``engine run --nproc N``, see :mod:`engine.distributed`): every rank draws the same global batches
and trains on its shard (``task.shard_batch``), gradients are averaged over ranks after each backward (by hand, not
``DistributedDataParallel``: tasks make several updates per batch with several optimisers, and a parameter may get no
gradient on some rank), the epoch's losses are averaged over ranks, validation runs on rank 0 only and its metrics
are broadcast so every rank takes the same early-stopping decision, and only rank 0 logs and checkpoints
(:func:`is_main_process`).
"""

from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import distributed
from ..errors import CheckpointError, EngineError
from .checkpoint import config_fingerprint, load_checkpoint, save_checkpoint


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EngineError(f"train.device: {name!r} asked for, but CUDA is not available here (use 'auto' or 'cpu')")
    return device


def is_main_process() -> bool:
    return not (torch.distributed.is_available() and torch.distributed.is_initialized()) or (
        torch.distributed.get_rank() == 0
    )


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _average_gradients(optimizer: torch.optim.Optimizer) -> None:
    distributed.average_gradients(p for g in optimizer.param_groups for p in g["params"])


@dataclass
class TrainResult:
    best_epoch: int
    best_metrics: dict[str, float]
    epochs_run: int
    stopped_early: bool
    history: list[dict[str, float]] = field(default_factory=list)


class Trainer:
    """Trains ``model`` for ``task`` as ``cfg.train`` says, logging to ``tracker``, checkpointing to ``directory``."""

    def __init__(self, task, cfg, tracker, directory: str | Path, device: torch.device, progress: bool = True):
        self.task = task
        self.cfg = cfg
        self.train_cfg = cfg.train
        self.tracker = tracker
        self.directory = Path(directory)
        self.device = device
        self.progress = progress and sys.stderr.isatty()
        self.fingerprint = config_fingerprint(cfg)

    @property
    def last_path(self) -> Path:
        return self.directory / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.directory / "best.pt"

    def _optimizers(self, model: torch.nn.Module) -> dict[str, torch.optim.Optimizer]:
        """One optimiser (``train.optimizer``) per parameter group of the task."""
        t = self.train_cfg
        cls = {"sgd": torch.optim.SGD, "adamw": torch.optim.AdamW}.get(t.optimizer, torch.optim.Adam)
        optimizers, owner = {}, {}
        for name, group in self.task.parameter_groups(model).items():
            params = list(group["params"])
            for p in params:
                if id(p) in owner:
                    raise EngineError(f"task {self.task.name!r}: a parameter is in both groups {owner[id(p)]!r} "
                                      f"and {name!r}")
                owner[id(p)] = name
            if params:
                optimizers[name] = cls(params, lr=group.get("lr", t.lr),
                                       weight_decay=group.get("weight_decay", t.weight_decay))
        if not optimizers:
            raise EngineError(f"task {self.task.name!r}: the model has no trainable parameter")
        return optimizers

    def _higher_is_better(self) -> bool:
        return not self.train_cfg.monitor.startswith("loss")

    def resume_state(self) -> dict[str, Any] | None:
        """The last checkpoint, after checking it belongs to this pipeline (None when there is none)."""
        if not self.last_path.exists():
            return None
        state = load_checkpoint(self.last_path)
        if state.get("fingerprint") != self.fingerprint:
            raise CheckpointError(
                f"{self.last_path}: checkpoint was written by a different pipeline configuration; "
                "delete it or run without --resume"
            )
        return state

    def fit(self, model: torch.nn.Module, state: dict[str, Any] | None = None) -> TrainResult:
        t = self.train_cfg
        model.to(self.device)
        optimizers = self._optimizers(model)
        start_epoch, best_value, best_epoch, bad = 1, None, 0, 0
        best_metrics: dict[str, float] = {}
        history: list[dict[str, float]] = []
        if state is not None:
            try:
                model.load_state_dict(state["model"])
                saved = state.get("optimizers") or {"model": state["optimizer"]}
                if saved.keys() != optimizers.keys():
                    raise KeyError(f"optimisers {sorted(saved)} in the checkpoint, {sorted(optimizers)} here")
                for name, optimizer in optimizers.items():
                    optimizer.load_state_dict(saved[name])
            except (RuntimeError, KeyError, ValueError) as exc:
                raise CheckpointError(f"{self.last_path}: does not fit this model ({str(exc).splitlines()[0]})") from None
            _set_rng_state(state["rng"])
            start_epoch = state["epoch"] + 1
            best_value, best_epoch, bad = state["best_value"], state["best_epoch"], state["bad_evals"]
            best_metrics, history = state["best_metrics"], state["history"]
        else:
            seed_everything(self.cfg.seed)

        use_amp = t.amp and self.device.type == "cuda"
        sign = 1.0 if self._higher_is_better() else -1.0
        validate = self.task.has_split("valid")
        shard = distributed.process_shard()
        main = shard.rank == 0
        stopped = False
        epoch = start_epoch - 1
        for epoch in range(start_epoch, t.epochs + 1):
            generator = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
            model.train()
            tic = time.perf_counter()
            self.task.on_epoch_start(model, epoch, generator)
            sums: dict[str, float] = {}
            counts: dict[str, int] = {}
            n = 0
            batches = self.task.train_batches(epoch, generator)
            if self.progress:
                from tqdm.auto import tqdm

                batches = tqdm(batches, total=self.task.num_batches(), desc=f"epoch {epoch}/{t.epochs}", leave=False)
            for batch in batches:
                if shard.world > 1:
                    batch = self.task.shard_batch(batch, shard)
                self._update(model, batch, optimizers, use_amp, epoch, sums, counts)
                n += 1
            if n == 0:
                raise EngineError("the training split produced no batches: check the data and train.batch_size")
            sums, counts = distributed.reduce_epoch_sums(sums, counts)
            row: dict[str, float] = {f"loss/{k}": v / counts[k] for k, v in sums.items()}
            row["time/epoch_s"] = time.perf_counter() - tic

            if validate and epoch % t.eval_every == 0:
                tic = time.perf_counter()
                metrics = distributed.broadcast_object(self.task.evaluate(model, "valid") if main else None)
                row["time/eval_s"] = time.perf_counter() - tic
                row.update({f"valid/{k}": v for k, v in metrics.items()})
                key = t.monitor if t.monitor.startswith("loss") else f"valid/{t.monitor}"
                if key not in row:
                    known = ", ".join(sorted(k.removeprefix("valid/") for k in row if k.startswith("valid/")))
                    raise EngineError(f"train.monitor: {t.monitor!r} is not a validation metric; known: {known}")
                value = row[key]
                if best_value is None or sign * value > sign * best_value:
                    best_value, best_epoch, bad = value, epoch, 0
                    best_metrics = metrics
                    self._save_best(model, epoch, metrics)
                else:
                    bad += 1
            elif not validate:  # no validation split: the last epoch is the one kept
                best_epoch, best_metrics = epoch, {}
                self._save_best(model, epoch, {})
            test_every = self.cfg.evaluate.test_every
            if test_every and main and (epoch % test_every == 0 or epoch == t.epochs):
                row.update({f"test_curve/{k}": v for k, v in self.task.evaluate(model, "test").items()})
            history.append({"epoch": epoch, **row})
            if main:
                self.tracker.log_metrics(row, step=epoch)
                self._log_line(epoch, row)
                save_checkpoint(
                    {
                        "model": model.state_dict(),
                        "optimizers": {name: o.state_dict() for name, o in optimizers.items()},
                        "epoch": epoch,
                        "rng": _rng_state(),
                        "best_value": best_value,
                        "best_epoch": best_epoch,
                        "bad_evals": bad,
                        "best_metrics": best_metrics,
                        "history": history,
                        "fingerprint": self.fingerprint,
                        "run_id": self.tracker.run_id,
                    },
                    self.last_path,
                )
            if validate and t.patience is not None and bad >= t.patience:
                stopped = True
                break
        if main and not self.best_path.exists():  # no evaluation happened within the budget: keep the last weights
            self._save_best(model, epoch, {})
        return TrainResult(best_epoch, best_metrics, epoch, stopped, history)

    def _update(self, model, batch, optimizers, use_amp, epoch, sums, counts) -> None:
        """The task's updates of one batch, each stepping its group's optimiser; losses summed into ``sums``
        (``total`` and the parts for the ``model`` group, ``<group>/...`` for the others).

        ``batch`` is a :class:`~engine.distributed.ShardedBatch` in a data-parallel run: in-batch objectives gather
        across ranks while its steps run, its ``weight`` (when set) turns the task's local means into shares, and
        the gradients are averaged over ranks before each optimiser step."""
        weight = None
        if isinstance(batch, distributed.ShardedBatch):
            with distributed.sharding(batch.shard):
                if batch.weight is not None:
                    weight, batch = batch.weight, batch.batch
                self._steps(model, batch, optimizers, use_amp, epoch, sums, counts, weight, across_ranks=True)
            return
        self._steps(model, batch, optimizers, use_amp, epoch, sums, counts, weight, across_ranks=False)

    def _steps(self, model, batch, optimizers, use_amp, epoch, sums, counts, weight, across_ranks: bool) -> None:
        steps = self.task.training_steps(model, batch)
        while True:
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_amp):
                group, out = next(steps, (None, None))
            if group is None:
                return
            if weight is not None:
                out = type(out)(out.loss * weight, {k: v * weight for k, v in out.parts.items()})
            if group not in optimizers:
                raise EngineError(f"task {self.task.name!r}: update of unknown parameter group {group!r} "
                                  f"(groups: {', '.join(optimizers)})")
            loss = out.loss
            if not torch.isfinite(loss):
                raise EngineError(
                    f"epoch {epoch}: the loss became {loss.item()} (parts: "
                    f"{ {k: float(v) for k, v in out.parts.items()} }); lower train.lr or check the data"
                )
            model.zero_grad(set_to_none=True)
            loss.backward()
            optimizer = optimizers[group]
            if across_ranks:
                _average_gradients(optimizer)
            if self.train_cfg.grad_clip:
                params = [p for g in optimizer.param_groups for p in g["params"]]
                torch.nn.utils.clip_grad_norm_(params, self.train_cfg.grad_clip)
            optimizer.step()
            prefix = "" if group == "model" else f"{group}/"
            for name, value in {"total": loss, **out.parts}.items():
                key = prefix + name
                sums[key] = sums.get(key, 0.0) + float(value.detach())
                counts[key] = counts.get(key, 0) + 1

    def _save_best(self, model: torch.nn.Module, epoch: int, metrics: dict[str, float]) -> None:
        if is_main_process():
            save_checkpoint({"model": model.state_dict(), "epoch": epoch, "metrics": metrics,
                             "fingerprint": self.fingerprint}, self.best_path)

    def _log_line(self, epoch: int, row: dict[str, float]) -> None:
        shown = [f"{k.removeprefix('loss/')}={v:.4f}" for k, v in row.items() if k.startswith("loss/")]
        evaluated = [k for k in row if k.startswith(("valid/", "test_curve/"))]
        shown += [f"{k}={row[k]:.4f}" for k in ([k for k in evaluated if "@" in k] or evaluated)][:4]
        shown.append(f"{row['time/epoch_s']:.1f}s")
        print(f"epoch {epoch}/{self.train_cfg.epochs}: " + " ".join(shown), file=sys.stderr, flush=True)

    def load_best(self, model: torch.nn.Module) -> int:
        """Load the best weights into ``model``; returns their epoch."""
        state = load_checkpoint(self.best_path)
        model.load_state_dict(state["model"])
        return int(state["epoch"])

