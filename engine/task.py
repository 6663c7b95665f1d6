"""The task interface: one per family. A task wires data, model and objectives and knows its protocol.

The core's trainer, tracker and CLI only talk to a task through these methods, so nothing in ``engine`` knows a
family. A family plugin registers its task class with the ``register_tasks`` hook.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Iterable, Iterator

from .components import Component, ComponentConfig, ObjectiveOutput

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .config import PipelineConfig
    from .distributed import Shard, ShardedBatch
    from .registry import Registry
    from .tracking import Tracker


class Task(Component):
    """Base class of tasks.

    Lifecycle (driven by :mod:`engine.run`): ``__init__`` -> :meth:`load_data` (may raise DataError before anything
    is written) -> :meth:`build_model` -> for each epoch: :meth:`on_epoch_start`, :meth:`train_batches` /
    :meth:`training_step`, then :meth:`evaluate` on ``"valid"`` -> :meth:`evaluate` on ``"test"`` with the best
    weights -> :meth:`log_artifacts`.
    """

    name: ClassVar[str]
    Config: ClassVar[type[ComponentConfig]] = ComponentConfig
    #: the typed schema of the pipeline's ``model:`` block
    ModelConfig: ClassVar[type[ComponentConfig] | None] = None
    #: metric names (lower-case, e.g. ``ndcg@20``) this task reports; the first K of ``evaluate.ks`` by default
    has_validation: bool = True

    def __init__(self, config: "PipelineConfig", registry: "Registry") -> None:
        self.config = config
        self.registry = registry

    # -- data -----------------------------------------------------------------------------------------------------
    def load_data(self) -> None:
        """Read and validate the data (raise :class:`engine.errors.DataError` on bad input)."""
        raise NotImplementedError

    def data_summary(self) -> dict[str, Any]:
        """Counts and checksums to log as params (``data.*``)."""
        return {}

    def resolved_config(self) -> dict[str, Any]:
        """The pipeline as it ran, once :meth:`load_data` has filled in what the user left to the task (an inferred
        schema, say): logged as the run's ``config`` params and ``pipeline.yaml``, so the run can be repeated with
        that file. By default the validated pipeline itself (``config.raw``)."""
        return self.config.raw

    # -- model ----------------------------------------------------------------------------------------------------
    def build_model(self) -> "torch.nn.Module":
        raise NotImplementedError

    # -- training -------------------------------------------------------------------------------------------------
    def on_epoch_start(self, model: "torch.nn.Module", epoch: int, generator: "torch.Generator") -> None:
        """Called before each epoch (e.g. to resample augmented graphs)."""

    def train_batches(self, epoch: int, generator: "torch.Generator") -> Iterable[Any]:
        """The batches of one epoch, drawn with ``generator`` so runs are reproducible."""
        raise NotImplementedError

    def num_batches(self) -> int | None:
        return None

    def training_step(self, model: "torch.nn.Module", batch: Any) -> ObjectiveOutput:
        """The loss of one batch and its named parts (each part is logged per epoch)."""
        raise NotImplementedError

    def parameter_groups(self, model: "torch.nn.Module") -> dict[str, dict[str, Any]]:
        """The parameters of each optimiser: ``{group: {"params": [...], "lr": ..., "weight_decay": ...}}``, where
        ``lr`` and ``weight_decay`` are optional (``train.*`` by default).

        One optimiser, ``"model"``, over every trainable parameter unless a task alternates updates of different
        parameters (MCLRec's meta-optimisation of its augmenters). A parameter belongs to one group at most.
        """
        return {"model": {"params": [p for p in model.parameters() if p.requires_grad]}}

    def training_steps(self, model: "torch.nn.Module", batch: Any) -> Iterator[tuple[str, ObjectiveOutput]]:
        """The updates of one batch, in order: each ``(group, output)`` is back-propagated and steps the optimiser
        of ``group`` (see :meth:`parameter_groups`) before the generator resumes, so a later loss is computed with
        the updated weights. By default, one update of ``"model"`` with :meth:`training_step`."""
        yield "model", self.training_step(model, batch)

    # -- data-parallel training (``engine run --nproc N``; see :mod:`engine.distributed`) ---------------------------
    def shard_batch(self, batch: Any, shard: "Shard") -> "ShardedBatch":
        """This rank's part of a global batch from :meth:`train_batches` (every rank draws the same global batches).

        The losses :meth:`training_steps` returns for it must be this rank's *shares*: summed over the ranks and
        divided by their number, the single-process loss of the global batch (then the averaged gradients are the
        single-process ones). By default every tensor or array whose first dimension is the batch's row count is
        cut to the shard's rows and the trainer weights the task's loss by the shard's share of the rows: exact when
        the loss is a mean of per-row terms (in-batch objectives gather every rank's rows themselves). A family
        whose terms normalise otherwise (by positions, unique users) returns a :class:`ShardedBatch` with
        ``weight=None`` and computes the shares in :meth:`training_step`.
        """
        from .distributed import ShardedBatch, rows_of, slice_rows

        n = rows_of(batch)
        part = shard.for_rows(n)
        start, stop = part.bounds(n)
        return ShardedBatch(slice_rows(batch, (start, stop), n), part, {"rows": n},
                            weight=part.world * (stop - start) / n)

    def check_data_parallel(self, model: "torch.nn.Module") -> None:
        """Raise :class:`engine.errors.ConfigError` when this model cannot train data-parallel exactly. By default,
        every registry objective in the model must declare how it splits over ranks (``data_parallel = "rows"``:
        a mean of per-row terms; ``"gather"``: it gathers every rank's candidates)."""
        from .distributed import check_objectives

        check_objectives(model, self.registry)

    # -- evaluation -----------------------------------------------------------------------------------------------
    def evaluate(self, model: "torch.nn.Module", split: str) -> dict[str, float]:
        """Metrics on ``split`` (``"valid"`` or ``"test"``), flat, lower-case keys like ``recall@20``."""
        raise NotImplementedError

    def has_split(self, split: str) -> bool:
        return True

    # -- outputs --------------------------------------------------------------------------------------------------
    def log_artifacts(self, model: "torch.nn.Module", tracker: "Tracker") -> None:
        """Plots and tables worth looking at (embedding geometry, ...)."""

    def export_onnx(self, model: "torch.nn.Module", directory: str) -> dict[str, Any]:
        """Write the family's ONNX graph under ``directory``; return paths and a parity report."""
        raise NotImplementedError(f"task {self.name!r} has no ONNX export")
