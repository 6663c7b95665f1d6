"""The record encoder (field encoders + fusion), and the pair classifier that re-ranks candidate pairs.

A record is featurised into two matrices: ``ids int64 [N, W_ids]`` (the fields whose encoder takes ids: hashed
n-grams, categories) and ``values float32 [N, W_values]`` (numbers, pretrained text embeddings), each field a fixed
slice. :class:`RecordEncoder` maps them to unit-norm per-field vectors ``[B, F, D]`` with a presence mask ``[B, F]`` (missing
values are normal), fuses them into one unit-norm record vector ``[B, D]``:

* ``mean``: the mean of the present fields' vectors;
* ``attention``: attention pooling, :math:`\\alpha_f = \\mathrm{softmax}_f(q^\\top \\tanh(W v_f + e_f))` over
  present fields (``e_f`` a learned field embedding);
* ``concat``: the fields' vectors (zeros when absent) concatenated and projected, :math:`W [v_1; \\dots; v_F]`.

:class:`PairClassifier` scores a pair from per-field cosine similarities, presence flags, optional n-gram Jaccard
similarities of the id fields, the record cosine, and optionally :math:`|u - v|`, :math:`u \\odot v` (an MLP, one
logit; the vector features let it memorise small training sets, so they are off by default).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FieldSlot", "RecordEncoder", "PairClassifier", "jaccard"]


@dataclass(frozen=True)
class FieldSlot:
    name: str
    modality: str
    encoder: str  #: key in RecordEncoder.encoders
    kind: Literal["ids", "values"]
    offset: int
    width: int


class RecordEncoder(nn.Module):
    """Field encoders (shared per modality) + fusion -> unit-norm record vectors."""

    def __init__(self, slots: list[FieldSlot], encoders: dict[str, nn.Module], dim: int,
                 fusion: Literal["mean", "attention", "concat"] = "attention") -> None:
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


def jaccard(a: Tensor, b: Tensor) -> Tensor:
    """Jaccard similarity of the id sets of each row (0 padding ignored): ``[B, L1]``, ``[B, L2]`` -> ``[B]``."""
    va, vb = a > 0, b > 0
    inter = ((a.unsqueeze(2) == b.unsqueeze(1)) & va.unsqueeze(2) & vb.unsqueeze(1)).any(2).sum(1)
    union = va.sum(1) + vb.sum(1) - inter
    return inter.float() / union.clamp(min=1).float()


class PairClassifier(nn.Module):
    """An MLP over field similarities of a pair; one logit (match)."""

    def __init__(self, num_fields: int, dim: int, num_jaccard: int = 0, hidden: int = 64,
                 vector_features: bool = False) -> None:
        super().__init__()
        self.num_fields, self.num_jaccard, self.vector_features = num_fields, num_jaccard, vector_features
        width = 3 * num_fields + num_jaccard + 1 + (2 * dim if vector_features else 0)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 1))

    def forward(self, fl: Tensor, ml: Tensor, fr: Tensor, mr: Tensor, u: Tensor, v: Tensor,
                jac: Tensor | None = None) -> Tensor:
        both = (ml & mr).float()
        cos = F.cosine_similarity(fl, fr, dim=-1) * both
        one = (ml ^ mr).float()
        feats = [cos, both, one, (u * v).sum(-1, keepdim=True)]
        if self.vector_features:
            feats += [(u - v).abs(), u * v]
        if jac is not None:
            feats.insert(3, jac)
        return self.mlp(torch.cat(feats, dim=1)).squeeze(-1)
