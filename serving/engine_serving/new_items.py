"""Items added to an exported recommender without retraining: ``engine score --new-items FILE``.

A graph or sequential model trained with ``model.content`` exports ``content_encoder.onnx`` and
``content_encoder.json`` (:func:`engine.content.export_content_encoder`). An item nobody has interacted with is
ranked by its content view, as the model ranks its held-out cold items in evaluation: its score for a user is the
inner product of the user's (or sequence's) vector with the item's content embedding. So a feature table of new
items (the same formats and fields as ``data.item_features``: parquet, CSV/TSV, RecBole ``.item``, S3Rec
``item2attributes.json``) is featurised as in training, embedded by the ONNX content encoder, and the vectors are
appended to the catalogue as extra score columns; top-k then ranks them with the rest.

Handling: a row whose id is already in the catalogue is skipped (the model's own vector stays; counted); a field of
the model missing from the table is an error; a missing value is normal (the field is absent, as in training); a
duplicated or empty id is an error. With ``item_graph`` the model adds warm neighbours' embeddings to its cold items'
content view; new items get the content embedding alone. New items can be recommended but not read in a history
(the sequence encoder has no embedding for them).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from engine.errors import DataError

from .errors import ModelError
from .featurize import SlotFeaturizer, run_encoder

__all__ = ["ContentEncoder", "NewItems", "read_new_items"]

log = logging.getLogger("engine.serving")


class ContentEncoder:
    """An export's item content encoder: raw feature values -> content embeddings ``float32 [n, dim]``."""

    def __init__(self, directory: str | Path, prefer_gpu: bool = True, threads: int | None = None) -> None:
        from .model import make_session

        directory = Path(directory)
        spec_path, onnx_path = directory / "content_encoder.json", directory / "content_encoder.onnx"
        if not spec_path.is_file() or not onnx_path.is_file():
            raise ModelError(f"{directory}: no item content encoder (content_encoder.onnx / .json); new items need "
                             "a model trained with model.content (and data.item_features), exported by this version "
                             "of engine")
        try:
            spec = json.loads(spec_path.read_text(encoding="utf-8"))
            self.inputs: list[str] = list(spec["inputs"])
            self.dim = int(spec["dim"])
            self.featurize = SlotFeaturizer(spec["slots"], spec["widths"], directory)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"{spec_path}: unreadable or from an older engine ({exc!r}); export the model again") \
                from None
        self.session, self.provider = make_session(onnx_path, prefer_gpu, threads)

    @property
    def fields(self) -> list[str]:
        return self.featurize.fields

    @property
    def image_fields(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s["field"] for s in self.featurize.slots if s.get("modality") == "image"))

    def __call__(self, columns: dict[str, list[str | None]]) -> np.ndarray:
        ids, values = self.featurize(columns)
        return run_encoder(self.session, self.inputs, ids, values, self.dim)


def read_new_items(path: str | Path, fields: list[str], id_column: str | None = None, images: tuple[str, ...] = ()) \
        -> tuple[pl.Series, dict[str, list[str | None]]]:
    """``(ids as strings, {field: values})`` of a feature table, values read as training reads them (strings; empty
    or null -> ``None``; the ``images`` fields' relative paths against the table's folder). Raises DataError on a
    missing field, empty or duplicated ids."""
    from engine.data.item_features import image_paths, item_ids_of, read_item_table

    key, df, _ = read_item_table(path, id_column)
    if key not in df.columns:
        raise DataError(f"{path}: no id column {key!r} (columns: {', '.join(df.columns)}); name it with "
                        "--new-items-id")
    missing = [f for f in fields if f not in df.columns]
    if missing:
        raise DataError(f"{path}: missing field(s) {', '.join(map(repr, missing))} of the model's content encoder "
                        f"(the table has {', '.join(c for c in df.columns if c != key)}); a column of nulls is fine "
                        "where an item has no such value")
    ids = item_ids_of(df, key, str(path))
    columns = {f: [None if v is None or v.strip() == "" else v for v in df[f].cast(pl.String).to_list()]
               for f in fields}
    for f in images:
        columns[f] = image_paths(columns[f], Path(path).parent)
    return ids, columns


class NewItems:
    """New items read, embedded and checked against a catalogue: ``ids`` (in the catalogue's id type), ``vectors``
    ``float32 [n, dim]``, ``skipped`` (rows whose id the catalogue already has)."""

    def __init__(self, path: str | Path, directory: str | Path, catalogue: pl.Series, dim: int,
                 id_column: str | None = None, prefer_gpu: bool = True, threads: int | None = None) -> None:
        encoder = ContentEncoder(directory, prefer_gpu, threads)
        if encoder.dim != dim:
            raise ModelError(f"{directory}: the content encoder gives {encoder.dim}-d vectors, the model scores "
                             f"{dim}-d ones")
        ids, columns = read_new_items(path, encoder.fields, id_column, encoder.image_fields)
        try:
            typed = ids.cast(catalogue.dtype, strict=True)
        except Exception:  # noqa: BLE001 - polars raises several types
            raise DataError(f"{path}: item ids like {ids[0]!r} are not of the model's item id type "
                            f"({catalogue.dtype})") from None
        known = typed.is_in(catalogue.drop_nulls().implode()).to_numpy() if typed.len() else np.zeros(0, bool)
        keep = ~known
        self.skipped = int(known.sum())
        self.ids: pl.Series = typed.filter(pl.Series(keep)).rename("item")
        kept = {f: [v for v, k in zip(vals, keep) if k] for f, vals in columns.items()}
        self.vectors = encoder(kept).astype(np.float32) if self.ids.len() else np.zeros((0, dim), np.float32)
        if not np.isfinite(self.vectors).all():
            raise ModelError(f"{directory}: the content encoder gave non-finite vectors for {path}")
        self.fingerprint: dict[str, Any] = {"path": str(Path(path).resolve()), "bytes": Path(path).stat().st_size,
                                            "mtime_ns": Path(path).stat().st_mtime_ns}
        log.info("new items from %s: %d added, %d already in the catalogue (skipped)", path, self.ids.len(),
                 self.skipped)
