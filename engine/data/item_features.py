"""Item side information: a feature table joined to the interaction data's items by id.

Formats (chosen by file name):

* RecBole atomic ``.item`` (tab separated, header ``name:type``): ``token`` fields default to ``categorical``,
  ``token_seq`` to ``multi_categorical``, ``float`` to ``numeric`` (``float_seq`` fields are skipped unless named);
  the id field is ``item_id``.
* S3Rec ``*_item2attributes.json`` (``{item_id: [attribute id, ...]}``): one ``multi_categorical`` field,
  ``attributes``.
* parquet / CSV / TSV: the id column is ``item`` unless ``id_field`` says otherwise; string columns default to
  ``text``, numeric ones to ``numeric``.

``fields`` in YAML names the fields to use and their modality (``text``, ``categorical``, ``multi_categorical``,
``numeric``, ``date``, ``image``: a path to an image file, relative to the table's folder), overriding the
defaults. Without ``path``, the table is looked for beside the interactions
(``data.path``): ``<stem>.item`` next to ``<stem>.inter[.gz]``, ``<stem>_item2attributes.json`` next to
``<stem>.txt[.gz]``.

Joining (documented handling, counted in :attr:`ItemFeatures.summary`): rows whose id is not an item of the
interactions are skipped; items without a row have every field missing (a normal case: the field encoders treat a
missing value as absent); a duplicated id is an error; a ``numeric`` field in which no present value is a number is
an error (a wrong type).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
from pydantic import Field

from ..components import ComponentConfig
from ..errors import DataError
from ..fields import MODALITIES
from .readers import read_text

__all__ = ["ItemFeaturesConfig", "ItemFeatures", "read_item_table", "find_item_table", "item_ids_of",
           "image_paths", "load_item_features"]

_RECBOLE_TYPES = {"token": "categorical", "token_seq": "multi_categorical", "float": "numeric"}


class ItemFeaturesConfig(ComponentConfig):
    """``data.item_features``: where the item feature table is and which of its fields to use."""

    path: str | None = Field(None, description="the feature table; default: found beside data.path")
    id_field: str | None = Field(None, description="the id column (default: item_id for .item files, else item)")
    fields: dict[str, str] | None = Field(
        None, description="field -> modality (text, categorical, multi_categorical, numeric, date, image); default: "
        "every field with the modality of its type")


@dataclass
class ItemFeatures:
    """Feature values per internal item: ``columns[field][i]`` for item ``i`` (``None`` when missing)."""

    path: str
    fields: dict[str, str]
    columns: dict[str, list[str | None]]
    has_row: np.ndarray  #: bool [num_items]: the table has a row for the item
    num_unknown_rows: int = 0  #: rows skipped because their id is not an item of the interactions
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def has_content(self) -> np.ndarray:
        """bool ``[num_items]``: the item has at least one present feature value."""
        out = np.zeros(self.num_items, dtype=bool)
        for values in self.columns.values():
            out |= np.fromiter((v is not None for v in values), dtype=bool, count=self.num_items)
        return out

    @property
    def num_items(self) -> int:
        return int(self.has_row.size)

    def summary(self) -> dict[str, object]:
        return {"item_features.path": self.path, "item_features.fields": ",".join(self.fields),
                "item_features.items_with_row": int(self.has_row.sum()),
                "item_features.items_with_content": int(self.has_content.sum()),
                "item_features.items_without_row": int((~self.has_row).sum()),
                "item_features.unknown_rows_skipped": self.num_unknown_rows}


def find_item_table(data_path: str | Path) -> Path:
    """The feature table beside an interaction file (see the module docstring)."""
    p = Path(data_path)
    directory, name = (p, "") if p.is_dir() else (p.parent, p.name)
    stem = name
    for suffix in (".gz", ".inter", ".txt", ".csv", ".tsv", ".parquet"):
        stem = stem[: -len(suffix)] if stem.endswith(suffix) else stem
    candidates = [directory / f"{stem}.item", directory / f"{stem}_item2attributes.json"] if stem else []
    if p.is_dir():
        candidates += sorted(directory.glob("*.item")) + sorted(directory.glob("*_item2attributes.json"))
    for c in candidates:
        if c.is_file():
            return c
    tried = ", ".join(str(c) for c in candidates) or f"*.item or *_item2attributes.json in {directory}"
    raise DataError(f"data.item_features: no feature table found beside {data_path} (tried {tried}); set "
                    "data.item_features.path")


def _recbole_item(path: Path, id_field: str | None) -> tuple[str, pl.DataFrame, dict[str, str]]:
    lines = read_text(path).splitlines()
    if not lines:
        raise DataError(f"{path}: the file is empty")
    header = lines[0].split("\t")
    names, types = [], {}
    for col in header:
        name, sep, ftype = col.partition(":")
        if not sep or not ftype:
            raise DataError(f"{path}: line 1: header field {col!r} is not of the form name:type (e.g. item_id:token)")
        names.append(name)
        types[name] = ftype
    rows = [line.split("\t") for line in lines[1:] if line.strip()]
    for n, r in enumerate(rows, start=2):
        if len(r) != len(names):
            raise DataError(f"{path}: line {n}: {len(r)} fields, the header has {len(names)}")
    df = pl.DataFrame({c: [r[j] if r[j] != "" else None for r in rows] for j, c in enumerate(names)},
                      schema={c: pl.String for c in names})
    key = id_field or "item_id"
    defaults = {c: _RECBOLE_TYPES[t] for c, t in types.items() if c != key and t in _RECBOLE_TYPES}
    return key, df, defaults


def _item2attributes(path: Path) -> tuple[str, pl.DataFrame, dict[str, str]]:
    try:
        raw = json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    if not isinstance(raw, dict) or any(not isinstance(v, list) for v in raw.values()):
        raise DataError(f"{path}: expected an object {{item_id: [attribute, ...]}}")
    ids = list(raw)
    attrs = [" ".join(str(a) for a in raw[i]) or None for i in ids]
    return "item", pl.DataFrame({"item": ids, "attributes": attrs}, schema={"item": pl.String,
                                                                            "attributes": pl.String}), \
        {"attributes": "multi_categorical"}


def _table(path: Path, id_field: str | None) -> tuple[str, pl.DataFrame, dict[str, str]]:
    name = path.name.lower()
    try:
        if name.endswith(".parquet"):
            df = pl.read_parquet(path)
        else:
            sep = "\t" if ".tsv" in name else ","
            df = pl.read_csv(path, separator=sep, infer_schema_length=10000)
    except (pl.exceptions.PolarsError, OSError) as e:
        raise DataError(f"{path}: cannot read the table ({e})") from None
    key = id_field or "item"
    defaults = {c: ("numeric" if df.schema[c].is_numeric() else "text") for c in df.columns if c != key}
    return key, df, defaults


def read_item_table(path: str | Path, id_field: str | None = None) -> tuple[str, pl.DataFrame, dict[str, str]]:
    """``(id column, table as read, default modality per field)``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such item feature file")
    name = path.name.lower()
    if name.endswith(".item") or name.endswith(".item.gz"):
        return _recbole_item(path, id_field)
    if name.endswith(".json") or name.endswith(".json.gz"):
        return _item2attributes(path)
    return _table(path, id_field)


def image_paths(values: list[str | None], directory: Path) -> list[str | None]:
    """An ``image`` field's values with relative paths made absolute against ``directory`` (the feature table's
    folder), so the image encoder reads them wherever the process runs."""
    return [v if v is None or Path(v).is_absolute() else str(directory / v) for v in values]


def item_ids_of(df: pl.DataFrame, key: str, where: str) -> pl.Series:
    """The id column ``key`` of a feature table as strings. Raises DataError on empty or duplicated ids."""
    ids = df[key].cast(pl.String)
    if ids.null_count():
        raise DataError(f"{where}: {ids.null_count()} row(s) without an id in column {key!r}")
    dup = ids.filter(ids.is_duplicated()).unique().sort()
    if dup.len():
        raise DataError(f"{where}: duplicated item id(s) in column {key!r}: {', '.join(dup.head(5).to_list())}"
                        f"{' ...' if dup.len() > 5 else ''} ({dup.len()} in all)")
    return ids


def _check_numeric(df: pl.DataFrame, col: str, where: str) -> None:
    s = df[col].drop_nulls()
    if s.len() == 0 or s.dtype.is_numeric():
        return
    as_num = s.cast(pl.String).str.extract(r"([-+]?\d*\.?\d+)", 1)
    if as_num.null_count() == s.len():
        raise DataError(f"{where}: field {col!r} is declared numeric but none of its {s.len()} values is a number "
                        f"(e.g. {s[0]!r}); declare it text or categorical")


def load_item_features(cfg: ItemFeaturesConfig, data_path: str | None, item_ids: pl.Series | None,
                       num_items: int) -> ItemFeatures:
    """Read the feature table and align it with the internal items ``0..num_items-1``.

    Args:
        cfg: ``data.item_features``.
        data_path: ``data.path``, where the table is looked for when ``cfg.path`` is not set.
        item_ids: original id of each internal item (``None``: the ids are already ``0..num_items-1``).
        num_items: size of the item space.
    """
    path = Path(cfg.path) if cfg.path else find_item_table(data_path or ".")
    key, df, defaults = read_item_table(path, cfg.id_field)
    where = f"{path}"
    if key not in df.columns:
        raise DataError(f"{where}: no id column {key!r} (columns: {', '.join(df.columns)}); set "
                        "data.item_features.id_field")
    fields = dict(cfg.fields) if cfg.fields else defaults
    if not fields:
        raise DataError(f"{where}: no usable feature field; name them in data.item_features.fields")
    for f, modality in fields.items():
        if modality not in MODALITIES:
            raise DataError(f"data.item_features.fields.{f}: unknown modality {modality!r}; expected one of "
                            f"{', '.join(MODALITIES)}")
        if f not in df.columns or f == key:
            raise DataError(f"{where}: missing field {f!r} named in data.item_features.fields (fields: "
                            f"{', '.join(c for c in df.columns if c != key)})")
        if modality == "numeric":
            _check_numeric(df, f, where)
    ids = item_ids_of(df, key, where)
    internal = [str(i) for i in (range(num_items) if item_ids is None else item_ids.to_list())]
    index = {orig: i for i, orig in enumerate(internal)}
    rows = np.array([index.get(i, -1) for i in ids.to_list()], dtype=np.int64)
    known = rows >= 0
    columns: dict[str, list[str | None]] = {}
    for f in fields:
        values: list[str | None] = [None] * num_items
        col = df[f].cast(pl.String).to_list()
        for r, v in zip(rows[known], np.asarray(col, dtype=object)[known]):
            values[r] = None if v is None or str(v).strip() == "" else str(v)
        columns[f] = image_paths(values, path.parent) if fields[f] == "image" else values
    if df.height and not known.any():
        raise DataError(f"{where}: none of the {df.height} row ids in column {key!r} is an item of the interactions "
                        f"(e.g. {ids[0]!r}; items look like {internal[min(1, len(internal) - 1)]!r}); check "
                        "data.item_features.id_field")
    has_row = np.zeros(num_items, dtype=bool)
    has_row[rows[known]] = True
    return ItemFeatures(str(path), fields, columns, has_row, int((~known).sum()))
