"""Data sources of record linkage: generic tables + labelled pairs, and the benchmark layouts.

* ``record_tables``: a left table, an optional right table (none: deduplication), and ``train`` / ``valid`` /
  ``test`` pair files with columns ``left_id, right_id, label`` (CSV or parquet, plain or gzip).
* ``deepmatcher_csv``: a DeepMatcher / Magellan folder: ``tableA.csv`` / ``tableB.csv`` when present and
  ``{train,valid,test}.csv`` with ``label, left_id, left_<attr>..., right_id, right_<attr>...``. Without the tables,
  the records are rebuilt from the pair files (and blocking is not measured).
* ``ditto_txt``: Ditto's ``{train,valid,test}.txt`` (``COL a VAL v ...<TAB>COL a VAL v ...<TAB>label``). A record
  is identified by its serialisation.
* ``febrl``: FEBRL ``dataset{1,2,3}.csv`` (dedup) or ``dataset4a.csv`` x ``dataset4b.csv`` (linkage) with their
  ``*_true_links.csv``; records are split by entity into train / valid / test (links protocol).

Every value is read as a string; empty cells are missing values (``None``), which encoders handle. Bad input (a
missing file or column, an empty table, a duplicate id, a pair naming an unknown id, a label other than 0/1) raises
:class:`engine.errors.DataError` naming the file, the column and what was expected.

The schema (``fields: {field: modality}``) is used as given; omitted (``null``) or ``auto``, the record_tables,
deepmatcher_csv and ditto_txt sources infer it from the tables (:mod:`engine_linkage.schema`: numeric, short
categorical, text or image per column; id and label columns left out). ``febrl`` reads every column as text unless
told otherwise: its number-like columns (postcode, date_of_birth, soc_sec_id) are codes.

A field of modality ``image`` holds image file paths; a relative path is relative to the dataset folder (``path``)
and is made absolute on reading (:func:`finish`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import numpy as np
import polars as pl
from pydantic import AfterValidator, Field, WrapValidator, model_validator

from engine.components import Component, ComponentConfig
from engine.errors import DataError
from engine.fields import MODALITIES

from engine.data.readers import read_text

from .records import SPLITS, LinkageData, PairSet, RecordTable, parse_fields
from .schema import AUTO, is_auto
from .tables import (finish, infer_table_fields, make_table, pairs_from_frame, read_pairs, read_table, require_columns,
                     resolve)

__all__ = ["RecordTablesSource", "DeepMatcherCsvSource", "DittoTxtSource", "FebrlSource", "read_table",
           "parse_ditto_record", "finish"]


def _known_modality(value: str) -> str:
    if value not in MODALITIES:
        raise ValueError(f"unknown modality {value!r}; expected one of {', '.join(MODALITIES)}")
    return value


Modality = Annotated[str, AfterValidator(_known_modality)]  #: one of engine.fields.MODALITIES
#: ``data.fields`` of the sources that infer a schema: ``{field: modality}``, or ``auto`` / omitted to infer it
def _schema_or_auto(value, handler):
    """``auto`` as it is; any other value validated as ``{field: modality}`` (so an error names the field)."""
    if value == AUTO:
        return AUTO
    if isinstance(value, str):
        raise ValueError(f"expected a mapping {{field: modality}} or {AUTO!r} (got {value!r})")
    return handler(value)


Schema = Annotated[dict[str, Modality] | None, WrapValidator(_schema_or_auto)]
INFERRED = "field -> modality; omitted or auto: inferred from the tables (numeric, short categorical, text, image)"


# -- record_tables ---------------------------------------------------------------------------------------------------


class RecordTablesSource(Component):
    """Generic tables: ``left``, optional ``right`` (dedup without), labelled pair files per split."""

    name: ClassVar[str] = "record_tables"

    class Config(ComponentConfig):
        path: str = Field(description="folder the other file names are relative to")
        left: str = Field("left.csv", description="left table (CSV or parquet)")
        right: str | None = Field("right.csv", description="right table; null: deduplicate the left table")
        id_column: str = Field("id", description="the record id column of both tables")
        train: str = "train.csv"
        valid: str = "valid.csv"
        test: str = "test.csv"
        fields: Schema = Field(None, description=INFERRED)
        full_tables: bool = Field(True, description="the tables are complete: measure blocking on them")

    def __init__(self, path: str, left: str = "left.csv", right: str | None = "right.csv", id_column: str = "id",
                 train: str = "train.csv", valid: str = "valid.csv", test: str = "test.csv",
                 fields: dict[str, str] | str | None = None, full_tables: bool = True) -> None:
        self.path, self.left_name, self.right_name, self.id_column = Path(path), left, right, id_column
        self.split_files = {"train": train, "valid": valid, "test": test}
        self.fields, self.full_tables = fields, full_tables

    def load(self) -> LinkageData:
        if not self.path.is_dir():
            raise DataError(f"{self.path}: data.path must be a folder (not found)")
        lpath = self.path / self.left_name
        ldf = read_table(lpath)
        columns = [c for c in ldf.columns if c != self.id_column]
        auto = is_auto(self.fields)
        fields = dict.fromkeys(columns, AUTO) if auto else parse_fields(self.fields, columns, str(lpath))
        left = make_table(ldf, lpath, self.id_column, list(fields))
        right = rpath = None
        if self.right_name is not None:
            rpath = self.path / self.right_name
            right = make_table(read_table(rpath), rpath, self.id_column, list(fields))
        inferred = None
        if auto:
            inferred = infer_table_fields([left, right], ", ".join(str(p) for p in (lpath, rpath) if p))
            fields = inferred.fields
        pairs = {s: read_pairs(self.path / f, left, right or left) for s, f in self.split_files.items()}
        return finish(LinkageData(left, right, fields, pairs, "pairs", full_tables=self.full_tables,
                                  inferred=inferred), self.path)


# -- deepmatcher_csv -------------------------------------------------------------------------------------------------


class DeepMatcherCsvSource(Component):
    """DeepMatcher / Magellan CSV folder: tableA/tableB (when present) and train/valid/test labelled pairs."""

    name: ClassVar[str] = "deepmatcher_csv"

    class Config(ComponentConfig):
        path: str = Field(description="the dataset folder, e.g. .../em-deepmatcher-csv/Structured/DBLP-ACM")
        fields: Schema = Field(None, description=INFERRED)
        use_tables: bool = Field(True, description="read tableA/tableB when present (blocking is measured on them)")

    def __init__(self, path: str, fields: dict[str, str] | str | None = None, use_tables: bool = True) -> None:
        self.path, self.fields, self.use_tables = Path(path), fields, use_tables

    def load(self) -> LinkageData:
        d = self.path
        if not d.is_dir():
            raise DataError(f"{d}: data.path must be a DeepMatcher dataset folder (not found)")
        files = {}
        for s in SPLITS:
            f = resolve(d, f"{s}.csv")
            if f is None:
                raise DataError(f"{d}: missing {s}.csv (or {s}.csv.gz); expected train, valid and test pair files")
            files[s] = f
        frames = {s: read_table(f) for s, f in files.items()}
        for s, df in frames.items():
            require_columns(df, ["label", "left_id", "right_id"], files[s])
        attrs = [c.removeprefix("left_") for c in frames["train"].columns if c.startswith("left_") and c != "left_id"]
        a, b = resolve(d, "tableA.csv"), resolve(d, "tableB.csv")
        auto = is_auto(self.fields)
        if self.use_tables and a is not None and b is not None:
            adf = read_table(a)
            if auto:  # the attributes of the pair files; make_table checks that both tables have them
                fields = dict.fromkeys(attrs or [c for c in adf.columns if c != "id"], AUTO)
            else:
                fields = parse_fields(self.fields, [c for c in adf.columns if c != "id"], str(a))
            left = make_table(adf, a, "id", list(fields))
            right = make_table(read_table(b), b, "id", list(fields))
            full, where = True, f"{a}, {b.name}"
        else:
            fields = dict.fromkeys(attrs, AUTO) if auto else parse_fields(self.fields, attrs, str(files["train"]))
            left, right = self._tables_from_pairs(frames, files, list(fields))
            full, where = False, f"{d}/{{train,valid,test}} pair files"
        inferred = infer_table_fields([left, right], where) if auto else None
        fields = inferred.fields if inferred else fields
        pairs = {s: pairs_from_frame(frames[s], files[s], left, right) for s in SPLITS}
        return finish(LinkageData(left, right, fields, pairs, "pairs", full_tables=full, inferred=inferred), d)

    @staticmethod
    def _tables_from_pairs(frames, files, fields) -> tuple[RecordTable, RecordTable]:
        tables = []
        for side in ("left", "right"):
            cols = [f"{side}_id", *[f"{side}_{f}" for f in fields]]
            parts = []
            for s in SPLITS:
                require_columns(frames[s], cols, files[s])
                parts.append(frames[s].select(cols))
            df = pl.concat(parts).unique(subset=[f"{side}_id"], keep="first", maintain_order=True)
            tables.append(make_table(df, f"{files['train'].parent}/{side} records of the pair files", f"{side}_id",
                                     fields, rename={f: f"{side}_{f}" for f in fields}))
        return tables[0], tables[1]


# -- ditto_txt -------------------------------------------------------------------------------------------------------

_COL = re.compile(r"(?:^|\s)COL\s+(\S+)\s+VAL(?=\s|$)")


def parse_ditto_record(text: str) -> dict[str, str | None]:
    """``COL a VAL x y COL b VAL z`` -> ``{"a": "x y", "b": "z"}`` (empty values -> None)."""
    marks = list(_COL.finditer(text))
    if not marks:
        raise ValueError("no 'COL <attr> VAL <value>' segment")
    out: dict[str, str | None] = {}
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        value = text[m.end():end].strip()
        out[m.group(1)] = value or None
    return out


class DittoTxtSource(Component):
    """Ditto's serialized pairs (``train.txt`` / ``valid.txt`` / ``test.txt``); records keyed by their text."""

    name: ClassVar[str] = "ditto_txt"

    class Config(ComponentConfig):
        path: str = Field(description="the dataset folder, e.g. .../em-deepmatcher-ditto/Structured/Beer")
        fields: Schema = Field(None, description=INFERRED)

    def __init__(self, path: str, fields: dict[str, str] | str | None = None) -> None:
        self.path, self.fields = Path(path), fields

    def load(self) -> LinkageData:
        d = self.path
        if not d.is_dir():
            raise DataError(f"{d}: data.path must be a Ditto dataset folder (not found)")
        raw: dict[str, list[tuple[dict, dict, str, str, int]]] = {}
        attrs: list[str] = []
        for s in SPLITS:
            f = resolve(d, f"{s}.txt")
            if f is None:
                raise DataError(f"{d}: missing {s}.txt; expected train, valid and test files")
            rows = []
            for lineno, line in enumerate(read_text(f).split("\n"), start=1):
                line = line.removesuffix("\r")
                if not line.strip():
                    continue
                parts = line.split("\t")
                if len(parts) != 3 or parts[2].strip() not in ("0", "1"):
                    raise DataError(f"{f}: line {lineno}: expected 'left<TAB>right<TAB>label' with label 0 or 1")
                recs = []
                for col, text in ((1, parts[0]), (2, parts[1])):
                    try:
                        recs.append(parse_ditto_record(text))
                    except ValueError as exc:
                        raise DataError(f"{f}: line {lineno}, record {col}: {exc}") from None
                for r in recs:
                    attrs.extend(a for a in r if a not in attrs)
                rows.append((recs[0], recs[1], parts[0].strip(), parts[1].strip(), int(parts[2].strip())))
            if not rows:
                raise DataError(f"{f}: empty file (no pair)")
            raw[s] = rows
        auto = is_auto(self.fields)
        fields = dict.fromkeys(attrs, AUTO) if auto else parse_fields(self.fields, attrs, str(d))
        tables, index = [], []
        for side in (0, 1):
            keys: dict[str, int] = {}
            cols: dict[str, list] = {f: [] for f in fields}
            for s in SPLITS:
                for row in raw[s]:
                    key = row[2 + side]
                    if key not in keys:
                        keys[key] = len(keys)
                        for f in fields:
                            cols[f].append(row[side].get(f))
            tables.append(RecordTable(f"{d}/{'left' if side == 0 else 'right'} records",
                                      [f"{'L' if side == 0 else 'R'}{i}" for i in range(len(keys))], cols))
            index.append(keys)
        pairs = {}
        for s in SPLITS:
            rows = raw[s]
            pairs[s] = PairSet(np.array([index[0][r[2]] for r in rows], dtype=np.int64),
                               np.array([index[1][r[3]] for r in rows], dtype=np.int64),
                               np.array([r[4] for r in rows], dtype=np.int64))
        inferred = infer_table_fields(tables, f"{d}/{{train,valid,test}}.txt") if auto else None
        fields = inferred.fields if inferred else fields
        return finish(LinkageData(tables[0], tables[1], fields, pairs, "pairs", full_tables=False,
                                  inferred=inferred), d)


# -- febrl -----------------------------------------------------------------------------------------------------------

_FEBRL_ID = re.compile(r"rec-(\d+)-(?:org|dup-\d+)")


class FebrlSource(Component):
    """FEBRL person records with their true links; records split by entity (links protocol)."""

    name: ClassVar[str] = "febrl"

    class Config(ComponentConfig):
        path: str = Field(description="the febrl folder (dataset*.csv and dataset*_true_links.csv)")
        dataset: Literal["1", "2", "3", "4"] = Field("4", description="1-3: deduplication; 4: dataset4a x dataset4b")
        fields: dict[str, Modality] | None = Field(None, description="field -> modality; default: all text")
        split: tuple[float, float, float] = Field((0.6, 0.2, 0.2), description="train/valid/test share of entities")
        split_seed: int = Field(0, description="seed of the entity split")

        @model_validator(mode="after")
        def _split_sums_to_one(self):
            if abs(sum(self.split) - 1.0) > 1e-6 or min(self.split) <= 0:
                raise ValueError(f"split must be three positive shares summing to 1 (got {list(self.split)})")
            return self

    def __init__(self, path: str, dataset: str = "4", fields: dict[str, str] | None = None,
                 split: tuple[float, float, float] = (0.6, 0.2, 0.2), split_seed: int = 0) -> None:
        self.path, self.dataset, self.fields = Path(path), dataset, fields
        self.split, self.split_seed = tuple(split), split_seed

    def _table(self, name: str, fields: dict[str, str] | None) -> tuple[RecordTable, dict[str, str]]:
        path = self.path / name
        df = read_table(path)
        require_columns(df, ["rec_id"], path)
        fields = parse_fields(fields, [c for c in df.columns if c != "rec_id"], str(path))
        table = make_table(df, path, "rec_id", list(fields))
        entity = []
        for lineno, rid in enumerate(table.ids, start=2):
            m = _FEBRL_ID.fullmatch(rid)
            if m is None:
                raise DataError(f"{path}: line {lineno}: column 'rec_id': expected rec-<entity>-org or "
                                f"rec-<entity>-dup-<k>, got {rid!r}")
            entity.append(int(m.group(1)))
        table.entity = np.asarray(entity, dtype=np.int64)
        return table, fields

    def load(self) -> LinkageData:
        if not self.path.is_dir():
            raise DataError(f"{self.path}: data.path must be the febrl folder (not found)")
        if self.dataset == "4":
            left, fields = self._table("dataset4a.csv", self.fields)
            right, _ = self._table("dataset4b.csv", fields)
            links_path = self.path / "dataset4_true_links.csv"
        else:
            left, fields = self._table(f"dataset{self.dataset}.csv", self.fields)
            right = None
            links_path = self.path / f"dataset{self.dataset}_true_links.csv"
        links = read_table(links_path)
        if len(links.columns) != 2:
            raise DataError(f"{links_path}: expected two id columns (left, right), got {links.columns}")
        rt = right or left
        cols = []
        for col, table in zip(links.columns, (left, rt)):
            values = links[col].to_list()
            idx = np.asarray([table.index.get(v, -1) for v in values], dtype=np.int64)
            if (idx < 0).any():
                bad = values[int(np.flatnonzero(idx < 0)[0])]
                raise DataError(f"{links_path}: column {col!r}: id {bad!r} is not in {Path(table.source).name} "
                                f"({int((idx < 0).sum())} rows refer to unknown ids)")
            cols.append(idx)
        li, ri = cols
        if right is None:  # unordered pairs, no self pair
            li, ri = np.minimum(cols[0], cols[1]), np.maximum(cols[0], cols[1])
            keep = li != ri
            li, ri = li[keep], ri[keep]
            uniq = np.unique(np.stack([li, ri], 1), axis=0)
            li, ri = uniq[:, 0], uniq[:, 1]
        # the entity split
        entities = np.unique(np.concatenate([left.entity, rt.entity]))
        perm = np.random.default_rng(self.split_seed).permutation(entities.shape[0])
        cuts = np.cumsum(np.asarray(self.split) * entities.shape[0]).round().astype(int)
        code_of = np.empty(entities.shape[0], dtype=np.int64)
        code_of[perm[: cuts[0]]], code_of[perm[cuts[0]: cuts[1]]], code_of[perm[cuts[1]:]] = 0, 1, 2
        lcode = code_of[np.searchsorted(entities, left.entity)]
        rcode = code_of[np.searchsorted(entities, rt.entity)]
        record_split = {"left": lcode, "right": rcode}
        cross = lcode[li] != rcode[ri]
        skipped = {"links_across_entities": int(cross.sum())} if cross.any() else {}
        pairs = {}
        for code, s in enumerate(SPLITS):
            keep = (lcode[li] == code) & (rcode[ri] == code)
            pairs[s] = PairSet(li[keep], ri[keep], np.ones(int(keep.sum()), dtype=np.int64))
        data = LinkageData(left, right, fields, pairs, "links", full_tables=True, record_split=record_split,
                           skipped=skipped)
        return finish(data, self.path)


SOURCES = (RecordTablesSource, DeepMatcherCsvSource, DittoTxtSource, FebrlSource)
