"""Typed spans of records compared across a pair: product codes, numbers and numeric fields (``model.rerank.spans``).

Ditto (Li et al., VLDB 2021) marks spans of known types (product ids, numbers, units) in its serialisation so the
transformer attends to them. For a pair classifier over weight-free features the same knowledge is a handful of
comparisons, computed here without training:

* a record's text is its fields joined by a space (:func:`engine_linkage.tfidf.record_texts`), lower-cased;
* its **tokens** are runs of letters and digits, joined through single ``-``, ``/`` or ``.`` (``"kdl-40v4100"``,
  ``"33-1/3"``, ``"802.11g"``); a token **squashed** drops those separators (``"kdl40v4100"``);
* a **code** is a squashed token of at least :data:`MIN_CODE` characters with at least one letter and one digit
  (``"pslx350h"``, ``"am53bk"``; not ``"10/100"``, not ``"s-video"``);
* its **numbers** are the maximal digit runs with an optional decimal part (``"2-1/2"`` -> ``{"2", "1", "2"}`` as a
  set ``{"1", "2"}``); its **squashed text** keeps only letters and digits (``"fs105 na"`` -> ``"fs105na"``).

Features of a pair (left record ``a``, right record ``b``), in this order (:attr:`SpanPairFeatures.names`):

``span_code_shared``       1 when ``a`` and ``b`` share a code, else 0
``span_code_left_in_right`` share of ``a``'s codes found inside ``b``'s squashed text (``"fs105"`` in ``"...fs105na"``)
``span_code_right_in_left`` the same from ``b`` to ``a``
``span_code_prefix``       max over code pairs of (common prefix length) / (longer length): ``"fs105"`` vs
                           ``"fs105na"`` -> 5/7
``span_code_both``, ``span_code_one``   both / exactly one of the records have a code
``span_number_jaccard``    Jaccard similarity of the number sets (0 when both are empty)
``span_number_both``       both records have a number
then the same eight of each field of ``per_field`` alone, named ``span_<field>_code_shared`` and so on (a code
moved from the model-number field into the title still counts in the record's features; the field's own say
whether the model numbers themselves agree), and per numeric field ``f``: ``span_<f>_reldiff`` = :math:`|x_a - x_b| / \\max(|x_a|, |x_b|)` (0 when both are 0) and
``span_<f>_both`` (both values parse as numbers; the difference is 0 otherwise)

Every feature is in [0, 1]; none depends on trained weights, so they generalise from few labelled pairs.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from .tfidf import record_texts

__all__ = ["MIN_CODE", "RecordSpans", "SpanPairFeatures", "record_spans", "codes", "numbers", "squash"]

#: the shortest code (squashed), in characters
MIN_CODE = 4
_TOKEN = re.compile(r"[a-z0-9]+(?:[-/.][a-z0-9]+)*")
_SEPARATORS = re.compile(r"[-/.]")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_NOT_ALNUM = re.compile(r"[^a-z0-9]")


def codes(text: str) -> frozenset[str]:
    """The codes of ``text`` (see the module docstring)."""
    out = set()
    for token in _TOKEN.findall(text.lower()):
        s = _SEPARATORS.sub("", token)
        if len(s) >= MIN_CODE and not s.isdigit() and not s.isalpha():
            out.add(s)
    return frozenset(out)


def numbers(text: str) -> frozenset[str]:
    """The numbers of ``text`` as strings (``"2.5"``, ``"100"``)."""
    return frozenset(_NUMBER.findall(text))


def squash(text: str) -> str:
    """``text`` lower-cased with everything but letters and digits removed."""
    return _NOT_ALNUM.sub("", text.lower())


def _number(value) -> float:
    try:
        x = float(str(value).replace(",", "").strip())
    except (TypeError, ValueError):
        return math.nan
    return x if math.isfinite(x) else math.nan


@dataclass(frozen=True)
class RecordSpans:
    """The typed spans of one table's records (one entry per record, in row order)."""

    codes: list[frozenset[str]]
    numbers: list[frozenset[str]]
    squashed: list[str]
    numeric: dict[str, np.ndarray]  # field -> float64 [N] (NaN where the value is not a number)


def record_spans(columns: Mapping[str, Sequence[str | None]], fields: Sequence[str],
                 numeric: Sequence[str] = ()) -> RecordSpans:
    """The spans of the records ``columns`` (``{field: values}``): codes, numbers and squashed text of ``fields``
    joined, and the values of the ``numeric`` fields."""
    texts = [t.lower() for t in record_texts(columns, fields)]
    return RecordSpans([codes(t) for t in texts], [numbers(t) for t in texts], [squash(t) for t in texts],
                       {f: np.array([_number(v) for v in columns[f]], dtype=np.float64) for f in numeric})


#: the features of one scope (the whole record, or one field), in order
_NAMES = ["code_shared", "code_left_in_right", "code_right_in_left", "code_prefix", "code_both", "code_one",
          "number_jaccard", "number_both"]


def _prefix(a: str, b: str) -> float:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n / max(len(a), len(b))


def _pair(ca: frozenset[str], cb: frozenset[str], sa: str, sb: str, na: frozenset[str],
          nb: frozenset[str]) -> tuple[float, ...]:
    both = bool(ca) and bool(cb)
    return (float(bool(ca & cb)),
            sum(c in sb for c in ca) / len(ca) if ca else 0.0,
            sum(c in sa for c in cb) / len(cb) if cb else 0.0,
            max(_prefix(a, b) for a in ca for b in cb) if both else 0.0,
            float(both), float(bool(ca) != bool(cb)),
            len(na & nb) / len(na | nb) if na or nb else 0.0,
            float(bool(na) and bool(nb)))


class SpanPairFeatures:
    """Typed-span features of pairs of records, ``float32 [B, F]`` (see the module docstring).

    Args:
        left, right: ``{field: values}`` of the two tables (``right`` None: the left table on both sides).
        fields: the fields joined into a record's text.
        numeric: the numeric fields compared by relative difference.
        per_field: fields whose text also gets the eight span features of its own.
    """

    def __init__(self, left: Mapping[str, Sequence[str | None]], right: Mapping[str, Sequence[str | None]] | None,
                 fields: Sequence[str], numeric: Sequence[str] = (), per_field: Sequence[str] = ()) -> None:
        self.fields, self.numeric, self.per_field = list(fields), list(numeric), list(per_field)
        self.left = self._spans(left)
        self.right = self.left if right is None else self._spans(right)
        self.names = [f"span_{scope}{n}" for scope in ["", *(f"{f}_" for f in self.per_field)] for n in _NAMES]
        for f in self.numeric:
            self.names += [f"span_{f}_reldiff", f"span_{f}_both"]

    def _spans(self, columns) -> list[RecordSpans]:
        """The spans of the whole record (with the numeric fields), then of each ``per_field`` field alone."""
        return [record_spans(columns, self.fields, self.numeric)] + [record_spans(columns, [f])
                                                                     for f in self.per_field]

    @property
    def width(self) -> int:
        return len(self.names)

    def with_left(self, left: Mapping[str, Sequence[str | None]]) -> "SpanPairFeatures":
        """The same features with new left records (``{field: values}``) against this right table: serving."""
        other = object.__new__(SpanPairFeatures)
        other.__dict__.update(self.__dict__)
        other.left = self._spans(left)
        return other

    def state(self) -> dict:
        """What :meth:`from_state` rebuilds the features from (nothing is fitted: the fields)."""
        return {"fields": self.fields, "numeric": self.numeric, "per_field": self.per_field}

    @classmethod
    def from_state(cls, state: Mapping, table: Mapping[str, Sequence[str | None]]) -> "SpanPairFeatures":
        """The features of :meth:`state` over ``table`` on both sides (then :meth:`with_left`: serving)."""
        return cls(table, None, state["fields"], state["numeric"], state.get("per_field", ()))

    def __call__(self, lrows, rrows) -> np.ndarray:
        lrows, rrows = np.asarray(lrows, dtype=np.int64), np.asarray(rrows, dtype=np.int64)
        cols = []
        for a, b in zip(self.left, self.right):
            rows = [_pair(a.codes[i], b.codes[j], a.squashed[i], b.squashed[j], a.numbers[i], b.numbers[j])
                    for i, j in zip(lrows.tolist(), rrows.tolist())]
            cols.append(np.array(rows, dtype=np.float64).reshape(lrows.size, len(_NAMES)))
        a, b = self.left[0], self.right[0]
        for f in self.numeric:
            x, y = a.numeric[f][lrows], b.numeric[f][rrows]
            both = ~(np.isnan(x) | np.isnan(y))
            scale = np.maximum(np.abs(x), np.abs(y))
            with np.errstate(invalid="ignore", divide="ignore"):
                rel = np.where(both & (scale > 0), np.abs(x - y) / np.where(scale > 0, scale, 1.0), 0.0)
            cols += [rel[:, None], both[:, None].astype(np.float64)]
        return np.concatenate(cols, 1).astype(np.float32)
