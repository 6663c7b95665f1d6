"""Built-in interaction data sources, registered through the ``register_data_sources`` hook like any plugin's.

* ``lightgcn_txt``: a directory of LightGCN-format files with a fixed split (ids already dense).
* ``interactions``: a parquet / CSV table, filtered and split here.
* ``recbole_atomic``: a RecBole ``.inter`` file, with the same filtering and splitting options.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import polars as pl
from pydantic import Field, field_validator, model_validator

from ..components import Component, ComponentConfig
from ..errors import DataError
from ..hookspecs import hookimpl
from .interactions import InteractionData
from .readers import (
    find_recbole_inter,
    read_interaction_table,
    read_lightgcn_txt,
    read_recbole_atomic,
    sha256_file,
)
from .splits import check_ratios, split_leave_one_out, split_random, split_temporal
from .transforms import check_dense_ids, dedupe, filter_rating, kcore, map_ids

__all__ = ["LightGCNTxtSource", "InteractionsSource", "RecBoleAtomicSource", "SplitConfig", "register_data_sources"]


def _check_nonempty(data: InteractionData, how: str, hint: str) -> InteractionData:
    for split in ("train", "test"):
        if getattr(data, split).height == 0:
            raise DataError(f"empty {split} split after {how}; check {hint}")
    return data


class LightGCNTxtSource(Component):
    """LightGCN-format files (``user item item ...`` per line) with a fixed train / [valid] / test split."""

    name: ClassVar[str] = "lightgcn_txt"

    class Config(ComponentConfig):
        path: str = Field(description="directory holding the split files")
        train: str = Field("train.txt", description="training file name (found with or without .gz)")
        test: str = Field("test.txt", description="test file name (found with or without .gz)")
        valid: str | None = Field(None, description="validation file name in the same format; none by default")
        valid_from_train: bool = Field(
            False, description="remove the validation interactions from train (when valid is a subset of train)"
        )

        @model_validator(mode="after")
        def _valid_from_train_needs_valid(self) -> "LightGCNTxtSource.Config":
            if self.valid_from_train and self.valid is None:
                raise ValueError("valid_from_train is true but no valid file is set")
            return self

    def __init__(
        self,
        path: str,
        train: str = "train.txt",
        test: str = "test.txt",
        valid: str | None = None,
        valid_from_train: bool = False,
    ) -> None:
        self.path = path
        self.train = train
        self.test = test
        self.valid = valid
        self.valid_from_train = valid_from_train

    def _resolve(self, name: str) -> Path:
        root = Path(self.path)
        if not root.is_dir():
            raise DataError(f"{root}: not a directory (data.path of source {self.name!r} must be a directory)")
        base = name[:-3] if name.endswith(".gz") else name
        for candidate in (name, base, base + ".gz"):
            if (root / candidate).is_file():
                return root / candidate
        files = ", ".join(sorted(p.name for p in root.iterdir())) or "(empty)"
        raise DataError(f"{root}: no file {base!r} or {base + '.gz'!r}; files there: {files}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(path={self.path!r}, valid={self.valid!r})"

    def load(self) -> InteractionData:
        """Read the split files; ids must be dense 0-based integers (sizes are the largest id + 1)."""
        names = {"train": self.train, "valid": self.valid, "test": self.test}
        files = {split: self._resolve(name) for split, name in names.items() if name is not None}
        frames: dict[str, pl.DataFrame | None] = {split: read_lightgcn_txt(p) for split, p in files.items()}
        frames.setdefault("valid", None)
        if self.valid_from_train and frames["valid"] is not None:
            frames["train"] = frames["train"].join(frames["valid"], on=["user", "item"], how="anti")
        if frames["valid"] is not None and frames["valid"].height == 0:
            raise DataError(f"empty valid split after reading {files['valid']}; check the file, or leave valid unset")
        num_users, num_items = check_dense_ids(frames)
        data = InteractionData(
            train=frames["train"],
            valid=frames["valid"],
            test=frames["test"],
            num_users=num_users,
            num_items=num_items,
            checksums={str(p): sha256_file(p) for p in files.values()},
        )
        hint = "that the file has interactions" + (" not all in valid" if self.valid_from_train else "")
        return _check_nonempty(data, f"reading {self.path}", hint)


class SplitConfig(ComponentConfig):
    """How to split interactions per user into train / [valid] / test."""

    strategy: Literal["random", "temporal", "leave_one_out"] = Field(
        "random", description="random: shuffled per user; temporal: by timestamp per user; leave_one_out: last two"
    )
    ratios: list[float] = Field(
        default_factory=lambda: [0.8, 0.1, 0.1],
        description="train, [valid,] test shares per user (2 or 3 positive numbers summing to 1); unused by "
        "leave_one_out",
    )
    seed: int = Field(2020, description="shuffle seed of the random strategy")

    @field_validator("ratios")
    @classmethod
    def _ratios(cls, value: list[float]) -> list[float]:
        return list(check_ratios(value))


class _TableOptions(ComponentConfig):
    """Options shared by the sources that filter and split a single interaction table."""

    path: str = Field(description="the interaction file")
    rating_threshold: float | None = Field(None, description="keep rows with rating >= this (implicit feedback)")
    user_k: int = Field(0, ge=0, description="k-core: drop users with fewer interactions (0 = off)")
    item_k: int = Field(0, ge=0, description="k-core: drop items with fewer interactions (0 = off)")
    split: SplitConfig = Field(default_factory=SplitConfig, description="per-user split protocol")


class InteractionsSource(Component):
    """An interaction table (parquet / CSV): read -> dedupe -> rating threshold -> k-core -> map ids -> split."""

    name: ClassVar[str] = "interactions"

    class Config(_TableOptions):
        path: str = Field(description="a .parquet, .csv, .csv.gz, .tsv or .tsv.gz file")
        user_col: str = Field("user", description="column of user ids")
        item_col: str = Field("item", description="column of item ids")
        rating_col: str | None = Field(None, description="column of ratings, if any")
        timestamp_col: str | None = Field(None, description="column of timestamps (needed by temporal splits)")
        separator: str = Field(",", min_length=1, max_length=1, description="field separator of text files")

    def __init__(
        self,
        path: str,
        user_col: str = "user",
        item_col: str = "item",
        rating_col: str | None = None,
        timestamp_col: str | None = None,
        separator: str = ",",
        rating_threshold: float | None = None,
        user_k: int = 0,
        item_k: int = 0,
        split: SplitConfig | dict | None = None,
    ) -> None:
        self.path = path
        self.user_col = user_col
        self.item_col = item_col
        self.rating_col = rating_col
        self.timestamp_col = timestamp_col
        self.separator = separator
        self.rating_threshold = rating_threshold
        self.user_k = user_k
        self.item_k = item_k
        self.split = split if isinstance(split, SplitConfig) else SplitConfig.model_validate(split or {})

    def __repr__(self) -> str:
        return f"{type(self).__name__}(path={self.path!r}, split={self.split.strategy!r})"

    def read(self) -> tuple[pl.DataFrame, list[Path]]:
        """The raw table and the files it came from."""
        path = Path(self.path)
        df = read_interaction_table(
            path, self.user_col, self.item_col, self.rating_col, self.timestamp_col, self.separator
        )
        return df, [path]

    def load(self) -> InteractionData:
        """Run the pipeline; ids become dense (``user_ids`` / ``item_ids`` map them back)."""
        df, files = self.read()
        if df.height == 0:
            raise DataError(f"{self.path}: no interactions in the file")
        df = dedupe(df)
        if self.rating_threshold is not None:
            df = filter_rating(df, self.rating_threshold)
            if df.height == 0:
                raise DataError(f"{self.path}: no interactions with rating >= {self.rating_threshold}")
        df = kcore(df, self.user_k, self.item_k)
        if df.height == 0:
            raise DataError(f"{self.path}: no interactions left after {self.user_k}/{self.item_k}-core filtering")
        mapped, user_ids, item_ids = map_ids({"all": df})
        df = mapped["all"]
        s = self.split
        if s.strategy == "random":
            train, valid, test = split_random(df, s.ratios, s.seed)
        elif s.strategy == "temporal":
            train, valid, test = split_temporal(df, s.ratios)
        else:
            train, valid, test = split_leave_one_out(df)
        data = InteractionData(
            train=train,
            valid=valid,
            test=test,
            num_users=user_ids.len(),
            num_items=item_ids.len(),
            user_ids=user_ids,
            item_ids=item_ids,
            checksums={str(p): sha256_file(p) for p in files},
        )
        hint = (
            "that users have enough interactions (leave_one_out needs >= 3 per user)"
            if s.strategy == "leave_one_out"
            else f"split.ratios {s.ratios} and that users have enough interactions (>= 2 for a test row)"
        )
        return _check_nonempty(data, f"the {s.strategy} split of {self.path}", hint)


class RecBoleAtomicSource(InteractionsSource):
    """A RecBole atomic ``.inter`` file (or a directory with one), filtered and split like ``interactions``."""

    name: ClassVar[str] = "recbole_atomic"

    class Config(_TableOptions):
        path: str = Field(description="a .inter / .inter.gz file, or a directory holding exactly one")

    def __init__(
        self,
        path: str,
        rating_threshold: float | None = None,
        user_k: int = 0,
        item_k: int = 0,
        split: SplitConfig | dict | None = None,
    ) -> None:
        super().__init__(path, rating_threshold=rating_threshold, user_k=user_k, item_k=item_k, split=split)

    def read(self) -> tuple[pl.DataFrame, list[Path]]:
        path = find_recbole_inter(self.path)
        return read_recbole_atomic(path), [path]


@hookimpl
def register_data_sources(register):
    """Register the built-in data sources."""
    register(LightGCNTxtSource)
    register(InteractionsSource)
    register(RecBoleAtomicSource)
