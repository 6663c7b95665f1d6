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
