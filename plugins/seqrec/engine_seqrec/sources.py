"""Data sources of item sequences: the S3Rec text format, and any interaction table with timestamps.

* ``s3rec_txt``: one line per user, ``user item_1 item_2 ...`` in time order, item ids from 1 (the files of S3Rec,
  CL4SRec, ICLRec and DuoRec: ``Beauty.txt``, ``Sports_and_Outdoors.txt``...), plain or gzip.
* ``interaction_sequences``: a parquet / CSV table, deduplicated, k-core filtered, sorted by timestamp per user,
  items renumbered ``1..N``.

Both drop sequences shorter than ``min_length`` (at least 3: a training prefix, a validation and a test target) and
say how many on stderr; the count is logged with the data summary (``data.num_dropped``).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import ClassVar

import numpy as np
import polars as pl
import torch
from pydantic import Field

from engine.components import Component, ComponentConfig
from engine.data.readers import read_text
from engine.data import dedupe, filter_rating, kcore, read_interaction_table, sha256_file
from engine.errors import DataError

from .data import MIN_LENGTH, SequenceData

__all__ = ["S3RecTxtSource", "InteractionSequencesSource", "read_s3rec_txt"]

_INT_LINE = re.compile(r"[ \t]*-?[0-9]+(?:[ \t]+-?[0-9]+)*[ \t]*")
_TOKEN = re.compile(r"[^ \t]+")


def read_s3rec_txt(path: str | Path) -> tuple[list[int], list[list[int]]]:
    """Parse ``user item item ...`` lines into user ids and item lists, in file order.

    Lines are split on ``'\\n'`` only; a trailing ``'\\r'`` (CRLF files), tabs and repeated spaces are tolerated and
    blank lines skipped. A line with a user id and no item gives an empty list.

    Raises:
        DataError: a missing or empty file, a token that is not an integer (naming file, line, column and token), an
            item id ``<= 0`` (ids start at 1; 0 is padding), or a user id on two lines.
    """
    path = Path(path)
    users: list[int] = []
    sequences: list[list[int]] = []
    first_line: dict[int, int] = {}
    for lineno, line in enumerate(read_text(path).split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        if not _INT_LINE.fullmatch(line):
            for match in _TOKEN.finditer(line):
                if not re.fullmatch(r"-?[0-9]+", match.group()):
                    raise DataError(f"{path}: line {lineno}, column {match.start() + 1}: expected an integer id, "
                                    f"got {match.group()!r}")
        ids = [int(t) for t in line.split()]
        user, items = ids[0], ids[1:]
        if items and min(items) <= 0:
            bad = next(i for i in items if i <= 0)
            raise DataError(f"{path}: line {lineno}: item id {bad} is out of range; item ids start at 1 "
                            "(0 is the padding id)")
        if user in first_line:
            raise DataError(f"{path}: line {lineno}: user {user} already has a sequence on line {first_line[user]}; "
                            "expected one line per user")
        first_line[user] = lineno
        users.append(user)
        sequences.append(items)
    if not users:
        raise DataError(f"{path}: no sequences in the file (it is empty or blank)")
    return users, sequences


def _drop_short(lengths: np.ndarray, min_length: int, where: str) -> np.ndarray:
    """Boolean mask of the sequences to keep; reports how many were dropped."""
    keep = lengths >= min_length
    dropped = int((~keep).sum())
    if dropped:
        print(f"engine: seqrec: {where}: dropped {dropped} of {lengths.size} sequences shorter than {min_length} "
              "items", file=sys.stderr)
    if not keep.any():
        raise DataError(f"{where}: no sequence has >= {min_length} items (a training prefix, a validation and a test "
                        "target need at least 3)")
    return keep


class S3RecTxtSource(Component):
    """The S3Rec text format: ``user item_1 item_2 ...`` per line, in time order, item ids from 1.

    Item ids are kept as in the file (``num_items`` is the largest id in the file), user order is file order.
    Sequences shorter than ``min_length`` (including one-item and empty ones) are dropped and counted.
    """

    name: ClassVar[str] = "s3rec_txt"

    class Config(ComponentConfig):
        path: str = Field(description="the sequence FILE (plain or gzip), e.g. seqrec-s3rec/Beauty.txt.gz")
        min_length: int = Field(MIN_LENGTH, ge=MIN_LENGTH, description="drop sequences with fewer items (>= 3)")

    def __init__(self, path: str, min_length: int = MIN_LENGTH) -> None:
        self.path = path
        self.min_length = min_length

    def __repr__(self) -> str:
        return f"{type(self).__name__}(path={self.path!r}, min_length={self.min_length})"

    def load(self) -> SequenceData:
        path = Path(self.path)
        users, sequences = read_s3rec_txt(path)
        lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
        num_items = max((max(s) for s in sequences if s), default=0)
        keep = _drop_short(lengths, self.min_length, str(path))
        kept = [s for s, k in zip(sequences, keep) if k]
        indptr = np.concatenate([[0], np.cumsum(lengths[keep])])
        flat = np.fromiter((i for s in kept for i in s), dtype=np.int64, count=int(indptr[-1]))
        return SequenceData(torch.from_numpy(indptr), torch.from_numpy(flat), num_items,
                            user_ids=np.asarray(users)[keep], checksums={str(path): sha256_file(path)},
                            num_dropped=int((~keep).sum()))


class InteractionSequencesSource(Component):
    """Sequences from an interaction table with timestamps: read -> dedupe -> rating threshold -> k-core -> drop
    short sequences -> sort by time per user -> items renumbered ``1..N``.

    Ties in time keep file order. Users come out sorted by original id, items numbered in sorted order of their
    original ids (``item_ids`` maps back). S3Rec's Amazon files are 5-cores (``user_k: 5, item_k: 5``).
    """

    name: ClassVar[str] = "interaction_sequences"

    class Config(ComponentConfig):
        path: str = Field(description="a .parquet, .csv, .csv.gz, .tsv or .tsv.gz file")
        user_col: str = Field("user", description="column of user ids")
        item_col: str = Field("item", description="column of item ids")
        timestamp_col: str = Field("timestamp", description="column of timestamps (orders each sequence)")
        rating_col: str | None = Field(None, description="column of ratings, if any")
        separator: str = Field(",", min_length=1, max_length=1, description="field separator of text files")
        rating_threshold: float | None = Field(None, description="keep rows with rating >= this")
        dedupe: bool = Field(True, description="keep only the latest of repeated (user, item) rows")
        user_k: int = Field(0, ge=0, description="k-core: drop users with fewer interactions (0 = off)")
        item_k: int = Field(0, ge=0, description="k-core: drop items with fewer interactions (0 = off)")
        min_length: int = Field(MIN_LENGTH, ge=MIN_LENGTH, description="drop sequences with fewer items (>= 3)")

    def __init__(self, path: str, user_col: str = "user", item_col: str = "item", timestamp_col: str = "timestamp",
                 rating_col: str | None = None, separator: str = ",", rating_threshold: float | None = None,
                 dedupe: bool = True, user_k: int = 0, item_k: int = 0, min_length: int = MIN_LENGTH) -> None:
        self.path = path
        self.user_col, self.item_col, self.timestamp_col = user_col, item_col, timestamp_col
        self.rating_col, self.separator = rating_col, separator
        self.rating_threshold, self.dedupe = rating_threshold, dedupe
        self.user_k, self.item_k, self.min_length = user_k, item_k, min_length

    def __repr__(self) -> str:
        return f"{type(self).__name__}(path={self.path!r}, min_length={self.min_length})"

    def load(self) -> SequenceData:
        path = Path(self.path)
        df = read_interaction_table(path, self.user_col, self.item_col, self.rating_col, self.timestamp_col,
                                    self.separator)
        if df.height == 0:
            raise DataError(f"{path}: no interactions in the file")
        if df["timestamp"].null_count():
            raise DataError(f"{path}: column {self.timestamp_col!r} has {df['timestamp'].null_count()} empty "
                            "value(s); every interaction needs a time to be ordered")
        if self.dedupe:
            df = dedupe(df)
        if self.rating_threshold is not None:
            df = filter_rating(df, self.rating_threshold)
        df = kcore(df, self.user_k, self.item_k)
        if df.height == 0:
            raise DataError(f"{path}: no interactions left after the rating threshold and "
                            f"{self.user_k}/{self.item_k}-core filtering")
        df = df.with_row_index("__row").sort(["user", "timestamp", "__row"])
        counts = df.group_by("user", maintain_order=True).len()
        keep = _drop_short(counts["len"].to_numpy(), self.min_length, str(path))
        users = counts["user"].filter(pl.Series(keep))
        df = df.filter(pl.col("user").is_in(users.implode()))
        item_ids = df["item"].unique().sort()
        dense = df["item"].replace_strict(item_ids, pl.Series(range(1, item_ids.len() + 1)), return_dtype=pl.Int64)
        lengths = counts["len"].filter(pl.Series(keep)).to_numpy().astype(np.int64)
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        return SequenceData(torch.from_numpy(indptr), torch.tensor(dense.to_numpy()), item_ids.len(),
                            user_ids=users.to_numpy(), item_ids=item_ids, checksums={str(path): sha256_file(path)},
                            num_dropped=int((~keep).sum()))
