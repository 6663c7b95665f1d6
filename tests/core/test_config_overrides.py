"""``load_pipeline``'s ``--set`` overrides (YAML-typed values, new nested keys, list indices, validation, bad forms)
and its ``${VAR:-default}`` environment substitution in files and overrides."""

import pytest

from engine.config import apply_override, load_pipeline
from tests.core.test_config import PIPELINE_YAML, config_error, pipeline, write
from tests.core.test_config import tiny_plugin  # noqa: F401  (the autouse fixture registering the tiny plugin)


# -- --set overrides -----------------------------------------------------------------------------------------------


def test_override_scalar_parsed_as_yaml(tmp_path):
    cfg = load_pipeline(write(tmp_path, PIPELINE_YAML), ["train.epochs=5", "train.amp=true", "evaluate.ks=[5, 50]"])
    assert cfg.train.epochs == 5 and cfg.train.amp is True and cfg.evaluate.ks == [5, 50]
    assert cfg.raw["train"]["epochs"] == 5


def test_override_creates_nested_new_keys():
    doc = pipeline()
    del doc["train"]
    cfg = load_pipeline(doc, ["train.epochs=3", "tracking.uri=sqlite:///x.db"])
    assert cfg.train.epochs == 3 and cfg.tracking.uri == "sqlite:///x.db"


def test_override_new_component_option_is_validated():
    cfg = load_pipeline(pipeline(), ["data.min_count=3"])
    assert cfg.data.config.min_count == 3
    assert "data.min_cnt: unknown key" in config_error(pipeline(), ["data.min_cnt=3"])


def test_override_list_index():
    cfg = load_pipeline(pipeline(), ["model.objectives.0.weight=0.5", "model.objectives.0.temperature=0.3"])
    assert cfg.model.objectives[0].weight == 0.5
    assert cfg.model.objectives[0].config.temperature == 0.3


def test_override_replaces_list_item():
    cfg = load_pipeline(pipeline(), ["model.objectives.1={name: tiny_loss, weight: 2}"])
    assert cfg.model.objectives[1].weight == 2.0


def test_override_is_validated():
    msg = config_error(pipeline(), ["train.epochs=0"])
    assert "train.epochs" in msg and "got 0" in msg


def test_override_string_value_and_empty_value():
    doc: dict = {"a": {}}
    apply_override(doc, "a.b=hello world")
    apply_override(doc, "a.c=")
    apply_override(doc, "a.d=[unclosed")  # not valid YAML: kept as text
    apply_override(doc, "a.e=x=y")
    assert doc == {"a": {"b": "hello world", "c": "", "d": "[unclosed", "e": "x=y"}}


@pytest.mark.parametrize(
    "assignment,expected",
    [
        ("novalue", "expected KEY=VALUE"),
        ("=5", "empty key segment"),
        ("train..epochs=5", "empty key segment"),
        ("model.objectives.5.weight=0.5", "expected a list index below 2 (got '5')"),
        ("model.objectives.first.weight=0.5", "expected a list index below 2 (got 'first')"),
        ("model.objectives.-1.weight=0.5", "expected a list index below 2"),
        ("model.objectives.2=tiny_loss", "expected a list index below 2 (got '2')"),
        ("train.epochs.max=5", "train.epochs is a int, not a mapping"),
        ("name.x.y=1", "name is a str, not a mapping"),
    ],
)
def test_bad_override_forms(assignment, expected):
    msg = config_error(pipeline(), [assignment])
    assert expected in msg
    assert "--set" in msg


# -- environment variables -----------------------------------------------------------------------------------------


def test_env_default_is_used_when_unset(monkeypatch):
    monkeypatch.delenv("TINY_DATA_ROOT", raising=False)
    cfg = load_pipeline(pipeline(data={"source": "tiny_data", "path": "${TINY_DATA_ROOT:-/srv/data}/tiny.txt"}))
    assert cfg.data.config.path == "/srv/data/tiny.txt"


def test_env_value_wins_over_default(monkeypatch):
    monkeypatch.setenv("TINY_DATA_ROOT", "/mnt/x")
    cfg = load_pipeline(pipeline(data={"source": "tiny_data", "path": "${TINY_DATA_ROOT:-/srv/data}/tiny.txt"}))
    assert cfg.data.config.path == "/mnt/x/tiny.txt"


def test_env_empty_default_and_nested_lists(monkeypatch):
    monkeypatch.delenv("TINY_SUFFIX", raising=False)
    monkeypatch.setenv("TINY_K", "7")
    cfg = load_pipeline(pipeline(data={"source": "tiny_data", "path": "a${TINY_SUFFIX:-}"}, evaluate={"ks": ["${TINY_K}"]}))
    assert cfg.data.config.path == "a"
    assert cfg.evaluate.ks == [7]


def test_env_in_override_and_file(monkeypatch, tmp_path):
    monkeypatch.setenv("TINY_EPOCHS", "4")
    path = write(tmp_path, PIPELINE_YAML.replace("path: data/tiny.txt", "path: ${TINY_HOME:-home}/tiny.txt"))
    cfg = load_pipeline(path, ["train.epochs=${TINY_EPOCHS}"])
    assert cfg.train.epochs == 4 and cfg.data.config.path == "home/tiny.txt"


def test_unset_env_without_default_is_an_error(monkeypatch):
    monkeypatch.delenv("TINY_UNSET_VAR", raising=False)
    msg = config_error(pipeline(data={"source": "tiny_data", "path": "${TINY_UNSET_VAR}/x"}))
    assert "environment variable TINY_UNSET_VAR is not set" in msg
    assert "${TINY_UNSET_VAR}/x" in msg
