"""Item content for recommenders: field features -> a content embedding per item, and its training terms.

``model.content`` (one YAML switch in the graph and sequential families) encodes every item's side information
(``data.item_features``) with the registry's field encoders, fuses the fields (:class:`engine.fields.RecordEncoder`)
and maps the fused vector into the recommender's embedding space with a linear head. The families use it three ways:

* ``input: true``: the content embedding is added to the item tower's input (the ego embedding of graph encoders,
  the item embedding of sequence encoders), so warm items combine identity and content;
* a ranking loss on the content embeddings alone (``rec_weight``): users scored against content embeddings, so
  that an item nobody has clicked (cold start) is ranked by its content;
* ``align``: a contrastive term (any pair objective of the registry) between an item's collaborative embedding and
  its content embedding, on the batch's items.

``split`` (REARM, Wang et al. 2025: modal-shared vs modal-unique features): the head has a shared and a specific
part; the content embedding is their sum, ``align`` sees only the shared part, and an orthogonality penalty
:math:`\\lVert \\hat S^\\top \\hat P \\rVert_F^2 / n` (rows L2-normalised) keeps the two parts apart.

``detach`` makes the content tower a student of the collaborative model: in its ranking loss the users (sequence
representations) are detached, in ``align`` the collaborative item embeddings are, so no content term moves the
collaborative model; with ``input: false`` that model trains as it would without content (warm items ranked as by
the ID-only model) while the content tower learns to place items where the users would find them (cold items).

``item_graph``: an item-item graph from content (each item's ``k`` most similar *warm* items by the cosine of their
TF-IDF-weighted feature tokens and pretrained vectors), fixed before training (FREEDOM, Zhou & Shen 2023). Its view of
an item is the mean of its neighbours' collaborative embeddings, added to the item's embedding; a cold item gets it
from its warm neighbours.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from .components import ComponentConfig
from .config import EncoderSpec, ObjectiveSpec
from .fields import FieldFeatures, RecordEncoder, build_field_encoders, featurize_fields, field_inputs_graph, \
    slot_specs

if TYPE_CHECKING:  # pragma: no cover
    from .data.item_features import ItemFeatures
    from .registry import Registry

__all__ = ["ContentConfig", "SplitConfig", "ItemGraphConfig", "ContentParts", "ItemContent", "attach_content",
           "alignment_terms", "content_knn", "orthogonality", "item_features_of", "load_item_content",
           "export_content_encoder"]


class SplitConfig(ComponentConfig):
    orth_weight: float = Field(0.1, ge=0, description="weight of the shared/specific orthogonality penalty")


class ItemGraphConfig(ComponentConfig):
    k: int = Field(10, ge=1, description="neighbours per item (warm items only)")
    weight: float = Field(1.0, ge=0, description="scale of the item-graph view added to the item embeddings")


class ContentConfig(ComponentConfig):
    """``model.content``: item side information in a recommender (see :mod:`engine.content`)."""

    encoders: dict[str, EncoderSpec | list[EncoderSpec]] = Field(
        default_factory=dict, description="modality or field name -> field encoder (default per modality: "
        "char_ngram for text, categorical, multi_categorical, numeric)")
    fusion: Literal["mean", "attention", "concat"] = Field("attention", description="fields -> content vector")
    input: bool = Field(True, description="add the content embedding to the item tower's input")
    rec_weight: float = Field(1.0, ge=0, description="weight of the ranking loss on content embeddings alone")
    align: ObjectiveSpec | None = Field(
        default_factory=lambda: ObjectiveSpec(name="infonce", temperature=0.2, weight=0.1),
        description="contrastive alignment of collaborative and content item embeddings; its weight scales it")
    split: SplitConfig | None = Field(None, description="REARM: shared + specific content parts, orthogonal")
    item_graph: ItemGraphConfig | None = Field(None, description="an item-item content kNN graph as an extra view")
    detach: bool = Field(False, description="the content terms do not update the collaborative model (users / "
                                            "sequence representations and collaborative item embeddings detached)")


def orthogonality(a: Tensor, b: Tensor) -> Tensor:
    """:math:`\\lVert \\hat A^\\top \\hat B \\rVert_F^2 / n` with rows of ``a``, ``b`` ``[n, D]`` L2-normalised."""
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    return (a.T @ b).pow(2).sum() / a.shape[0]


class ContentParts(NamedTuple):
    """The content embeddings' shared part and, with ``split``, their specific part (``None`` otherwise)."""

    shared: Tensor
    specific: Tensor | None

    @property
    def total(self) -> Tensor:
        """The content embeddings: shared + specific."""
        return self.shared if self.specific is None else self.shared + self.specific


class ItemContent(nn.Module):
    """Featurised items (buffers) -> content embeddings ``[I, out_dim]`` (and the shared part with ``split``)."""

    def __init__(self, features: FieldFeatures, encoders: dict[str, nn.Module], dim: int, out_dim: int,
                 fusion: str = "attention", split: bool = False) -> None:
        super().__init__()
        self.features = features  #: the featurised items (kept for the item graph and the export)
        self.encoder = RecordEncoder(features.slots, encoders, dim, fusion)  # type: ignore[arg-type]
        self.register_buffer("ids", torch.from_numpy(features.ids), persistent=False)
        self.register_buffer("values", torch.from_numpy(features.values), persistent=False)
        self.head = nn.Linear(dim, out_dim)
        self.specific = nn.Linear(dim, out_dim) if split else None

    @classmethod
    def build(cls, registry: "Registry", cfg: ContentConfig, features: "ItemFeatures", out_dim: int,
              dim: int | None = None) -> "ItemContent":
        dim = dim or out_dim
        encoders = build_field_encoders(registry, features.fields, cfg.encoders, dim, where="model.content.encoders")
        feats = featurize_fields(features.fields, features.columns, encoders, cfg.encoders)
        return cls(feats, encoders, dim, out_dim, cfg.fusion, cfg.split is not None)

    @property
    def num_items(self) -> int:
        return int(self.ids.shape[0])

    def parts(self, items: Tensor | None = None) -> ContentParts:
        """``(shared, specific)`` of ``items`` (default all); ``specific`` is ``None`` without ``split``."""
        ids, values = (self.ids, self.values) if items is None else (self.ids[items], self.values[items])
        v = self.encoder(ids, values)
        return ContentParts(self.head(v), self.specific(v) if self.specific is not None else None)

    def forward(self, items: Tensor | None = None) -> Tensor:
        return self.parts(items).total


def attach_content(registry: "Registry", cfg: ContentConfig, features: "ItemFeatures", dim: int, model) -> None:
    """Add ``model.content`` (an :class:`ItemContent` of width ``dim``) and, with ``cfg.align``,
    ``model.content_align`` (its pair objective) to ``model``."""
    from .components import require_pair_objective

    model.content = ItemContent.build(registry, cfg, features, out_dim=dim)
    if cfg.align is not None:
        model.content_align = require_pair_objective(cfg.align.build(registry), "model.content.align")


def alignment_terms(cfg: ContentConfig, model, collaborative: Tensor, parts: ContentParts,
                    items: Tensor) -> dict[str, Tensor]:
    """``content/align`` (the pair objective between the collaborative rows and the shared content of the unique
    ``items``) and, with ``split``, ``content/orth``; each already weighted."""
    ii = torch.unique(items)
    out: dict[str, Tensor] = {}
    if cfg.detach:
        collaborative = collaborative.detach()
    if cfg.align is not None:
        out["content/align"] = cfg.align.weight * model.content_align(collaborative[ii], parts.shared[ii]).loss
    if parts.specific is not None and cfg.split.orth_weight > 0:
        out["content/orth"] = cfg.split.orth_weight * orthogonality(parts.shared[ii], parts.specific[ii])
    return out


def _slot_matrix(x: np.ndarray) -> Tensor:
    """Rows of hashed ids -> L2-normalised TF-IDF rows over the ids present (sparse CSR ``[N, V]``); 0 is padding."""
    rows = np.repeat(np.arange(x.shape[0]), x.shape[1])
    keep = x.reshape(-1) > 0
    _, cols = np.unique(x.reshape(-1)[keep], return_inverse=True)
    pairs = np.unique(np.stack([rows[keep], cols.reshape(-1)]), axis=1)
    vocab = int(pairs[1].max()) + 1 if pairs.size else 1
    df = np.bincount(pairs[1], minlength=vocab)
    w = (np.log((1 + x.shape[0]) / (1 + df)) + 1.0)[pairs[1]]
    norms = np.sqrt(np.bincount(pairs[0], weights=w ** 2, minlength=x.shape[0]))
    w = w / np.maximum(norms[pairs[0]], 1e-12)
    return torch.sparse_coo_tensor(torch.from_numpy(pairs), torch.from_numpy(w).float(), (x.shape[0], vocab),
                                   check_invariants=False)


@torch.no_grad()
def content_knn(features: FieldFeatures, k: int, candidates: np.ndarray, chunk: int = 512) -> tuple[Tensor, Tensor]:
    """Each item's ``k`` most similar ``candidates`` by the mean over fields of the cosine of their TF-IDF token
    vectors (id fields) or value vectors (pretrained embeddings; numeric fields are left out); an item is never its
    own neighbour.

    Returns:
        ``(neighbours [N, k'], similarity [N, k'])`` with ``k' = min(k, len(candidates) - 1)``.
    """
    cand = torch.from_numpy(np.asarray(candidates, dtype=np.int64))
    mats: list[tuple[Tensor, Tensor]] = []  # (all rows, candidate rows); sparse for id fields
    for s in features.slots:
        block = (features.ids if s.kind == "ids" else features.values)[:, s.offset:s.offset + s.width]
        if s.kind == "ids":
            m = _slot_matrix(block).coalesce()
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
                mats.append((m.to_sparse_csr(), m.index_select(0, cand).coalesce()))
        elif s.width > 2:  # pretrained vectors (numbers are left out: one signed-log value has no useful cosine)
            m = F.normalize(torch.from_numpy(np.ascontiguousarray(block[:, :-1])).float(), dim=-1)  # last: present
            mats.append((m, m[cand]))
    n = features.ids.shape[0]
    kk = min(k, cand.numel() - 1)
    nbr, sim = torch.empty(n, kk, dtype=torch.long), torch.empty(n, kk)
    for start in range(0, n, chunk):
        rows = torch.arange(start, min(n, start + chunk))
        total = torch.zeros(rows.numel(), cand.numel())
        for m, cm in mats:
            if cm.is_sparse:
                total += torch.sparse.mm(cm, _csr_rows(m, rows).T).T
            else:
                total += m[rows] @ cm.T
        total /= max(1, len(mats))
        total[rows.unsqueeze(1) == cand.unsqueeze(0)] = float("-inf")  # not its own neighbour
        s, j = total.topk(kk, dim=1)
        nbr[rows], sim[rows] = cand[j], s
    return nbr, sim


def _csr_rows(m: Tensor, rows: Tensor) -> Tensor:
    """Dense rows ``rows`` (contiguous) of the CSR matrix ``m``."""
    start, stop = int(rows[0]), int(rows[-1]) + 1
    crow, col, val = m.crow_indices(), m.col_indices(), m.values()
    lo, hi = int(crow[start]), int(crow[stop])
    out = torch.zeros(stop - start, m.shape[1])
    counts = crow[start + 1:stop + 1] - crow[start:stop]
    r = torch.repeat_interleave(torch.arange(stop - start), counts)
    out[r, col[lo:hi]] = val[lo:hi]
    return out


def item_features_of(spec, item_ids, num_items: int) -> "ItemFeatures | None":
    """``data.item_features`` read and joined to the items (``None`` when not set).

    Raises:
        ConfigError: ``data.cold_items`` without ``data.item_features`` (cold items could only be ranked at random).
    """
    from .data.item_features import load_item_features
    from .errors import ConfigError

    if spec.cold_items is not None and spec.item_features is None:
        raise ConfigError("data.cold_items: needs data.item_features (cold items are ranked by their content)")
    if spec.item_features is None:
        return None
    return load_item_features(spec.item_features, spec.options.get("path"), item_ids, num_items)


def load_item_content(spec, data) -> tuple[object, "ItemFeatures | None", object]:
    """``data.item_features`` and ``data.cold_items`` applied to interaction data (:class:`InteractionData`):
    ``(data with cold items held out, item features or None, ColdItems or None)``."""
    from .data.cold_start import hold_out_items

    features = item_features_of(spec, data.item_ids, data.num_items)
    if spec.cold_items is None:
        return data, features, None
    data, cold = hold_out_items(data, spec.cold_items, eligible=features.has_content)
    return data, features, cold


class _ContentGraph(nn.Module):
    """``(ids, values)`` of featurised items -> content embeddings (what a batch job runs on new items)."""

    def __init__(self, content: ItemContent) -> None:
        super().__init__()
        self.encoder, self.head, self.specific = content.encoder, content.head, content.specific

    def forward(self, ids: Tensor, values: Tensor) -> Tensor:
        v = self.encoder(ids, values)
        return self.head(v) + (self.specific(v) if self.specific is not None else 0)


def export_content_encoder(content: ItemContent, directory) -> dict[str, object]:
    """Write ``content_encoder.onnx`` (featurised items -> content embeddings, dynamic batch) with a parity check,
    and ``content_encoder.json`` (the featurisers of :func:`engine.fields.slot_specs`, the input widths, the output
    dim), so a batch job featurises new items exactly as training did (``engine score --new-items``)."""
    import json
    from pathlib import Path

    from .export import export_onnx, parity_check
    from .files import atomic_open

    graph, names = field_inputs_graph(_ContentGraph(content).eval(), content.encoder.slots)
    rows = torch.arange(min(content.num_items, 64))
    example = tuple(getattr(content, n)[rows].cpu() for n in names)
    path = Path(directory) / "content_encoder.onnx"
    export_onnx(graph, example, path, names, ["content"], dynamic_batch=names)
    probe = torch.randperm(content.num_items)[: min(content.num_items, 257)]
    report = parity_check(graph, path, tuple(getattr(content, n)[probe].cpu() for n in names), names)
    spec = {"inputs": list(names), "dim": int(content.head.out_features), "slots": slot_specs(content.encoder.encoders, content.encoder.slots),
            "widths": {"ids": int(content.ids.shape[1]), "values": int(content.values.shape[1])}}
    with atomic_open(Path(directory) / "content_encoder.json", "w") as fh:
        json.dump(spec, fh, indent=2)
    return {"path": str(path), "inputs": {n: f"{'int64' if n == 'ids' else 'float32'}[batch, width]" for n in names},
            "outputs": {"content": "float32[batch, dim]"}, **report}
