"""The plugin manager: hooks, built-ins, entry points and ENGINE_LOAD_PLUGINS; meta-tests on the hook contract."""

import importlib.metadata
import inspect
import pathlib
import re
import sys
from types import SimpleNamespace

import click
import pytest
from click.testing import CliRunner

import engine.plugins as plugins
from engine import hookspecs
from engine.components import Component, ComponentConfig
from engine.errors import PluginError
from engine.hookspecs import hookimpl
from engine.plugins import DEFAULT_PLUGINS, HOOK_KINDS, get_registry, plugin, plugin_info, pm
from engine.registry import KINDS
from engine.task import Task

TESTS = pathlib.Path(__file__).resolve().parents[1]


def hook_specs() -> dict:
    return {name: fn for name, fn in vars(hookspecs).items() if callable(fn) and hasattr(fn, "engine_spec")}


# -- meta-tests ----------------------------------------------------------------------------------------------------


def test_hookspecs_exist():
    assert set(hook_specs()) >= {
        "register_encoders",
        "register_objectives",
        "register_augmenters",
        "register_data_sources",
        "register_tasks",
        "register_commands",
    }
    for name in hook_specs():  # every spec in the module is known to the plugin manager
        assert getattr(pm.hook, name).spec is not None


@pytest.mark.parametrize("hook", sorted(hook_specs()))
def test_plugin_hook_has_a_test(hook):
    texts = "\n".join(p.read_text(encoding="utf-8") for p in TESTS.rglob("test_*.py"))
    assert re.search(rf"def test_{hook}\b", texts), f"no test named test_{hook} under {TESTS}"


@pytest.mark.parametrize("hook", sorted(hook_specs()))
def test_plugin_hook_has_full_docstring(hook):
    fn = hook_specs()[hook]
    doc = inspect.getdoc(fn) or ""
    assert "Called" in doc, f"{hook}: say when it is called"
    assert "\nArgs:\n" in doc and "\nReturns:\n" in doc, f"{hook}: needs Args: and Returns: sections"
    args_section = doc.split("\nArgs:\n", 1)[1].split("\nReturns:\n", 1)[0]
    for arg in inspect.signature(fn).parameters:
        assert re.search(rf"^\s+{arg}:", args_section, re.M), f"{hook}: argument {arg!r} is not documented"
    if fn.engine_spec.get("firstresult"):
        assert "firstresult" in doc or "first" in doc.lower()


def test_every_kind_has_a_registration_hook():
    assert set(HOOK_KINDS.values()) == set(KINDS)
    assert set(HOOK_KINDS) <= set(hook_specs())


def test_hooks_are_grouped_under_banners():
    source = inspect.getsource(hookspecs)
    assert "# Registration" in source and "# Command line" in source


# -- one test per hook, each through an in-memory plugin -----------------------------------------------------------


def _component(kind_base, name, base=Component):
    class Config(ComponentConfig):
        size: int = 1

    return type(f"{name.title()}Component", (base,), {"name": name, "Config": Config, "__doc__": f"The {name} {kind_base}."})


def _registers(hook, kind, base=Component):
    cls = _component(kind, f"mem_{kind}", base)
    impl = hookimpl(lambda register: register(cls))
    impl.__name__ = hook
    with plugin(SimpleNamespace(**{hook: impl}), name=f"mem-{kind}") as name:
        entry = get_registry().get(kind, f"mem_{kind}")
        assert entry.cls is cls and entry.plugin == name == f"mem-{kind}"
        assert entry.summary == f"The mem_{kind} {kind}."
        assert plugin_info(name).builtin is False
    with pytest.raises(KeyError):
        get_registry().get(kind, f"mem_{kind}")


def test_register_encoders():
    _registers("register_encoders", "encoder")


def test_register_objectives():
    _registers("register_objectives", "objective")


def test_register_augmenters():
    _registers("register_augmenters", "augmenter")


def test_register_data_sources():
    _registers("register_data_sources", "data_source")


def test_register_tasks():
    _registers("register_tasks", "task", base=Task)


def test_register_hooks_as_class_methods():
    class Many:
        @hookimpl
        def register_encoders(self, register):
            register(_component("encoder", "a_enc"))
            register(_component("encoder", "b_enc"))

        @hookimpl
        def register_augmenters(self, register):
            register(_component("augmenter", "a_aug"))

    with plugin(Many(), name="many"):
        registry = get_registry()
        assert {"a_enc", "b_enc"} <= set(registry.names("encoder"))
        assert registry.get("augmenter", "a_aug").plugin == "many"


def test_register_commands():
    from engine.cli import cli

    class Commands:
        @hookimpl
        def register_commands(self, cli):
            @cli.command(name="mem-hello")
            @click.argument("who")
            def hello(who):
                """Say hello."""
                click.echo(f"hello {who}")

    try:
        with plugin(Commands(), name="mem-commands"):
            pm.hook.register_commands(cli=cli)
            result = CliRunner().invoke(cli, ["mem-hello", "world"])
            assert result.exit_code == 0, result.output
            assert result.stdout == "hello world\n"
            assert "mem-hello" in CliRunner().invoke(cli, ["--help"]).stdout
    finally:
        cli.commands.pop("mem-hello", None)
    assert "mem-hello" not in cli.commands


def test_register_commands_called_by_main(monkeypatch, capsys):
    from engine.cli import cli, main

    @hookimpl
    def register_commands(cli):
        @cli.command(name="mem-ping")
        def ping():
            """Reply pong."""
            click.echo("pong")

    monkeypatch.setattr(sys, "argv", ["engine", "mem-ping"])
    try:
        with plugin(SimpleNamespace(register_commands=register_commands), name="mem-main"):
            with pytest.raises(SystemExit) as info:
                main()
    finally:
        cli.commands.pop("mem-ping", None)
    assert info.value.code in (0, None)
    assert capsys.readouterr().out == "pong\n"


def test_plugin_context_with_wrong_hook_argument_is_rejected():
    @hookimpl
    def register_encoders(registr):  # typo: pluggy refuses arguments the spec does not have
        pass

    with pytest.raises(Exception, match="registr"):
        with plugin(SimpleNamespace(register_encoders=register_encoders), name="typo"):
            pass
    assert pm.get_plugin("typo") is None


# -- built-ins -----------------------------------------------------------------------------------------------------


def test_builtins_are_registered_like_plugins():
    registry = get_registry()
    for name in ("lightgcn_txt", "interactions", "recbole_atomic", "synthetic_cf"):
        entry = registry.get("data_source", name)
        assert entry.plugin in DEFAULT_PLUGINS
        info = plugin_info(entry.plugin)
        assert info.builtin is True and info.distribution == "engine"
        assert pm.get_plugin(entry.plugin) is sys.modules[entry.plugin]  # through pm.register, no shortcut


def test_plugin_info_of_unknown_name():
    info = plugin_info("never-registered")
    assert (info.name, info.distribution, info.version, info.builtin) == ("never-registered", None, None, False)


# -- entry points and ENGINE_LOAD_PLUGINS --------------------------------------------------------------------------


class FakeEntryPoint:
    def __init__(self, name, dist, obj=None, error=None):
        self.name = name
        self.dist = None if dist is None else SimpleNamespace(name=dist, version="1.2.3")
        self._obj = obj
        self._error = error
        self.loaded = False

    def load(self):
        self.loaded = True
        if self._error is not None:
            raise self._error
        return self._obj


def _encoder_plugin(name):
    cls = _component("encoder", name)
    return SimpleNamespace(register_encoders=hookimpl(lambda register: register(cls)))


@pytest.fixture
def entry_points(monkeypatch):
    """Fake entry points for a fresh load_plugins(); whatever it registers is unregistered afterwards."""
    eps: list[FakeEntryPoint] = []
    calls: list[str] = []

    def fake_entry_points(group=None, **kwargs):
        calls.append(group)
        return [ep for ep in eps] if group == plugins.ENTRY_POINT_GROUP else []

    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
    monkeypatch.setattr(plugins, "_loaded", False)
    before = {name for name, _ in pm.list_name_plugin()}
    plugins.reset_registry()
    try:
        yield SimpleNamespace(eps=eps, calls=calls)
    finally:
        for name, _ in pm.list_name_plugin():
            if name not in before:
                pm.unregister(name=name)
                plugins._info.pop(name, None)
        plugins.reset_registry()


def _standard_eps(entry_points):
    good = FakeEntryPoint("good", "engine-good", _encoder_plugin("good_enc"))
    other = FakeEntryPoint("other", "engine-other", _encoder_plugin("other_enc"))
    broken = FakeEntryPoint("broken", "engine-broken", error=ImportError("No module named 'torch_scatter'"))
    entry_points.eps += [good, other, broken]
    return good, other, broken


def test_load_plugins_empty_env_loads_none(entry_points, monkeypatch):
    good, other, broken = _standard_eps(entry_points)
    monkeypatch.setenv("ENGINE_LOAD_PLUGINS", "")
    plugins.load_plugins()
    assert not (good.loaded or other.loaded or broken.loaded)
    assert pm.get_plugin("good") is None and pm.get_plugin("other") is None
    assert "lightgcn_txt" in get_registry().names("data_source")  # built-ins always load
    assert "good_enc" not in get_registry().names("encoder")


def test_load_plugins_named_only(entry_points, monkeypatch):
    good, other, broken = _standard_eps(entry_points)
    monkeypatch.setenv("ENGINE_LOAD_PLUGINS", "good")
    plugins.load_plugins()
    assert good.loaded and not other.loaded and not broken.loaded
    assert entry_points.calls == [plugins.ENTRY_POINT_GROUP]
    names = get_registry().names("encoder")
    assert "good_enc" in names and "other_enc" not in names
    assert get_registry().get("encoder", "good_enc").plugin == "good"
    info = plugin_info("good")
    assert (info.distribution, info.version, info.builtin) == ("engine-good", "1.2.3", False)


def test_load_plugins_by_distribution_name_and_list(entry_points, monkeypatch):
    good, other, broken = _standard_eps(entry_points)
    monkeypatch.setenv("ENGINE_LOAD_PLUGINS", " engine-other , good ,")
    plugins.load_plugins()
    assert good.loaded and other.loaded and not broken.loaded
    assert {"good_enc", "other_enc"} <= set(get_registry().names("encoder"))


def test_load_plugins_unset_loads_all_and_broken_one_says_how_to_skip(entry_points, monkeypatch):
    good, other, broken = _standard_eps(entry_points)
    monkeypatch.delenv("ENGINE_LOAD_PLUGINS", raising=False)
    with pytest.raises(PluginError) as info:
        plugins.load_plugins()
    msg = str(info.value)
    assert "'broken'" in msg and "engine-broken" in msg and "torch_scatter" in msg
    assert "ENGINE_LOAD_PLUGINS" in msg
    assert good.loaded and other.loaded


def test_load_plugins_unset_loads_every_entry_point(entry_points, monkeypatch):
    entry_points.eps += [
        FakeEntryPoint("good", "engine-good", _encoder_plugin("good_enc")),
        FakeEntryPoint("nodist", None, _encoder_plugin("nodist_enc")),
    ]
    monkeypatch.delenv("ENGINE_LOAD_PLUGINS", raising=False)
    plugins.load_plugins()
    assert {"good_enc", "nodist_enc"} <= set(get_registry().names("encoder"))
    assert plugin_info("nodist").distribution is None and plugin_info("nodist").version is None


def test_load_plugins_is_idempotent(entry_points, monkeypatch):
    good = FakeEntryPoint("good", "engine-good", _encoder_plugin("good_enc"))
    entry_points.eps.append(good)
    monkeypatch.setenv("ENGINE_LOAD_PLUGINS", "good")
    plugins.load_plugins()
    plugins.load_plugins()
    get_registry()
    assert entry_points.calls == [plugins.ENTRY_POINT_GROUP]
    assert [name for name, _ in pm.list_name_plugin()].count("good") == 1


def test_load_plugins_skips_a_name_already_registered(entry_points, monkeypatch):
    good = FakeEntryPoint("good", "engine-good", _encoder_plugin("good_enc"))
    entry_points.eps.append(good)
    monkeypatch.setenv("ENGINE_LOAD_PLUGINS", "good")
    pm.register(_encoder_plugin("mem_enc"), name="good")  # the fixture unregisters it
    plugins.load_plugins()
    assert not good.loaded
    assert "mem_enc" in get_registry().names("encoder")


def test_trace_plugins_prints_hook_calls(entry_points, monkeypatch, capsys):
    monkeypatch.setenv("ENGINE_LOAD_PLUGINS", "")
    monkeypatch.setenv("ENGINE_TRACE_PLUGINS", "1")
    undo = []
    real = pm.add_hookcall_monitoring
    monkeypatch.setattr(pm, "add_hookcall_monitoring", lambda before, after: undo.append(real(before, after)))
    try:
        plugins.load_plugins()
        assert len(undo) == 1
        pm.hook.register_commands(cli=click.Group())
    finally:
        for u in undo:
            u()
    err = capsys.readouterr().err
    assert "engine: hook register_commands" in err


def test_load_plugins_rejects_a_misspelled_hook(entry_points, monkeypatch):
    typo = SimpleNamespace(register_encoder=hookimpl(lambda register: None))  # missing the final "s"
    entry_points.eps.append(FakeEntryPoint("typo", "engine-typo", typo))
    monkeypatch.delenv("ENGINE_LOAD_PLUGINS", raising=False)
    with pytest.raises(PluginError) as info:
        plugins.load_plugins()
    assert "register_encoder" in str(info.value) and "register_encoders" in str(info.value)
    assert plugins._loaded is False  # a failed load is not remembered as done
