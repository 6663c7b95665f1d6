"""The container every interaction data source returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl


@dataclass
class InteractionData:
    """Interactions split into train / valid / test, with dense 0-based ids.

    Every frame has columns ``user`` and ``item`` (``Int64``, in ``[0, num_users)`` and ``[0, num_items)``), and
    optionally ``rating`` (``Float64``) and ``timestamp`` (``Int64``).

    Attributes:
        train, valid, test: the splits; ``valid`` is ``None`` when the protocol has no validation set.
        num_users, num_items: sizes of the id spaces (ids seen in any split).
        user_ids, item_ids: internal index -> original id (``None`` when the original ids were already dense).
        checksums: ``file path -> sha256`` of every file read, for tracking.
    """

    train: pl.DataFrame
    valid: pl.DataFrame | None
    test: pl.DataFrame
    num_users: int
    num_items: int
    user_ids: pl.Series | None = None
    item_ids: pl.Series | None = None
    checksums: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, object]:
        out: dict[str, object] = {
            "num_users": self.num_users,
            "num_items": self.num_items,
            "num_train": self.train.height,
            "num_valid": 0 if self.valid is None else self.valid.height,
            "num_test": self.test.height,
        }
        for path, digest in self.checksums.items():
            out[f"sha256.{path.rsplit('/', 1)[-1]}"] = digest
        return out
