"""Errors of serving that a user can act on (one line, exit code 2, like every :class:`engine.errors.EngineError`)."""

from __future__ import annotations

from engine.errors import EngineError

__all__ = ["ModelError", "JobError"]


class ModelError(EngineError):
    """``--model`` is not an engine export, or an MLflow run without one."""


class JobError(EngineError):
    """The output directory holds another job, or is locked by a running one."""
