"""``pipeline.yaml`` -> typed, validated objects, once, at the edge.

:func:`load_pipeline` is the one place that reads YAML, applies ``--set key=value`` overrides, validates the
pipeline, validates each component block against the ``Config`` its registry entry declares, and returns a
:class:`PipelineConfig`. Past that point nothing reads raw dicts.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from .data.cold_start import ColdStartConfig
from .data.item_features import ItemFeaturesConfig
from .errors import ConfigError
from .registry import Registry, format_validation_error

METRICS = ("recall", "ndcg", "hr", "precision", "mrr")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ComponentSpec(BaseModel):
    """A component block in YAML: ``{name: ..., <options>}``, or just the name as a string.

    After :func:`load_pipeline`, :attr:`config` holds the options validated by the component's own ``Config``.
    """

    model_config = ConfigDict(extra="allow")
    kind: ClassVar[str] = ""
    name: str
    _config: BaseModel | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @property
    def config(self) -> BaseModel:
        if self._config is None:
            raise RuntimeError(f"{self.kind} {self.name!r} was not resolved; build configs with load_pipeline()")
        return self._config

    def build(self, registry: Registry, **context: Any) -> Any:
        return registry.build(self.kind, self.name, self.config, **context)


class EncoderSpec(ComponentSpec):
    kind: ClassVar[str] = "encoder"


class ObjectiveSpec(ComponentSpec):
    """An objective with its weight in the total loss."""

    kind: ClassVar[str] = "objective"
    weight: float = Field(1.0, ge=0, description="weight of this term in the total loss")


class AugmenterSpec(ComponentSpec):
    kind: ClassVar[str] = "augmenter"


class DataSpec(ComponentSpec):
    """``data:`` names its source with ``source:``; every source takes ``path:``."""

    kind: ClassVar[str] = "data_source"
    item_features: ItemFeaturesConfig | None = Field(
        None, description="item side information (titles, genres, attributes) joined by item id; families that use "
        "content read it (model.content)")
    cold_items: ColdStartConfig | None = Field(
        None, description="hold out a share of items entirely for cold-start evaluation (needs item_features)")

    @model_validator(mode="before")
    @classmethod
    def _source_is_name(cls, value: Any) -> Any:
        if isinstance(value, dict):
            value = dict(value)
            if "source" not in value:
                raise ValueError("data.source is required: the name of a data source (see `engine plugins list`)")
            value["name"] = value.pop("source")
        return value


class TrainConfig(Strict):
    epochs: int = Field(10, ge=1, description="epoch budget")
    batch_size: int = Field(2048, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0, description="weight decay of the optimizer: an L2 term in the gradient "
                                                        "with adam and sgd, decoupled with adamw")
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    amp: bool = Field(False, description="mixed precision (bf16 autocast) on CUDA; ignored on CPU")
    eval_every: int = Field(1, ge=1, description="validate every N epochs")
    monitor: str = Field("ndcg@20", description="validation metric for early stopping and the best checkpoint")
    patience: int | None = Field(10, ge=1, description="evaluations without improvement before stopping")
    checkpoint_dir: str = Field("checkpoints", description="checkpoints go to <checkpoint_dir>/<name>/")
    num_threads: int | None = Field(None, ge=1, description="torch intra-op threads (default: torch's)")
    grad_clip: float | None = Field(None, gt=0)


class EvaluateConfig(Strict):
    ks: list[int] = Field(default_factory=lambda: [10, 20])
    metrics: list[Literal["recall", "ndcg", "hr", "precision", "mrr"]] = Field(default_factory=lambda: list(METRICS))
    chunk_size: int = Field(2048, ge=1, description="users scored at once; bounds evaluation memory")
    geometry: bool = Field(True, description="log alignment and uniformity of the embeddings")
    test_every: int | None = Field(
        None, ge=1, description="also evaluate on test every N epochs, logged as a learning curve (test_curve/*); "
        "never used to select the model")

    @model_validator(mode="after")
    def _positive_ks(self) -> "EvaluateConfig":
        if not self.ks or any(k < 1 for k in self.ks):
            raise ValueError(f"ks must be a non-empty list of positive integers (got {self.ks})")
        return self


class TrackingConfig(Strict):
    enabled: bool = True
    uri: str | None = Field(None, description="MLflow tracking URI; default: a sqlite store under ./mlruns")
    experiment: str | None = Field(None, description="experiment name; default: the pipeline name")
    log_checkpoint: bool = Field(True, description="log the best checkpoint as an artifact")
    log_export: bool = Field(True, description="export the best weights to ONNX (<checkpoint_dir>/<name>/onnx) and "
                             "log them as artifact `onnx`, so `engine score/serve --model RUN_ID` work")


class PipelineConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    task: str
    seed: int = 2020
    data: DataSpec
    model: Any = None
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    #: where the pipeline came from (for error messages and artifacts); not part of the YAML
    _source: Path | None = PrivateAttr(default=None)
    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)

    @property
    def source(self) -> Path | None:
        return self._source

    @property
    def raw(self) -> dict[str, Any]:
        """The resolved YAML (after overrides), for logging only."""
        return copy.deepcopy(self._raw)


# ---------------------------------------------------------------------------------------------------------------
# Overrides and environment expansion
# ---------------------------------------------------------------------------------------------------------------

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand_env(value: Any) -> Any:
    """``${NAME}`` and ``${NAME:-default}`` in string values (e.g. a data root the user sets)."""
    if isinstance(value, str):

        def sub(m: re.Match) -> str:
            if m.group(1) in os.environ:
                return os.environ[m.group(1)]
            if m.group(2) is not None:
                return m.group(2)
            raise ConfigError(f"environment variable {m.group(1)} is not set (used in {value!r})")

        return _ENV.sub(sub, value)
    if isinstance(value, dict):
        return {k: _expand_env(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v) for v in value]
    return value


def apply_override(doc: dict[str, Any], assignment: str) -> None:
    """Apply ``a.b.c=value`` to ``doc`` in place; the value is parsed as YAML (``3``, ``true``, ``[1, 2]``)."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected KEY=VALUE, e.g. --set train.epochs=5")
    key, _, text = assignment.partition("=")
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set {assignment!r}: empty key segment in {key!r}")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    node: Any = doc
    for i, part in enumerate(parts[:-1]):
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            node = node[_index(node, part, where)]
        elif isinstance(node, dict):
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
        else:
            raise ConfigError(f"--set {key}: {'.'.join(parts[:i])} is a {type(node).__name__}, not a mapping")
    last = parts[-1]
    if isinstance(node, list):
        node[_index(node, last, key)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ConfigError(f"--set {key}: {'.'.join(parts[:-1])} is a {type(node).__name__}, not a mapping")


def _index(node: list, part: str, where: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"--set {where}: expected a list index below {len(node)} (got {part!r})")
    return int(part)


# ---------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: pipeline file not found")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}: malformed YAML: {where}{problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level (got {type(doc).__name__})")
    return doc


def load_pipeline(
    source: str | Path | dict[str, Any],
    overrides: list[str] | tuple[str, ...] = (),
    registry: Registry | None = None,
) -> PipelineConfig:
    """Read, override, validate and resolve a pipeline. Raises :class:`ConfigError` with the YAML path of the problem."""
    if registry is None:
        from .plugins import get_registry

        registry = get_registry()
    if isinstance(source, dict):
        doc, path, label = copy.deepcopy(source), None, "pipeline"
    else:
        path = Path(source)
        doc, label = read_yaml(path), str(path)
    for assignment in overrides:
        apply_override(doc, assignment)
    doc = _expand_env(doc)
    try:
        cfg = PipelineConfig.model_validate(doc)
    except ValidationError as err:
        raise ConfigError(f"{label}: {format_validation_error(err, '')}") from None

    try:
        task_entry = registry.get("task", cfg.task, where="task")
        model_model = getattr(task_entry.cls, "ModelConfig", None)
        if model_model is not None:
            try:
                model = model_model.model_validate(cfg.model if cfg.model is not None else {})
            except ValidationError as err:
                raise ConfigError(format_validation_error(err, "model")) from None
            object.__setattr__(cfg, "model", model)
        _resolve(cfg.data, "data", registry)
        _resolve(cfg.model, "model", registry)
    except ConfigError as err:
        raise ConfigError(f"{label}: {err}") from None
    except KeyError as err:  # UnknownComponentError
        raise type(err)(f"{label}: {err}") from None
    cfg._source = path
    cfg._raw = doc
    return cfg


def _resolve(node: Any, where: str, registry: Registry) -> None:
    """Validate every :class:`ComponentSpec` under ``node`` against its registry ``Config`` (recursively)."""
    if isinstance(node, ComponentSpec):
        node._config = registry.validate(node.kind, node.name, node.options, where)  # `weight` is a field, not an option
        _resolve(node._config, where, registry)
    elif isinstance(node, BaseModel):
        for field in type(node).model_fields:
            _resolve(getattr(node, field), f"{where}.{field}", registry)
    elif isinstance(node, (list, tuple)):
        for i, item in enumerate(node):
            _resolve(item, f"{where}.{i}", registry)
    elif isinstance(node, dict):
        for key, item in node.items():
            _resolve(item, f"{where}.{key}", registry)
