"""Raw field values -> the ``(ids, values)`` inputs of an exported field encoder, as training featurised them.

An export that encodes fields (a linkage record encoder, an item content encoder) lists its slots as
:func:`engine.fields.slot_specs` wrote them: each slot's field, input kind, offset and width, and its featuriser's
registry name and options. Each featuriser is rebuilt from the registry (so the plugin that registered it, e.g.
``engine-linkage``, must be installed) and only its ``featurize`` is used: the weights are in the ONNX graph. A slot's
features are right-padded with 0 to the slot's width in training, or cut to it (a value with more n-grams than any
training value keeps its first ``width``: the graph's slices are fixed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import ModelError

__all__ = ["SlotFeaturizer", "run_encoder"]


class SlotFeaturizer:
    """The featurisers of an export's slots. ``where`` names the export in errors."""

    def __init__(self, slots: Sequence[dict[str, Any]], widths: dict[str, int], where: str | Path) -> None:
        from engine.plugins import get_registry

        self.slots = list(slots)
        self.widths = {"ids": int(widths.get("ids", 0)), "values": int(widths.get("values", 0))}
        registry = get_registry()
        self.featurizers: dict[str, Any] = {}
        for slot in self.slots:
            key = slot["key"]
            if key in self.featurizers:
                continue
            try:
                entry = registry.get("encoder", slot["name"], where=f"field {slot['field']!r} of {where}")
                self.featurizers[key] = entry.cls.from_config(entry.cls.Config(**slot["options"]), dim=1)
            except Exception as exc:  # noqa: BLE001 - unknown encoder (plugin not installed), options it refuses
                raise ModelError(f"cannot rebuild the featuriser of field {slot['field']!r} "
                                 f"({slot['name']}): {str(exc).splitlines()[0]}") from None

    @property
    def fields(self) -> list[str]:
        """The fields the slots read, in slot order, each once."""
        return list(dict.fromkeys(s["field"] for s in self.slots))

    def __call__(self, columns: dict[str, list[str | None]]) -> tuple[np.ndarray, np.ndarray]:
        """``(ids int64 [n, W_ids], values float32 [n, W_values])`` of ``{field: values}`` (``None`` = missing)."""
        n = len(next(iter(columns.values()))) if columns else 0
        out = {"ids": np.zeros((n, self.widths["ids"]), np.int64),
               "values": np.zeros((n, self.widths["values"]), np.float32)}
        for slot in self.slots:
            feats = np.asarray(self.featurizers[slot["key"]].featurize(columns[slot["field"]]))
            width, kind = slot["width"], slot["input"]
            if kind == "values" and feats.shape[1] != width:
                raise ModelError(f"featuriser of field {slot['field']!r} gives {feats.shape[1]} values per record, "
                                 f"the model takes {width} (another {slot['name']} model than in training?)")
            take = min(width, feats.shape[1])
            out[kind][:, slot["offset"]:slot["offset"] + take] = feats[:, :take]
        return out["ids"], out["values"]


def run_encoder(session, inputs: Sequence[str], ids: np.ndarray, values: np.ndarray, dim: int,
                batch: int = 1024) -> np.ndarray:
    """``float32 [n, dim]``: an ONNX field encoder (graph inputs ``inputs``, a subset of ``ids`` / ``values``) run
    on featurised rows in batches of ``batch``."""
    feeds = {"ids": ids, "values": values}
    parts = [session.run(None, {k: np.ascontiguousarray(feeds[k][s:s + batch]) for k in inputs})[0]
             for s in range(0, ids.shape[0], batch)]
    return np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)
