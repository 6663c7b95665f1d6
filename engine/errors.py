"""Errors a user can act on. The CLI prints their message on one line and exits non-zero, with no traceback."""

from __future__ import annotations


class EngineError(Exception):
    """Base class of every error caused by input (config, data, files) rather than by a bug."""

    exit_code = 2


class ConfigError(EngineError):
    """A pipeline file or ``--set`` override is malformed or invalid."""


class DataError(EngineError):
    """A data file is missing, malformed, or does not meet the declared schema."""


class CheckpointError(EngineError):
    """A checkpoint is missing, corrupt, or belongs to another pipeline."""


class PluginError(EngineError):
    """A plugin failed to load or registered something invalid."""


class UnknownComponentError(EngineError, KeyError):
    """A component name that no loaded plugin registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""
