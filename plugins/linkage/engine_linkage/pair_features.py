"""The pair classifier's weight-free features, as one block: TF-IDF cosines (``model.rerank.tfidf``,
:mod:`engine_linkage.tfidf`) then typed spans (``model.rerank.spans``, :mod:`engine_linkage.spans`).

Training computes them over the two tables; an export stores :meth:`PairFeatures.state` (the fitted vocabularies
and idf, the fields) beside the right table's raw values, and serving rebuilds the same block with
:meth:`PairFeatures.from_state` and :meth:`PairFeatures.with_left` for each batch of new records.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from .spans import SpanPairFeatures
from .tfidf import TfidfPairFeatures

__all__ = ["PairFeatures"]

_KINDS = {"tfidf": TfidfPairFeatures, "spans": SpanPairFeatures}


class PairFeatures:
    """Named parts (``"tfidf"``, ``"spans"``), each ``__call__(lrows, rrows) -> float32 [B, F_part]``, concatenated
    in order: ``float32 [B, F]``."""

    def __init__(self, parts: Mapping[str, object]) -> None:
        unknown = sorted(set(parts) - set(_KINDS))
        if unknown:
            raise ValueError(f"PairFeatures: unknown part(s) {unknown}; expected {sorted(_KINDS)}")
        self.parts = dict(parts)

    @property
    def names(self) -> list[str]:
        return [n for part in self.parts.values() for n in part.names]

    @property
    def width(self) -> int:
        return len(self.names)

    def __call__(self, lrows, rrows) -> np.ndarray:
        n = np.asarray(lrows).size
        cols = [part(lrows, rrows) for part in self.parts.values()]
        return np.concatenate(cols, 1).astype(np.float32) if cols else np.zeros((n, 0), np.float32)

    def with_left(self, left: Mapping[str, Sequence[str | None]]) -> "PairFeatures":
        """The same features with new left records ``{field: values}`` against this right table."""
        return PairFeatures({k: part.with_left(left) for k, part in self.parts.items()})

    def state(self) -> dict:
        """JSON-ready: each part's state (fitted vocabularies and idf, fields), in order."""
        return {"parts": [{"kind": k, **part.state()} for k, part in self.parts.items()], "names": self.names}

    @classmethod
    def from_state(cls, state: Mapping, table: Mapping[str, Sequence[str | None]]) -> "PairFeatures":
        """The features of :meth:`state` over the right ``table`` (``{field: values}``); then :meth:`with_left`."""
        parts = {}
        for entry in state["parts"]:
            kind = entry["kind"]
            if kind not in _KINDS:
                raise ValueError(f"pair features: unknown part {kind!r}; this version knows {sorted(_KINDS)}")
            parts[kind] = _KINDS[kind].from_state(entry, table)
        out = cls(parts)
        if out.names != list(state["names"]):
            raise ValueError(f"pair features: rebuilt {out.names}, the export names {list(state['names'])}")
        return out
