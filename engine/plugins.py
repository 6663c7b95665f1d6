"""The single plugin manager: built-ins, then entry points of group ``engine.plugins``, loaded lazily, once.

Environment switches:

* ``ENGINE_LOAD_PLUGINS=a,b`` loads only those distributions' entry points (or entry-point names); set and empty
  loads none. Built-ins always load: they are the core.
* ``ENGINE_TRACE_PLUGINS=1`` prints each hook call and its result to stderr.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import os
import sys
from dataclasses import dataclass
from typing import Any, Iterator

import pluggy

from . import hookspecs
from .errors import PluginError
from .registry import Registry

#: Built-in plugin modules; they register through the same hooks as third-party ones.
DEFAULT_PLUGINS: tuple[str, ...] = ("engine.data.sources", "engine.data.synthetic")

ENTRY_POINT_GROUP = "engine.plugins"

HOOK_KINDS = {
    "register_encoders": "encoder",
    "register_objectives": "objective",
    "register_augmenters": "augmenter",
    "register_data_sources": "data_source",
    "register_tasks": "task",
}


@dataclass(frozen=True)
class PluginInfo:
    name: str
    distribution: str | None
    version: str | None
    builtin: bool


pm = pluggy.PluginManager("engine")
pm.add_hookspecs(hookspecs)

_loaded = False
_info: dict[str, PluginInfo] = {}  # plugin name (as registered with pm) -> where it came from
_registry: Registry | None = None


def _trace() -> None:
    def before(hook_name, hook_impls, kwargs):
        print(f"engine: hook {hook_name} -> {[i.plugin_name for i in hook_impls]}", file=sys.stderr)

    def after(outcome, hook_name, hook_impls, kwargs):
        print(f"engine: hook {hook_name} returned {outcome.get_result()!r}", file=sys.stderr)

    pm.add_hookcall_monitoring(before, after)


def load_plugins() -> None:
    """Register built-ins and (unless switched off) entry-point plugins. Idempotent."""
    global _loaded
    if _loaded:
        return
    if os.environ.get("ENGINE_TRACE_PLUGINS"):
        _trace()
    _load()
    _loaded = True  # only once everything loaded: after a PluginError the next call tries again and fails again


def _load() -> None:
    for modname in DEFAULT_PLUGINS:
        mod = importlib.import_module(modname)
        if pm.get_plugin(modname) is None:
            pm.register(mod, name=modname)
        _info[modname] = PluginInfo(modname, "engine", _version("engine"), builtin=True)

    wanted_env = os.environ.get("ENGINE_LOAD_PLUGINS")
    wanted = None if wanted_env is None else {w.strip() for w in wanted_env.split(",") if w.strip()}
    if wanted is not None and not wanted:
        return
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist else None
        if wanted is not None and ep.name not in wanted and dist not in wanted:
            continue
        if pm.get_plugin(ep.name) is not None:
            continue
        try:
            mod = ep.load()
        except Exception as exc:  # a broken plugin must say so, not crash with a traceback
            raise PluginError(
                f"plugin {ep.name!r} ({dist}) failed to load: {exc}. "
                "Start with ENGINE_LOAD_PLUGINS= (empty) to load none, or name the ones to load."
            ) from exc
        pm.register(mod, name=ep.name)
        _info[ep.name] = PluginInfo(ep.name, dist, ep.dist.version if ep.dist else None, builtin=False)
    try:
        pm.check_pending()  # a hookimpl whose name matches no hookspec (a typo) is an error, not ignored
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"{exc}; hooks are: {', '.join(sorted(HOOK_KINDS) + ['register_commands'])}") from None


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        from . import __version__

        return __version__ if dist == "engine" else None


def plugin_info(name: str) -> PluginInfo:
    return _info.get(name, PluginInfo(name, None, None, builtin=False))


def get_registry() -> Registry:
    """The registry built from every registered plugin's hooks (cached until plugins change)."""
    global _registry
    load_plugins()
    if _registry is None:
        registry = Registry()
        for hook_name, kind in HOOK_KINDS.items():
            hook = getattr(pm.hook, hook_name)
            for impl in hook.get_hookimpls():
                plugin_name = impl.plugin_name
                if os.environ.get("ENGINE_TRACE_PLUGINS"):  # called per plugin (to record who registered what)
                    print(f"engine: hook {hook_name} -> {plugin_name}", file=sys.stderr)

                def register(cls, _kind=kind, _plugin=plugin_name):
                    registry.add(_kind, cls, _plugin)

                impl.function(register=register)
        _registry = registry
    return _registry


def reset_registry() -> None:
    """Forget the cached registry; the next :func:`get_registry` rebuilds it from the hooks."""
    global _registry
    _registry = None


@contextlib.contextmanager
def plugin(obj: Any, name: str | None = None) -> Iterator[str]:
    """Register ``obj`` as a plugin for the duration of a ``with`` block (used by tests and notebooks)."""
    load_plugins()
    name = pm.register(obj, name=name)
    _info[name] = PluginInfo(name, None, None, builtin=False)
    reset_registry()
    try:
        yield name
    finally:
        pm.unregister(name=name)
        _info.pop(name, None)
        reset_registry()
