"""Records of typed fields -> vectors: the field encoders' contract, featurisation, and the fusion of fields.

Used by every family that encodes content: record linkage (a record's fields) and recommendation with item side
information (an item's title, genres, attributes). The field encoders themselves are registry components
(``char_ngram``, ``categorical``, ``multi_categorical``, ``numeric``, ``sentence``, ``image`` from ``engine-linkage``);
a field encoder has

* ``input_kind``: ``"ids"`` (it reads ``int64`` columns: hashed n-grams, categories) or ``"values"`` (``float32``);
* ``featurize(values: list[str | None]) -> ndarray [N, W]``, deterministic and outside the graph (missing values
  are ``None``, a normal case), and optionally ``fit(values)`` (statistics of the training values);
* ``forward(x [B, W]) -> (vectors [B, D], present [B] bool)``.

A table is featurised into two matrices, ``ids int64 [N, W_ids]`` and ``values float32 [N, W_values]``, each field
(times each of its encoders) a fixed slice, a :class:`FieldSlot`. :class:`RecordEncoder` maps them to unit-norm
per-field vectors ``[B, F, D]`` with a presence mask ``[B, F]`` and fuses them into one unit-norm vector ``[B, D]``:

* ``mean``: the mean of the present fields' vectors;
* ``attention``: attention pooling, :math:`\\alpha_f = \\mathrm{softmax}_f(q^\\top \\tanh(W v_f + e_f))` over
  present fields (``e_f`` a learned field embedding);
* ``concat``: the fields' vectors (zeros when absent) concatenated and projected, :math:`W [v_1; \\dots; v_F]`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import ConfigError, DataError

if TYPE_CHECKING:  # pragma: no cover
    from .config import EncoderSpec
    from .registry import Registry

__all__ = ["MODALITIES", "DEFAULT_FIELD_ENCODERS", "FieldSlot", "RecordEncoder", "FieldFeatures",
           "check_fields", "encoder_keys", "build_field_encoders", "featurize_fields", "featurizer_spec",
           "slot_specs", "field_inputs_graph"]

#: the modalities a field can have
MODALITIES = ("text", "categorical", "multi_categorical", "numeric", "date", "image")
#: the encoder of each modality when ``encoders`` names none (``date`` falls back to ``text``'s; an ``image`` value
#: is the path of an image file)
DEFAULT_FIELD_ENCODERS = {"text": "char_ngram", "categorical": "categorical", "multi_categorical": "multi_categorical",
                          "numeric": "numeric", "image": "image"}

Fusion = Literal["mean", "attention", "concat"]


@dataclass(frozen=True)
class FieldSlot:
    name: str
    modality: str
    encoder: str  #: key in RecordEncoder.encoders
    kind: Literal["ids", "values"]
    offset: int
    width: int


def check_fields(fields: Mapping[str, str] | None, columns: Sequence[str], where: str) -> dict[str, str]:
    """The schema ``{field: modality}``, checked against ``columns``; every column ``text`` when not given."""
    if not fields:
        return {c: "text" for c in columns}
    for name, modality in fields.items():
        if modality not in MODALITIES:
            raise DataError(f"{where}: field {name!r}: unknown modality {modality!r}; expected one of "
                            f"{', '.join(MODALITIES)}")
        if name not in columns:
            raise DataError(f"{where}: missing column {name!r} named in the schema (columns: {', '.join(columns)})")
    return dict(fields)


def encoder_keys(field: str, modality: str, specs: Mapping[str, Any]) -> list[str]:
    """A field's encoders: ``specs[<field name>]``, else that of its modality, else the text one; a list of
    encoders encodes the field once with each (keys ``key#0``, ``key#1``...)."""
    key = field if field in specs else modality if modality in specs or modality in DEFAULT_FIELD_ENCODERS else "text"
    spec = specs.get(key)
    return [f"{key}#{i}" for i in range(len(spec))] if isinstance(spec, list) else [key]


def build_field_encoders(registry: "Registry", fields: Mapping[str, str],
                         specs: Mapping[str, "EncoderSpec | list[EncoderSpec]"], dim: int,
                         where: str = "model.encoders") -> dict[str, nn.Module]:
    """One field encoder per key in use (see :func:`encoder_keys`), from ``specs`` or the modality's default."""
    out: dict[str, nn.Module] = {}
    for key in sorted({k for f, mod in fields.items() for k in encoder_keys(f, mod, specs)}):
        base, _, i = key.partition("#")
        spec = specs.get(base)
        if isinstance(spec, list):
            spec = spec[int(i)]
        if spec is not None:
            enc = spec.build(registry, dim=dim)
        else:
            entry = registry.get("encoder", DEFAULT_FIELD_ENCODERS.get(key, "char_ngram"), where=f"{where}.{key}")
            enc = entry.cls.from_config(entry.cls.Config(), dim=dim)
        if not callable(getattr(enc, "featurize", None)) or getattr(enc, "input_kind", None) not in ("ids", "values"):
            raise ConfigError(f"{where}.{key}: {type(enc).__name__} is not a field encoder (it needs featurize() and "
                              "input_kind); use char_ngram, categorical, multi_categorical, numeric, sentence or image")
        out[key] = enc
    return out


@dataclass
class FieldFeatures:
    """A featurised table: its slots and the two input matrices (rows in the order of the values given)."""

    slots: list[FieldSlot]
    ids: np.ndarray  #: int64 [N, W_ids]
    values: np.ndarray  #: float32 [N, W_values]

    def rows(self, start: int, stop: int) -> tuple[Tensor, Tensor]:
        return torch.from_numpy(self.ids[start:stop]), torch.from_numpy(self.values[start:stop])


def featurize_fields(fields: Mapping[str, str], columns: Mapping[str, Sequence[str | None]],
                     encoders: Mapping[str, nn.Module], specs: Mapping[str, Any], fit: bool = True) -> FieldFeatures:
    """Featurise ``columns[field]`` (one value per row, ``None`` when missing) with each field's encoders.

    With ``fit``, an encoder with a ``fit`` method (numeric standardisation) first sees the field's values.
    """
    slots: list[FieldSlot] = []
    blocks: dict[str, list[np.ndarray]] = {"ids": [], "values": []}
    offsets = {"ids": 0, "values": 0}
    n = len(next(iter(columns.values()))) if columns else 0
    for fname, modality in fields.items():
        values = list(columns[fname])
        if len(values) != n:
            raise ValueError(f"field {fname!r} has {len(values)} values, expected {n}")
        for key in encoder_keys(fname, modality, specs):
            enc = encoders[key]
            if fit and callable(getattr(enc, "fit", None)):
                enc.fit(values)
            feats = enc.featurize(values)
            kind = enc.input_kind
            slots.append(FieldSlot(fname, modality, key, kind, offsets[kind], feats.shape[1]))
            offsets[kind] += feats.shape[1]
            blocks[kind].append(feats)
    ids = np.concatenate(blocks["ids"], 1) if blocks["ids"] else np.zeros((n, 0), np.int64)
    vals = np.concatenate(blocks["values"], 1).astype(np.float32) if blocks["values"] else np.zeros((n, 0), np.float32)
    return FieldFeatures(slots, ids, vals)


class RecordEncoder(nn.Module):
    """Field encoders (shared per key) + fusion -> unit-norm record vectors."""

    def __init__(self, slots: list[FieldSlot], encoders: dict[str, nn.Module], dim: int,
                 fusion: Fusion = "attention") -> None:
        super().__init__()
        self.slots, self.dim, self.fusion = list(slots), dim, fusion
        self.encoders = nn.ModuleDict(encoders)
        n = len(self.slots)
        if fusion == "attention":
            self.field_embedding = nn.Parameter(torch.zeros(n, dim))
            self.att = nn.Linear(dim, dim)
            self.query = nn.Parameter(torch.randn(dim) / dim ** 0.5)
        elif fusion == "concat":
            self.out = nn.Linear(n * dim, dim)

    def field_vectors(self, ids: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        vecs, masks = [], []
        for s in self.slots:
            x = ids if s.kind == "ids" else values
            v, m = self.encoders[s.encoder](x[:, s.offset:s.offset + s.width])
            vecs.append(F.normalize(v, dim=-1))  # every field counts alike, whatever its length or encoder
            masks.append(m)
        return torch.stack(vecs, 1), torch.stack(masks, 1)

    def fuse(self, vecs: Tensor, present: Tensor) -> Tensor:
        m = present.unsqueeze(-1).to(vecs.dtype)
        if self.fusion == "mean":
            out = (vecs * m).sum(1) / m.sum(1).clamp(min=1.0)
        elif self.fusion == "attention":
            scores = torch.tanh(self.att(vecs) + self.field_embedding) @ self.query
            weights = torch.softmax(scores.masked_fill(~present, -1e4), dim=1).unsqueeze(-1) * m
            out = (weights * vecs).sum(1)
        else:
            out = self.out((vecs * m).flatten(1))
        return F.normalize(out, dim=-1)

    def forward(self, ids: Tensor, values: Tensor) -> Tensor:
        return self.fuse(*self.field_vectors(ids, values))


def featurizer_spec(encoder: nn.Module) -> dict[str, Any]:
    """``{"name", "options"}``: the registry name of a field encoder and the options of its ``Config`` that it
    holds, enough to rebuild its ``featurize`` from the registry (``cls.from_config(cls.Config(**options))``).
    Options the class names in ``training_only_options`` (e.g. a training-time cache folder) are left out."""
    cls = type(encoder)
    options: dict[str, Any] = {}
    skip = set(getattr(cls, "training_only_options", ()))
    for key in cls.Config.model_fields:  # the options it keeps as attributes of the same name
        if key in skip:
            continue
        value = getattr(encoder, key, None)
        if isinstance(value, (str, int, float, bool, list, tuple)):
            options[key] = list(value) if isinstance(value, tuple) else value
    get = getattr(encoder, "get_config_dict", None)
    if callable(get):
        options.update({k: list(v) if isinstance(v, tuple) else v for k, v in get().items()
                        if k in cls.Config.model_fields and k not in skip})
    return {"name": cls.name, "options": options}


def slot_specs(encoders: Mapping[str, nn.Module], slots: Sequence[FieldSlot]) -> list[dict[str, Any]]:
    """What a serving process needs to featurise raw values exactly as training did, one dict per slot: ``field``,
    ``modality``, ``key`` (the encoder key), ``input`` (``ids`` or ``values``), ``offset``, ``width``, and the
    featuriser's registry ``name`` and ``options`` (:func:`featurizer_spec`). Read back by
    :class:`engine_serving.featurize.SlotFeaturizer`."""
    specs = {s.encoder: featurizer_spec(encoders[s.encoder]) for s in slots}
    return [{"field": s.name, "modality": s.modality, "key": s.encoder, "input": s.kind, "offset": s.offset,
             "width": s.width, **specs[s.encoder]} for s in slots]


class _Both(nn.Module):
    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, ids: Tensor, values: Tensor) -> Tensor:
        return self.module(ids, values)


class _Ids(_Both):
    def forward(self, ids: Tensor) -> Tensor:  # type: ignore[override]
        return self.module(ids, torch.zeros(ids.shape[0], 0, dtype=torch.float32))


class _Values(_Both):
    def forward(self, values: Tensor) -> Tensor:  # type: ignore[override]
        return self.module(torch.zeros(values.shape[0], 0, dtype=torch.long), values)


def field_inputs_graph(module: nn.Module, slots: Sequence[FieldSlot]) -> tuple[nn.Module, tuple[str, ...]]:
    """``module(ids, values)`` as a graph of the inputs the slots use: ``("ids",)``, ``("values",)`` or both.

    ``torch.onnx.export`` names graph inputs after ``forward``'s parameters and cannot take a zero-width input, so
    there is one wrapper per combination.
    """
    kinds = {s.kind for s in slots}
    if kinds == {"ids"}:
        return _Ids(module).eval(), ("ids",)
    if kinds == {"values"}:
        return _Values(module).eval(), ("values",)
    return _Both(module).eval(), ("ids", "values")
