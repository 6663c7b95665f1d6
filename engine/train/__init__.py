"""The trainer loop: seeds, devices, AMP, checkpoints + resume, early stopping, progress."""

from .checkpoint import config_fingerprint, load_checkpoint, save_checkpoint
from .trainer import Trainer, TrainResult, resolve_device, seed_everything

__all__ = [
    "Trainer",
    "TrainResult",
    "config_fingerprint",
    "load_checkpoint",
    "resolve_device",
    "save_checkpoint",
    "seed_everything",
]
