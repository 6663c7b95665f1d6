"""Readers for standard interaction formats, on polars.

Every reader returns a frame with columns ``user`` and ``item`` and, where the format has them, ``rating``
(``Float64``) and ``timestamp`` (``Int64``). Malformed input raises :class:`engine.errors.DataError` with a one-line
message that names the file, the line or column, and what was expected.

Text is split on ``'\\n'`` only (never ``str.splitlines``, which also breaks on U+2028 and friends); a trailing
``'\\r'`` (CRLF files) and trailing spaces are tolerated.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
from pathlib import Path

import polars as pl

from ..errors import DataError

__all__ = [
    "read_text",
    "read_lightgcn_txt",
    "read_interaction_table",
    "read_recbole_atomic",
    "find_recbole_inter",
    "sha256_file",
]

_TOKEN = r"[^ \t\r]+"


def sha256_file(path: str | Path) -> str:
    """The hex sha256 of a file's bytes (as stored on disk, so of the compressed bytes for ``.gz``)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when the name ends in ``.gz`` or the bytes start with gzip's magic number;
    DataError when missing or corrupt."""
    if not path.is_file():
        where = "is a directory, expected a file" if path.is_dir() else "not found"
        raise DataError(f"{path}: {where}")
    raw = path.read_bytes()
    if path.name.endswith(".gz") or raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataError(f"{path}: not a valid gzip file ({exc})") from None
    return raw


def read_text(path: str | Path) -> str:
    """A text file's content, plain or gzip, as UTF-8; :class:`DataError` naming the file (and the line of a bad
    byte) when it is missing, corrupt or not UTF-8."""
    path = Path(path)
    raw = _read_bytes(path)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line}: expected UTF-8 text ({exc.reason} at byte {exc.start})") from None


def read_lightgcn_txt(path: str | Path) -> pl.DataFrame:
    """Read a LightGCN-format file: one line per user, ``user item item ...``, space separated.

    Args:
        path: a plain or gzip (``.gz``) text file. A line with only a user id (no items) is allowed and yields no
            rows; blank lines are skipped.

    Returns:
        A frame with columns ``user`` and ``item`` (``Int64``), one row per interaction, in file order.

    Raises:
        DataError: the file is missing, or a token is not an integer (the message names the file, the line number,
            the column and the token).
    """
    path = Path(path)
    text = read_text(path)
    lines = pl.DataFrame({"line": text.split("\n")}).with_row_index("lineno", offset=1)
    long = (
        lines.select(pl.col("lineno"), pl.col("line").str.extract_all(_TOKEN).alias("tok"))
        .explode("tok")
        .drop_nulls("tok")
        .with_columns(pl.col("tok").cast(pl.Int64, strict=False).alias("val"))
    )
    bad = long.filter(pl.col("val").is_null())
    if bad.height:
        lineno, token = bad.row(0)[:2]
        line = lines["line"][lineno - 1]
        col = next(m.start() + 1 for m in re.finditer(_TOKEN, line) if m.group() == token)
        raise DataError(f"{path}: line {lineno}, column {col}: expected an integer id, got {token!r}")
    first = pl.col("lineno").is_first_distinct()
    return (
        long.with_columns(pl.when(first).then(pl.col("val")).forward_fill().alias("user"), first.alias("_first"))
        .filter(~pl.col("_first"))
        .select(pl.col("user"), pl.col("val").alias("item"))
    )


def _table_kind(path: Path) -> str:
    name = path.name.lower()
    kinds = {".parquet": "parquet", ".csv": "csv", ".csv.gz": "csv", ".tsv": "tsv", ".tsv.gz": "tsv",
             ".inter": "tsv", ".inter.gz": "tsv"}  # RecBole's atomic .inter files are tab-separated with a header
    for suffix, kind in kinds.items():
        if name.endswith(suffix):
            return kind
    raise DataError(f"{path}: unknown table format; expected a name ending in .csv, .csv.gz, .tsv, .tsv.gz, "
                    ".inter, .inter.gz or .parquet")


def _read_csv(path: Path, separator: str, **kwargs) -> pl.DataFrame:
    raw = _read_bytes(path)
    try:
        return pl.read_csv(io.BytesIO(raw), separator=separator, **kwargs)
    except (pl.exceptions.PolarsError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: could not parse as {separator!r}-separated text: {first}") from None


def _standardise(
    df: pl.DataFrame, path: Path, columns: dict[str, str | None], kind: str = "column"
) -> pl.DataFrame:
    """Select ``{source column: standard name}``, cast rating/timestamp, reject null ids."""
    missing = [src for src in columns.values() if src is not None and src not in df.columns]
    if missing:
        raise DataError(
            f"{path}: missing {kind} {', '.join(map(repr, missing))}; available: {', '.join(df.columns) or '(none)'}"
        )
    out = df.select([pl.col(src).alias(std) for std, src in columns.items() if src is not None])
    for std in ("user", "item"):
        nulls = out[std].null_count()
        if nulls:
            raise DataError(
                f"{path}: {kind} {columns[std]!r} ({std}) has {nulls} empty value(s); expected an id on every row"
            )
    if "rating" in out.columns:
        out = out.with_columns(_cast(out["rating"], pl.Float64, path, columns["rating"], "a number"))
    if "timestamp" in out.columns:
        ts = out["timestamp"]
        if ts.dtype in (pl.Date, pl.Datetime) or isinstance(ts.dtype, pl.Datetime):
            ts = ts.dt.epoch("s")
        elif ts.dtype == pl.String:
            ts = _cast(ts, pl.Float64, path, columns["timestamp"], "a number (seconds)")
        out = out.with_columns(_cast(ts, pl.Int64, path, columns["timestamp"], "an integer timestamp"))
    return out


def _cast(s: pl.Series, dtype: pl.DataType, path: Path, col: str | None, expected: str) -> pl.Series:
    cast = s.cast(dtype, strict=False)
    bad = cast.is_null() & s.is_not_null()
    if bad.any():
        row = int(bad.arg_max())
        raise DataError(f"{path}: column {col!r}, row {row + 1}: expected {expected}, got {s[row]!r}")
    return cast


def read_interaction_table(
    path: str | Path,
    user_col: str = "user",
    item_col: str = "item",
    rating_col: str | None = None,
    timestamp_col: str | None = None,
    separator: str = ",",
) -> pl.DataFrame:
    """Read an interaction table from parquet or delimited text (chosen by the file name's suffix).

    Args:
        path: ``.parquet``, ``.csv``, ``.csv.gz``, ``.tsv`` or ``.tsv.gz``; text files need a header row.
        user_col, item_col: the columns holding the user and item ids (strings or integers, kept as read).
        rating_col, timestamp_col: optional columns, cast to ``Float64`` / ``Int64`` (dates become epoch seconds).
        separator: field separator of text files; a ``.tsv`` name with the default ``","`` reads tab-separated.

    Returns:
        A frame with columns ``user``, ``item`` and, when asked for, ``rating`` and ``timestamp``.

    Raises:
        DataError: missing file, unknown suffix, a missing column (the message lists those available), an empty id,
            or a rating/timestamp that is not a number.
    """
    path = Path(path)
    kind = _table_kind(path)
    if kind == "parquet":
        if not path.is_file():
            raise DataError(f"{path}: not found")
        try:
            df = pl.read_parquet(path)
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise DataError(f"{path}: could not read parquet: {str(exc).strip().splitlines()[0]}") from None
    else:
        sep = "\t" if kind == "tsv" and separator == "," else separator
        df = _read_csv(path, sep, infer_schema_length=None)
    columns = {"user": user_col, "item": item_col, "rating": rating_col, "timestamp": timestamp_col}
    return _standardise(df, path, columns)


def find_recbole_inter(path: str | Path) -> Path:
    """``path`` itself, or the one ``*.inter`` / ``*.inter.gz`` file in the directory ``path`` (else DataError)."""
    path = Path(path)
    if not path.is_dir():
        return path
    found = sorted(p for p in path.iterdir() if p.name.endswith((".inter", ".inter.gz")))
    if len(found) != 1:
        what = "no" if not found else f"{len(found)}"
        listing = ", ".join(p.name for p in sorted(path.iterdir())) or "(empty)"
        raise DataError(f"{path}: expected exactly one *.inter or *.inter.gz file, found {what}; files: {listing}")
    return found[0]


def read_recbole_atomic(path: str | Path) -> pl.DataFrame:
    """Read a RecBole atomic ``.inter`` file (tab separated, header ``name:type``), plain or gzip.

    ``user_id``, ``item_id``, ``rating`` and ``timestamp`` become ``user``, ``item``, ``rating`` (``Float64``) and
    ``timestamp`` (``Int64``); other fields are dropped. Ids are ``token`` fields: they are read as text and become
    ``Int64`` when every id is an integer (so integer ids sort numerically when they are mapped later).

    Args:
        path: a ``.inter`` / ``.inter.gz`` file, or a directory holding exactly one.

    Raises:
        DataError: missing file, no or several ``.inter`` files in the directory, a header field without ``:type``,
            missing ``user_id`` / ``item_id``, or values that do not parse.
    """
    path = find_recbole_inter(path)
    df = _read_csv(path, "\t", infer_schema=False, quote_char=None)
    renames = {}
    for col in df.columns:
        name, sep, ftype = col.partition(":")
        if not sep or not ftype:
            raise DataError(f"{path}: line 1: header field {col!r} is not of the form name:type (e.g. user_id:token)")
        renames[col] = name
    df = df.rename(renames)
    out = _standardise(
        df,
        path,
        {
            "user": "user_id",
            "item": "item_id",
            "rating": "rating" if "rating" in df.columns else None,
            "timestamp": "timestamp" if "timestamp" in df.columns else None,
        },
        kind="field",
    )
    for std in ("user", "item"):
        as_int = out[std].cast(pl.Int64, strict=False)
        if as_int.null_count() == 0:
            out = out.with_columns(as_int.alias(std))
    return out
