"""The ``engine`` command line: instant --help, plugin listing, pip through runpy, one-line user errors."""

import json
import os
import pathlib
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import click
import pytest
from click.testing import CliRunner

from engine import __version__
from engine.cli import cli, user_errors
from engine.components import Component, ComponentConfig
from engine.errors import ConfigError
from engine.hookspecs import hookimpl
from engine.plugins import plugin

REPO = pathlib.Path(__file__).resolve().parents[2]

HEAVY = ("torch", "mlflow", "polars", "torch_geometric", "onnx", "pandas")


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ENGINE_LOAD_PLUGINS": "", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_help_exits_zero_without_heavy_imports(tmp_path):
    report = tmp_path / "report.json"
    code = """
        import json, sys
        report = sys.argv[1]
        sys.argv = ["engine", "--help"]
        from engine.cli import main
        try:
            main()
            code = "returned"
        except SystemExit as exc:
            code = exc.code
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in %r)
        with open(report, "w") as fh:
            json.dump({"code": code, "heavy": heavy}, fh)
    """ % (HEAVY,)
    proc = _python(code, str(report))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(report.read_text())
    assert result["code"] in (0, None)
    assert result["heavy"] == [], f"`engine --help` imported {result['heavy']}"
    for command in ("run", "evaluate", "export", "plugins"):
        assert f"  {command} " in proc.stdout
    assert "Traceback" not in proc.stderr


def test_module_help_subprocess():
    proc = subprocess.run(
        [sys.executable, "-m", "engine.cli", "--help"],
        cwd=REPO,
        env={**os.environ, "ENGINE_LOAD_PLUGINS": "", "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Usage: ")
    assert "Train contrastive recommenders" in proc.stdout


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0, result.output
    assert __version__ in result.stdout


def test_every_command_and_option_has_help():
    def walk(command, path):
        yield path, command
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, f"{path} {name}")

    for path, command in walk(cli, "engine"):
        assert command.help, f"`{path}` has no help text"
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden and param.name not in ("help", "version"):
                assert param.help, f"`{path}` option {param.opts} has no help text"
        result = CliRunner().invoke(cli, [*path.split()[1:], "--help"])
        assert result.exit_code == 0, (path, result.output)


# -- plugins list --------------------------------------------------------------------------------------------------


class Widget(Component):
    """A widget encoder from an in-memory plugin."""

    name = "widget"

    class Config(ComponentConfig):
        pass


@hookimpl
def register_encoders(register):
    register(Widget)


def _list(*args):
    result = CliRunner().invoke(cli, ["plugins", "list", *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_plugins_list_json_all_includes_builtins():
    rows = json.loads(_list("--json", "--all"))
    assert isinstance(rows, list) and rows
    for row in rows:
        assert isinstance(row, dict) and {"kind", "name", "plugin"} <= row.keys()
    sources = {row["name"]: row for row in rows if row["kind"] == "data_source"}
    assert {"lightgcn_txt", "interactions", "recbole_atomic", "synthetic_cf"} <= sources.keys()
    assert all(row["builtin"] for row in sources.values())
    assert sources["lightgcn_txt"]["plugin"] == "engine.data.sources"


def test_plugins_list_hides_builtins_without_all():
    assert json.loads(_list("--json")) == []
    assert "No plugins installed" in _list()


def test_plugins_list_shows_in_memory_plugin():
    with plugin(SimpleNamespace(register_encoders=register_encoders), name="widgets"):
        rows = json.loads(_list("--json"))
        assert rows == [
            {
                "kind": "encoder",
                "name": "widget",
                "plugin": "widgets",
                "builtin": False,
                "distribution": None,
                "version": None,
                "summary": "A widget encoder from an in-memory plugin.",
            }
        ]
        text = _list()
        assert "widget" in text and "widgets" in text
        assert json.loads(_list("--json", "--all", "--kind", "encoder")) == rows
        assert json.loads(_list("--json", "--kind", "data_source")) == []


def test_plugins_list_bad_kind():
    result = CliRunner().invoke(cli, ["plugins", "list", "--kind", "loss"])
    assert result.exit_code == 2
    assert "Invalid value for '--kind'" in result.output


# -- plugins install / uninstall -----------------------------------------------------------------------------------


@pytest.fixture
def pip_calls(monkeypatch):
    import runpy

    calls = []

    def fake_run_module(mod_name, *args, **kwargs):
        calls.append({"module": mod_name, "argv": list(sys.argv), "run_name": kwargs.get("run_name")})

    monkeypatch.setattr(runpy, "run_module", fake_run_module)
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # _pip rewrites sys.argv; put it back afterwards
    return calls


def test_plugins_install(pip_calls):
    result = CliRunner().invoke(cli, ["plugins", "install", "engine-objectives", "engine-graphcl"])
    assert result.exit_code == 0, result.output
    assert pip_calls == [
        {"module": "pip", "argv": ["pip", "install", "engine-objectives", "engine-graphcl"], "run_name": "__main__"}
    ]


def test_plugins_install_upgrade_editable(pip_calls, tmp_path):
    result = CliRunner().invoke(cli, ["plugins", "install", "foo", "-U", "-e", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert [c["argv"] for c in pip_calls] == [["pip", "install", "--upgrade", "-e", str(tmp_path), "foo"]]


def test_plugins_install_editable_only(pip_calls, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    result = CliRunner().invoke(cli, ["plugins", "install", "--editable", str(tmp_path), "-e", str(other)])
    assert result.exit_code == 0, result.output
    assert pip_calls[0]["argv"] == ["pip", "install", "-e", str(tmp_path), "-e", str(other)]


def test_plugins_install_needs_something(pip_calls, tmp_path):
    result = CliRunner().invoke(cli, ["plugins", "install"])
    assert result.exit_code == 2 and "name a package or give -e PATH" in result.output
    result = CliRunner().invoke(cli, ["plugins", "install", "-e", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "does not exist" in result.output
    assert pip_calls == []


def test_plugins_uninstall(pip_calls):
    result = CliRunner().invoke(cli, ["plugins", "uninstall", "foo", "-y"])
    assert result.exit_code == 0, result.output
    assert pip_calls == [{"module": "pip", "argv": ["pip", "uninstall", "foo", "-y"], "run_name": "__main__"}]
    CliRunner().invoke(cli, ["plugins", "uninstall", "foo", "bar"])
    assert pip_calls[-1]["argv"] == ["pip", "uninstall", "foo", "bar"]
    result = CliRunner().invoke(cli, ["plugins", "uninstall"])
    assert result.exit_code == 2 and len(pip_calls) == 2


def test_pip_exit_code_propagates(monkeypatch):
    import runpy

    def failing_pip(mod_name, *args, **kwargs):
        raise SystemExit(1)

    monkeypatch.setattr(runpy, "run_module", failing_pip)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    result = CliRunner().invoke(cli, ["plugins", "uninstall", "foo", "-y"])
    assert result.exit_code == 1


# -- user errors ---------------------------------------------------------------------------------------------------


def test_user_errors_print_one_line_and_exit_2():
    @click.command()
    @user_errors
    def broken():
        raise ConfigError("pipeline.yaml: train.epochs: must be >= 1 (got 0)")

    result = CliRunner().invoke(broken, [])
    assert result.exit_code == 2
    assert result.stderr == "Error: pipeline.yaml: train.epochs: must be >= 1 (got 0)\n"
    assert "Traceback" not in result.output


def test_user_errors_interrupt_exits_130_with_resume_hint():
    @click.command()
    @user_errors
    def interrupted():
        raise KeyboardInterrupt

    result = CliRunner().invoke(interrupted, [])
    assert result.exit_code == 130
    assert "--resume" in result.stderr


def test_user_errors_let_bugs_through():
    @click.command()
    @user_errors
    def buggy():
        raise ZeroDivisionError

    result = CliRunner().invoke(buggy, [])
    assert isinstance(result.exception, ZeroDivisionError)


def test_run_with_missing_pipeline_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(cli, ["run", str(tmp_path / "missing.yaml"), "--no-track"])
    assert result.exit_code == 2
    assert result.stderr == f"Error: {tmp_path / 'missing.yaml'}: pipeline file not found\n"


def test_run_with_bad_override_is_a_one_line_error(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("name: p\ntask: t\ndata: {source: s, path: x}\n")
    result = CliRunner().invoke(cli, ["run", str(path), "--set", "novalue", "--no-track"])
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: --set 'novalue': expected KEY=VALUE")
    assert result.stderr.count("\n") == 1
