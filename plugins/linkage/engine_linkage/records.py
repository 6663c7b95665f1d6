"""What a linkage data source gives the task: record tables, a field schema, labelled pairs per split.

Two protocols:

* ``pairs`` (DeepMatcher / Magellan): each split is a list of labelled pairs (left record, right record, 0/1); the
  test metric classifies exactly the given test pairs. When the full source tables are known (``full_tables``),
  blocking runs over them too and reports pair completeness and reduction ratio.
* ``links`` (FEBRL): the records are split by entity into train / valid / test; a split's pairs are all of its true
  links (label 1). Evaluation blocks within the split's records, classifies the candidates, and counts every true
  link that blocking missed as a false negative.

A dedup task has no right table (``right is None``): pairs then index the left table on both sides.

``fields`` is the schema ``{field: modality}`` as given in ``data.fields``, or as inferred from the tables when it was
omitted or ``auto`` (:mod:`engine_linkage.schema`; ``inferred`` then holds it and the columns left out).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from engine.errors import DataError
from engine.fields import MODALITIES, check_fields

from .schema import Inferred

__all__ = ["MODALITIES", "RecordTable", "PairSet", "LinkageData", "parse_fields"]

SPLITS = ("train", "valid", "test")
parse_fields = check_fields  #: the schema ``{field: modality}`` (see :func:`engine.fields.check_fields`)


@dataclass
class RecordTable:
    """Records of one source: ``ids[i]`` and ``columns[field][i]`` (``None`` when missing)."""

    source: str
    ids: list[str]
    columns: dict[str, list[str | None]]
    entity: np.ndarray | None = None  #: entity code per record, where the truth is known (FEBRL)

    def __post_init__(self) -> None:
        self.index = {r: i for i, r in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)

    def values(self, name: str) -> list[str | None]:
        return self.columns[name]


@dataclass
class PairSet:
    """Labelled pairs: row indices into the left and right tables, labels 0/1."""

    left: np.ndarray
    right: np.ndarray
    label: np.ndarray

    def __len__(self) -> int:
        return int(self.left.shape[0])

    @property
    def num_pos(self) -> int:
        return int(self.label.sum())

    def positives(self) -> "PairSet":
        keep = self.label == 1
        return PairSet(self.left[keep], self.right[keep], self.label[keep])


@dataclass
class LinkageData:
    left: RecordTable
    right: RecordTable | None
    fields: dict[str, str]
    pairs: dict[str, PairSet]
    protocol: Literal["pairs", "links"] = "pairs"
    full_tables: bool = False
    #: links protocol: the split code (0 train, 1 valid, 2 test) of each left / right record
    record_split: dict[str, np.ndarray] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    #: the inference that gave ``fields`` (``data.fields`` omitted or ``auto``); ``None`` for a schema as given
    inferred: Inferred | None = None

    @property
    def dedup(self) -> bool:
        return self.right is None

    @property
    def right_table(self) -> RecordTable:
        return self.left if self.right is None else self.right

    def split_records(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Links protocol: indices of the split's left and right records."""
        code = SPLITS.index(split)
        left = np.flatnonzero(self.record_split["left"] == code)
        right = left if self.dedup else np.flatnonzero(self.record_split["right"] == code)
        return left, right

    def summary(self) -> dict[str, object]:
        out: dict[str, object] = {"protocol": self.protocol, "num_left": len(self.left), "dedup": self.dedup,
                                  "num_right": len(self.right_table), "fields": self.fields,
                                  "full_tables": self.full_tables, "fields_inferred": self.inferred is not None}
        if self.inferred is not None and self.inferred.left_out:
            out["fields_left_out"] = dict(self.inferred.left_out)
        for split, p in self.pairs.items():
            out[f"num_{split}_pairs"] = len(p)
            out[f"num_{split}_pos"] = p.num_pos
        out.update({f"skipped_{k}": v for k, v in self.skipped.items()})
        return out

    def check(self) -> None:
        if self.protocol == "pairs":
            for split in SPLITS:
                if split not in self.pairs or len(self.pairs[split]) == 0:
                    raise DataError(f"{self.left.source}: the {split} split has no labelled pair")
        if len(self.pairs.get("train", PairSet(*(np.zeros(0, np.int64),) * 3)).positives()) < 2:
            raise DataError(f"{self.left.source}: the train split has fewer than 2 matching pairs (label 1); "
                            "contrastive training needs at least 2")
