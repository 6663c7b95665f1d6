"""A weighted sum of objectives, each term's parts logged under its own name."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import Field
from torch import nn

from engine.components import Component, ComponentConfig, ObjectiveOutput
from engine.config import ObjectiveSpec


class WeightedSum(nn.Module, Component):
    r"""The sum :math:`\mathcal{L} = \sum_k w_k \mathcal{L}_k` of several objectives called on the same inputs.

    Every term's parts are returned under ``<label>/<part>`` (unweighted), where the label is the term's name
    (``infonce``, or ``infonce_2`` for a second one), so the trainer logs each term; the loss is the weighted sum.
    In YAML, each term is an objective block with its own ``weight`` (default 1)::

        objective:
          name: weighted_sum
          weight: 0.1            # the weight of the whole sum in the task's total
          terms:
            - {name: infonce, temperature: 0.2}
            - {name: align_uniform, weight: 0.5, align_weight: 0.0}

    The terms are validated when the pipeline loads, like any component block, and built by :meth:`from_config`
    from the registry (the one passed as ``registry=`` context, else the global one). All terms receive the
    arguments of :meth:`forward` unchanged, so they must share a signature (e.g. all take ``anchor, positive``).

    Related: every other objective. Reference: the multi-task weighting of SGL / SimGCL (a main loss plus
    :math:`\lambda` times a contrastive one) and CLIP-style auxiliary losses.

    Args:
        objectives (sequence of nn.Module): the terms.
        weights (sequence of float): :math:`w_k \ge 0`, one per term. (default: all 1)
        labels (sequence of str, optional): the log label of each term. (default: each term's ``name``, deduplicated)

    Shapes:
        - **input:** whatever the terms take
        - **output:** :class:`~engine.components.ObjectiveOutput` with ``loss`` the weighted sum and
          ``parts={"<label>/<part>": ...}``
    """

    name: ClassVar[str] = "weighted_sum"

    class Config(ComponentConfig):
        """Options of :class:`WeightedSum`."""

        terms: list[ObjectiveSpec] = Field(min_length=1, description="objective blocks, each with its own weight")

    def __init__(self, objectives: Sequence[nn.Module], weights: Sequence[float] | None = None,
                 labels: Sequence[str] | None = None) -> None:
        super().__init__()
        objectives = list(objectives)
        weights = [1.0] * len(objectives) if weights is None else [float(w) for w in weights]
        if not objectives:
            raise ValueError("WeightedSum: needs at least one objective")
        if len(weights) != len(objectives):
            raise ValueError(f"WeightedSum: {len(objectives)} objectives but {len(weights)} weights")
        if any(not w >= 0 for w in weights):
            raise ValueError(f"WeightedSum: weights must be >= 0 (got {weights})")
        if labels is None:
            labels, seen = [], {}
            for obj in objectives:
                base = getattr(obj, "name", type(obj).__name__.lower())
                seen[base] = seen.get(base, 0) + 1
                labels.append(base if seen[base] == 1 else f"{base}_{seen[base]}")
        labels = list(labels)
        if len(labels) != len(objectives) or len(set(labels)) != len(labels):
            raise ValueError(f"WeightedSum: labels must be distinct, one per objective (got {labels})")
        self.terms = nn.ModuleList(objectives)
        self.weights, self.labels = weights, labels

    @classmethod
    def from_config(cls, config: ComponentConfig, **context: Any) -> WeightedSum:
        """Build every term from the registry: ``context["registry"]`` if given, else the global one."""
        registry = context.pop("registry", None)
        if registry is None:
            from engine.plugins import get_registry

            registry = get_registry()
        objectives = []
        for i, spec in enumerate(config.terms):
            try:
                term_config = spec.config
            except RuntimeError:  # built directly, not through load_pipeline: validate the block here
                term_config = registry.validate("objective", spec.name, spec.options, f"terms.{i}")
            objectives.append(registry.build("objective", spec.name, term_config, registry=registry, **context))
        return cls(objectives, [spec.weight for spec in config.terms])

    def get_config_dict(self) -> dict[str, Any]:
        """Each term's weight and options, flattened as ``<label>.<key>``."""
        out: dict[str, Any] = {}
        for label, weight, term in zip(self.labels, self.weights, self.terms):
            out[f"{label}.weight"] = weight
            config = term.get_config_dict() if hasattr(term, "get_config_dict") else {}
            out.update({f"{label}.{k}": v for k, v in config.items()})
        return out

    def forward(self, *args: Any, **kwargs: Any) -> ObjectiveOutput:
        total = None
        parts: dict[str, Any] = {}
        for label, weight, term in zip(self.labels, self.weights, self.terms):
            out = term(*args, **kwargs)
            parts.update({f"{label}/{k}": v for k, v in out.parts.items()})
            total = weight * out.loss if total is None else total + weight * out.loss
        return ObjectiveOutput(loss=total, parts=parts)

    def extra_repr(self) -> str:
        return ", ".join(f"{label}: {w}" for label, w in zip(self.labels, self.weights))
