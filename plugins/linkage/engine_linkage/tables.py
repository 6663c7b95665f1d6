"""Reading record tables and labelled pairs for the linkage sources: CSV / parquet as strings, the checks every
table gets (columns, ids present and unique, non-empty), pairs resolved against the tables, and image paths made
absolute. Bad input raises :class:`engine.errors.DataError` naming the file, the column and what was expected."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from engine.data.item_features import image_paths
from engine.errors import DataError

from .records import LinkageData, PairSet, RecordTable
from .schema import Inferred, infer_fields

__all__ = ["resolve", "read_table", "require_columns", "make_table", "read_pairs", "pairs_from_frame",
           "infer_table_fields", "finish"]


def resolve(directory: Path, stem: str) -> Path | None:
    """``directory/stem`` or the same name gzip-compressed, when it exists."""
    for name in (stem, f"{stem}.gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def read_table(path: str | Path) -> pl.DataFrame:
    """A CSV (``.csv`` / ``.csv.gz``) or parquet file as strings; header names and cells stripped, '' -> null."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {'is a directory, expected a file' if path.is_dir() else 'not found'}")
    try:
        if path.suffix == ".parquet":
            df = pl.read_parquet(path)
            df = df.with_columns(pl.all().cast(pl.String))
        else:
            df = pl.read_csv(path, infer_schema=False, truncate_ragged_lines=False)
    except Exception as exc:  # polars raises several types for malformed files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: cannot be read as a table ({first})") from None
    df = df.rename({c: c.strip() for c in df.columns})
    df = df.with_columns(pl.col(c).str.strip_chars() for c in df.columns)
    df = df.with_columns(pl.when(pl.col(c) == "").then(None).otherwise(pl.col(c)).alias(c) for c in df.columns)
    return df


def require_columns(df: pl.DataFrame, columns: list[str], path: Path | str) -> None:
    for c in columns:
        if c not in df.columns:
            raise DataError(f"{path}: missing column {c!r} (columns: {', '.join(df.columns)})")


def make_table(df: pl.DataFrame, path: Path | str, id_col: str, fields: list[str],
               rename: dict[str, str] | None = None) -> RecordTable:
    """Check ``df`` (non-empty, ids present and unique, every field a column) and turn it into a :class:`RecordTable`."""
    rename = rename or {}
    require_columns(df, [id_col, *[rename.get(f, f) for f in fields]], path)
    if df.height == 0:
        raise DataError(f"{path}: empty table (no record)")
    ids = df[id_col]
    if ids.null_count():
        row = int(ids.is_null().arg_true()[0]) + 2
        raise DataError(f"{path}: column {id_col!r}: missing id on line {row}; every record needs an id")
    dup = ids.is_duplicated()
    if dup.any():
        value = ids.filter(dup)[0]
        raise DataError(f"{path}: column {id_col!r}: duplicate id {value!r} ({int(dup.sum())} rows share an id); "
                        "ids must be unique")
    columns = {f: df[rename.get(f, f)].to_list() for f in fields}
    return RecordTable(str(path), ids.to_list(), columns)


def infer_table_fields(tables: list[RecordTable | None], where: str) -> Inferred:
    """The schema inferred (:mod:`engine_linkage.schema`) from the columns of ``tables`` (their values together;
    ``None``, a missing right table, is skipped); the tables then keep only the inferred fields' columns."""
    present = [t for t in tables if t is not None]
    names = list(present[0].columns)
    inferred = infer_fields({c: [v for t in present for v in t.columns[c]] for c in names}, where)
    for t in present:
        t.columns = {f: t.columns[f] for f in inferred.fields}
    return inferred


def read_pairs(path: Path, left: RecordTable, right: RecordTable) -> PairSet:
    """Labelled pairs ``left_id, right_id, label`` resolved against the tables."""
    df = read_table(path)
    require_columns(df, ["left_id", "right_id", "label"], path)
    return pairs_from_frame(df, path, left, right)


def pairs_from_frame(df: pl.DataFrame, path: Path | str, left: RecordTable, right: RecordTable) -> PairSet:
    bad = df.filter(~pl.col("label").is_in(["0", "1"]))
    if bad.height:
        raise DataError(f"{path}: column 'label': expected 0 or 1, got {bad['label'][0]!r} "
                        f"({bad.height} rows)")
    out = []
    for col, table in (("left_id", left), ("right_id", right)):
        values = df[col].to_list()
        idx = [table.index.get(v, -1) for v in values]
        missing = [v for v, i in zip(values, idx) if i < 0]
        if missing:
            raise DataError(f"{path}: column {col!r}: id {missing[0]!r} is not in {Path(table.source).name} "
                            f"({len(missing)} rows refer to unknown ids)")
        out.append(np.asarray(idx, dtype=np.int64))
    return PairSet(out[0], out[1], df["label"].cast(pl.Int8).to_numpy().astype(np.int64))


def finish(data: LinkageData, directory: Path) -> LinkageData:
    """Check ``data`` and make the paths of its ``image`` fields absolute: a relative path is relative to the dataset
    folder ``directory`` (so the image encoder reads them wherever the process runs)."""
    images = [f for f, modality in data.fields.items() if modality == "image"]
    for table in (data.left, data.right):
        for f in images if table is not None else ():
            table.columns[f] = image_paths(table.columns[f], directory)
    data.check()
    return data
