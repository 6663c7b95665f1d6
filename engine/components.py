"""The shapes that components share: a typed ``Config`` per class, a default ``from_config``, objective outputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


class ComponentConfig(BaseModel):
    """Base of every component's nested ``Config``: unknown keys are rejected, values validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Component:
    """Mixin for registrable components.

    Subclasses set ``name`` and a nested ``Config(ComponentConfig)``. The default :meth:`from_config` passes the
    config's fields as keyword arguments to the constructor, plus the context keywords the constructor names
    explicitly
    (so constructors keep explicit typed arguments, as PyG's do).
    """

    name: ClassVar[str]
    Config: ClassVar[type[ComponentConfig]] = ComponentConfig

    @classmethod
    def from_config(cls, config: ComponentConfig, **context: Any):
        import inspect

        kwargs = dict(config)
        params = inspect.signature(cls.__init__).parameters
        named = {n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        kwargs.update({k: v for k, v in context.items() if k in named})  # only context the constructor names
        return cls(**kwargs)


@dataclass
class ObjectiveOutput:
    """What an objective returns: the scalar ``loss`` and its named ``parts`` (each a scalar tensor).

    The trainer logs every part to the tracker under ``loss/<term>/<part>``.
    """

    loss: Any
    parts: dict[str, Any] = field(default_factory=dict)


def require_pair_objective(objective: Any, where: str) -> Any:
    """Return ``objective`` if it is called as ``objective(anchor [B, D], positive [B, D])``, else raise a
    :class:`~engine.errors.ConfigError` naming the YAML key.

    An objective declares other inputs with a class attribute ``inputs`` (``"modalities"``: a list of ``[B, D]``
    tensors, as Symile and GRAM; ``"triplet"``: user, positive, negative, as BPR); the default is ``"pair"``.
    """
    from .errors import ConfigError

    kind = getattr(objective, "inputs", "pair")
    if kind != "pair":
        name = getattr(objective, "name", type(objective).__name__)
        raise ConfigError(f"{where}: objective {name!r} takes {kind}, but this contrast gives it two views "
                          "(anchor, positive); use a pair objective such as infonce, dcl, siglip or supcon")
    return objective
