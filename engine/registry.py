"""Components by kind and name, each with its typed config model; friendly errors for unknown and duplicate names."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from .errors import ConfigError, PluginError, UnknownComponentError

KINDS = ("encoder", "objective", "augmenter", "data_source", "task")

#: Which distribution provides a component that may not be installed, so the error can say what to install.
KNOWN_PROVIDERS: dict[tuple[str, str], str] = {
    **{("encoder", n): "engine-graphcl" for n in ("lightgcn", "dccf")},
    **{
        ("augmenter", n): "engine-graphcl"
        for n in ("edge_dropout", "node_dropout", "random_walk", "embedding_noise", "adaptive_mask")
    },
    ("task", "graph_cf"): "engine-graphcl",
    **{
        ("objective", n): "engine-objectives"
        for n in ("infonce", "bpr", "tiled_infonce", "siglip", "dcl", "supcon", "cwcl", "align_uniform",
                  "hard_negative_infonce", "debiased_infonce", "mochi", "queue_infonce", "auc", "symile", "gram",
                  "weighted_sum")
    },
    **{("encoder", n): "engine-seqrec" for n in ("sasrec", "gru4rec")},
    ("task", "seqrec"): "engine-seqrec",
    **{
        ("augmenter", n): "engine-seqrec"
        for n in ("crop", "mask", "reorder", "insert", "substitute", "random", "learned_mlp")
    },
    **{("data_source", n): "engine-seqrec" for n in ("s3rec_txt", "interaction_sequences")},
    ("task", "linkage"): "engine-linkage",
    **{("encoder", n): "engine-linkage" for n in ("char_ngram", "categorical", "multi_categorical", "numeric", "sentence")},
    **{("data_source", n): "engine-linkage" for n in ("record_tables", "deepmatcher_csv", "ditto_txt", "febrl")},
}


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str
    cls: type
    plugin: str

    @property
    def config_model(self) -> type[BaseModel]:
        return self.cls.Config

    @property
    def summary(self) -> str:
        doc = (self.cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


def format_validation_error(err: ValidationError, where: str) -> str:
    """One line per problem: ``path: rule (got value)``."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in (where, *e["loc"]) if p != "")
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        got = e.get("input")
        shown = "" if e["type"] in ("extra_forbidden", "missing") or isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"{loc}: {msg}{shown}")
    return "; ".join(lines)


class Registry:
    """kind -> name -> :class:`Entry`. Built from plugin hooks by :func:`engine.plugins.get_registry`."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, Entry]] = {k: {} for k in KINDS}

    def add(self, kind: str, cls: type, plugin: str) -> Entry:
        if kind not in self._entries:
            raise PluginError(f"plugin {plugin!r} registered an unknown kind {kind!r}; kinds: {', '.join(KINDS)}")
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {plugin!r} registered {cls!r} as {kind} without a string `name` attribute")
        config = getattr(cls, "Config", None)
        if not (isinstance(config, type) and issubclass(config, BaseModel)):
            raise PluginError(f"{kind} {name!r} from plugin {plugin!r} has no pydantic `Config` class")
        existing = self._entries[kind].get(name)
        if existing is not None:
            raise PluginError(
                f"duplicate {kind} name {name!r}: registered by plugin {existing.plugin!r} and by plugin {plugin!r}"
            )
        entry = Entry(kind, name, cls, plugin)
        self._entries[kind][name] = entry
        return entry

    def names(self, kind: str) -> list[str]:
        return sorted(self._entries[kind])

    def entries(self, kind: str | None = None) -> list[Entry]:
        kinds = KINDS if kind is None else (kind,)
        return [self._entries[k][n] for k in kinds for n in sorted(self._entries[k])]

    def get(self, kind: str, name: str, where: str | None = None) -> Entry:
        try:
            return self._entries[kind][name]
        except KeyError:
            pass
        label = kind.replace("_", " ")
        known = self.names(kind)
        msg = f"Unknown {label} {name!r}" + (f" at {where}" if where else "") + "."
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        if close:
            msg += f" Did you mean {close[0]!r}?"
        msg += f" Known: {', '.join(known) if known else '(none)'}."
        provider = KNOWN_PROVIDERS.get((kind, name))
        if provider:
            msg += f" {name!r} is provided by the plugin {provider}: `engine plugins install {provider}`."
        else:
            msg += f" More {label}s come from plugins: see `engine plugins list`."
        raise UnknownComponentError(msg)

    def validate(self, kind: str, name: str, options: dict[str, Any], where: str) -> BaseModel:
        """Validate ``options`` against the component's ``Config``; errors name the YAML path."""
        entry = self.get(kind, name, where=f"{where}.name" if where else None)
        try:
            return entry.config_model.model_validate(options)
        except ValidationError as err:
            raise ConfigError(format_validation_error(err, where)) from None

    def build(self, kind: str, name: str, config: BaseModel, **context: Any) -> Any:
        """Instantiate a component from an already validated config."""
        return self.get(kind, name).cls.from_config(config, **context)
