"""Checkpoints written atomically (temp file + rename), read back with clear errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..files import atomic_open


def config_fingerprint(cfg) -> str:
    """A hash of what defines the model and its data (not the epoch budget or tracking), to refuse a foreign resume."""
    raw = cfg.raw
    keep = {k: raw.get(k) for k in ("task", "seed", "data", "model")}
    train = dict(raw.get("train") or {})
    for k in ("epochs", "patience", "eval_every", "device", "checkpoint_dir", "num_threads"):
        train.pop(k, None)
    keep["train"] = train
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` to ``path`` atomically: a crash mid-write leaves the previous file intact."""
    with atomic_open(path, "wb") as fh:
        torch.save(state, fh)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    remedy: str = "delete it or run without --resume") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # truncated zip, wrong format, ...
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"{path}: corrupt or unreadable checkpoint ({reason}); {remedy}"
        ) from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path}: not an engine checkpoint (no model state); {remedy}")
    return state
