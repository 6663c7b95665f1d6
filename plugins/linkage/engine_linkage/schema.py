"""Linkage schema inference: the modality of each column of the record tables, when ``data.fields`` is omitted
(``null``) or ``auto``. An explicit ``{field: modality}`` schema is used as given.

The rule looks at each candidate column over the values of every table together (left and right), missing values
aside (``None``, and the placeholders :data:`PLACEHOLDERS`: ``-``, ``n/a``, ``null``...), and takes the first that
applies:

1. **left out**: a column named ``id`` or ``label``, or ending in ``_id`` (an identifier or the truth, not a field;
   the source's own id column is never a candidate), and a column with no value in any table;
2. ``image``: at least 90% of the values are file names ending in an image extension (``.png``, ``.jpg``,
   ``.jpeg``, ``.gif``, ``.bmp``, ``.webp``, ``.tif``, ``.tiff``);
3. ``numeric``: at least 90% of the values are a number alone (:data:`NUMBER`: an optional currency sign and sign,
   digits with optional thousands separators, a decimal part, an exponent, a trailing ``%``: ``1999``,
   ``$ 12.99``, ``1,299.00``, ``-3.5e2``, ``15%``), **unless** they are integer codes, which are ``text``: every
   number an integer and either one written with a leading zero (``007``) or more than half the values distinct
   (record numbers, phone-like or model codes);
4. ``categorical``: a short value from a small vocabulary: at most 50 distinct values, each seen 5 times on average
   (at least ``5 x distinct`` values), at most 4 words on average;
5. ``text``: the rest, and a column that steps 3 or 4 call ``numeric`` or ``categorical`` when the tables hold fewer
   than :data:`MIN_RECORDS` (1,000) records in all: the ``numeric`` and ``categorical`` encoders are trained from
   scratch per value and learn from a few hundred training pairs more slowly than char n-grams, which read numbers and
   categories as text too (on DeepMatcher's Beer, iTunes-Amazon and Fodors-Zagats, a few hundred records each, they
   cost F1 in BENCHMARKS.md's runs; on DBLP-ACM and Walmart-Amazon, thousands, they do not).

The modalities inferred (``text``, ``categorical``, ``numeric``, ``image``) are all encodable by any linkage model: a
modality that ``model.encoders`` does not name gets its default encoder (``engine.fields.DEFAULT_FIELD_ENCODERS``:
``categorical``, ``numeric``, ``image``), so a pipeline with only a ``text`` encoder runs on any inferred schema.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from engine.errors import DataError

__all__ = ["AUTO", "PLACEHOLDERS", "IMAGE_SHARE", "NUMERIC_SHARE", "CODE_DISTINCT_SHARE", "CATEGORICAL_MAX_DISTINCT",
           "CATEGORICAL_MIN_REPEATS", "CATEGORICAL_MAX_WORDS", "MIN_RECORDS", "NUMBER", "Inferred", "is_auto",
           "left_out_reason", "infer_modality", "infer_fields"]

#: the value of ``data.fields`` that asks for inference (as does leaving it out)
AUTO = "auto"
#: values that stand for a missing one (compared lower-case), not counted as values by the rule
PLACEHOLDERS = frozenset({"-", "--", "?", "n/a", "na", "nan", "null", "none"})
IMAGE_SHARE = 0.9  #: share of values that must be image file names
NUMERIC_SHARE = 0.9  #: share of values that must be a number alone
CODE_DISTINCT_SHARE = 0.5  #: integer columns with more distinct values than this share are codes (text)
CATEGORICAL_MAX_DISTINCT = 50
CATEGORICAL_MIN_REPEATS = 5  #: values per distinct value, on average
CATEGORICAL_MAX_WORDS = 4.0  #: words per value, on average
MIN_RECORDS = 1000  #: fewer records (all tables together) than this: numeric and categorical columns are text

#: a number alone: currency sign, sign, digits (thousands separated or not), decimals, exponent, percent
NUMBER = re.compile(r"^[$€£¥]?\s*[-+]?\s*[$€£¥]?\s*"
                    r"(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?:[eE][-+]?\d+)?\s*%?$")
_INTEGER = re.compile(r"^[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.0+)?$")
_IMAGE = re.compile(r"\.(?:png|jpe?g|gif|bmp|webp|tiff?)$", re.IGNORECASE)


@dataclass(frozen=True)
class Inferred:
    """The inferred schema ``{field: modality}`` (in column order) and the columns left out, with the reason."""

    fields: dict[str, str]
    left_out: dict[str, str]

    def describe(self) -> str:
        """One line: ``title: text, price: numeric (left out: label (a label or id column))``."""
        line = ", ".join(f"{f}: {m}" for f, m in self.fields.items())
        if self.left_out:
            line += " (left out: " + ", ".join(f"{c} ({why})" for c, why in self.left_out.items()) + ")"
        return line


def is_auto(fields: object) -> bool:
    """Whether ``data.fields`` asks for inference: omitted (``None``) or ``auto``."""
    return fields is None or fields == AUTO


def left_out_reason(name: str) -> str | None:
    """Why a column is never a field, by its name alone (an id or label column), else ``None``."""
    low = name.strip().lower()
    if low in ("id", "label") or low.endswith("_id"):
        return "an id or label column"
    return None


def _is_number(value: str) -> bool:
    return NUMBER.match(value) is not None and any(c.isdigit() for c in value)


def infer_modality(values: Sequence[str | None], min_records: int | None = None) -> str | None:
    """The modality of one column (``values``: one per record of every table, ``None`` when missing) by the rule of
    this module (steps 2 to 5; ``min_records``: :data:`MIN_RECORDS` unless given); ``None`` when it has no value."""
    modality = _modality(values)
    small = len(values) < (MIN_RECORDS if min_records is None else min_records)
    return "text" if small and modality in ("numeric", "categorical") else modality


def _modality(values: Sequence[str | None]) -> str | None:
    present = [v.strip() for v in values if v is not None and v.strip() and v.strip().lower() not in PLACEHOLDERS]
    n = len(present)
    if n == 0:
        return None
    if sum(_IMAGE.search(v) is not None for v in present) >= IMAGE_SHARE * n:
        return "image"
    numbers = [v for v in present if _is_number(v)]
    distinct = len(set(present))
    if len(numbers) >= NUMERIC_SHARE * n:
        bare = [v.lstrip("+-") for v in numbers]
        integers = all(_INTEGER.match(v) for v in numbers)
        leading_zero = any(len(v) > 1 and v[0] == "0" and v[1].isdigit() for v in bare)
        if not (integers and (leading_zero or distinct > CODE_DISTINCT_SHARE * n)):
            return "numeric"
        return "text"
    words = sum(len(v.split()) for v in present) / n
    if distinct <= CATEGORICAL_MAX_DISTINCT and n >= CATEGORICAL_MIN_REPEATS * distinct \
            and words <= CATEGORICAL_MAX_WORDS:
        return "categorical"
    return "text"


def infer_fields(columns: Mapping[str, Sequence[str | None]], where: str, min_records: int | None = None) -> Inferred:
    """The schema of ``columns`` (name -> every table's values of that column, concatenated; ``min_records`` as in
    :func:`infer_modality`).

    Raises :class:`engine.errors.DataError` naming ``where`` (the files read) and the columns when no column is left.
    """
    fields: dict[str, str] = {}
    left_out: dict[str, str] = {}
    for name, values in columns.items():
        reason = left_out_reason(name)
        modality = None if reason else infer_modality(values, min_records)
        if reason is None and modality is None:
            reason = "no value"
        if reason:
            left_out[name] = reason
        else:
            fields[name] = modality
    if not fields:
        listed = ", ".join(f"{c} ({why})" for c, why in left_out.items()) or "none besides the id"
        raise DataError(f"{where}: no column usable as a field to infer the schema from (columns: {listed}); add "
                        "columns with values, or name the fields in data.fields")
    return Inferred(fields, left_out)
