"""The record encoder (field encoders + fusion), and the pair classifier that re-ranks candidate pairs.

The record encoder is :class:`engine.fields.RecordEncoder` (field encoders + fusion; shared with recommendation's
item content), re-exported here.

:class:`PairClassifier` scores a pair from per-field cosine similarities, presence flags, optional n-gram Jaccard
similarities of the id fields, optional weight-free pair features (untrained TF-IDF cosines, typed spans:
:class:`engine_linkage.pair_features.PairFeatures`),
the record cosine, and optionally :math:`|u - v|`, :math:`u \\odot v` (an MLP, one logit; the vector features let it
memorise small training sets, so they are off by default).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.fields import FieldSlot, RecordEncoder

__all__ = ["FieldSlot", "RecordEncoder", "PairClassifier", "PairJaccard", "jaccard"]


def jaccard(a: Tensor, b: Tensor) -> Tensor:
    """Jaccard similarity of the id sets of each row (0 padding ignored): ``[B, L1]``, ``[B, L2]`` -> ``[B]``."""
    va, vb = a > 0, b > 0
    inter = ((a.unsqueeze(2) == b.unsqueeze(1)) & va.unsqueeze(2) & vb.unsqueeze(1)).any(2).sum(1)
    union = va.sum(1) + vb.sum(1) - inter
    return inter.float() / union.clamp(min=1).float()


class PairClassifier(nn.Module):
    """An MLP over field similarities of a pair; one logit (match).

    With ``learned_features=False`` it reads only features that do not depend on the encoder's weights (presence
    flags, Jaccard, TF-IDF): on small training sets the learned similarities of train pairs are near perfect after
    contrastive training (the encoder fitted them), so a classifier trained on them trusts them more than they
    generalise; without them it is a matcher over the untrained similarities, as Magellan's."""

    def __init__(self, num_fields: int, dim: int, num_jaccard: int = 0, hidden: int = 64,
                 vector_features: bool = False, num_pair_features: int = 0, learned_features: bool = True) -> None:
        super().__init__()
        if vector_features and not learned_features:
            raise ValueError("PairClassifier: vector_features are learned features; set learned_features=True")
        self.num_fields, self.num_jaccard, self.vector_features = num_fields, num_jaccard, vector_features
        self.num_pair_features, self.learned_features = num_pair_features, learned_features
        learned = num_fields + 1 if learned_features else 0  # the field cosines and the record cosine
        width = 2 * num_fields + learned + num_jaccard + num_pair_features + (2 * dim if vector_features else 0)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 1))

    def forward(self, fl: Tensor, ml: Tensor, fr: Tensor, mr: Tensor, u: Tensor, v: Tensor,
                jac: Tensor | None = None, pair: Tensor | None = None) -> Tensor:
        """Field vectors ``fl, fr [B, F, D]`` with presence ``ml, mr [B, F]``, record vectors ``u, v [B, D]``,
        Jaccard ``jac [B, num_jaccard]`` and weight-free pair features ``pair [B, num_pair_features]`` (TF-IDF,
        spans) -> logits ``[B]``."""
        both = (ml & mr).float()
        one = (ml ^ mr).float()
        if self.learned_features:
            feats = [F.cosine_similarity(fl, fr, dim=-1) * both, both, one, (u * v).sum(-1, keepdim=True)]
        else:  # only what does not depend on the weights: presence flags, Jaccard, pair features
            feats = [both, one]
        if self.vector_features:
            feats += [(u - v).abs(), u * v]
        at = 3 if self.learned_features else 2
        if pair is not None:
            feats.insert(at, pair)
        if jac is not None:
            feats.insert(at, jac)
        if (pair is None) != (self.num_pair_features == 0):
            raise ValueError(f"PairClassifier: built for {self.num_pair_features} pair features, got "
                             f"{'none' if pair is None else pair.shape[1]}")
        return self.mlp(torch.cat(feats, dim=1)).squeeze(-1)


class PairJaccard:
    """n-gram Jaccard similarity of each id slot of pairs of records, ``float32 [B, F]``; they do not depend on the
    weights, so each pair's row is computed once and cached (keyed by ``left * num_right + right``).

    Args:
        left_ids, right_ids: the featurised id inputs of both tables (``[N, W_ids]``).
        slots: the id slots compared (their ``offset`` and ``width`` in those inputs).
    """

    def __init__(self, left_ids: Tensor, right_ids: Tensor, slots) -> None:
        self.left, self.right, self.slots = left_ids, right_ids, list(slots)
        self.cache: dict[int, np.ndarray] = {}

    def __call__(self, lrows, rrows) -> Tensor:
        lrows, rrows = np.asarray(lrows, dtype=np.int64), np.asarray(rrows, dtype=np.int64)
        keys = (lrows * self.right.shape[0] + rrows).tolist()
        todo = [i for i, k in enumerate(keys) if k not in self.cache]
        for start in range(0, len(todo), 256):  # [256, L, L] comparisons at a time
            sel = todo[start:start + 256]
            a, b = self.left[lrows[sel]], self.right[rrows[sel]]
            rows = torch.stack([jaccard(a[:, s.offset:s.offset + s.width], b[:, s.offset:s.offset + s.width])
                                for s in self.slots], 1).numpy()
            for i, row in zip(sel, rows):
                self.cache[keys[i]] = row
        return torch.from_numpy(np.stack([self.cache[k] for k in keys]))
