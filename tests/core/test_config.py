"""``load_pipeline``: YAML -> overrides -> validated, typed configs, with errors that name the YAML path (``--set``
overrides and ``${VAR:-default}`` substitution: test_config_overrides.py)."""

import copy
from types import SimpleNamespace

import pytest
from pydantic import Field

from engine.components import Component, ComponentConfig
from engine.config import (
    EncoderSpec,
    ObjectiveSpec,
    PipelineConfig,
    load_pipeline,
)
from engine.errors import ConfigError, UnknownComponentError
from engine.hookspecs import hookimpl
from engine.plugins import get_registry, plugin
from engine.task import Task


class TinyEncoder(Component):
    """An encoder with one option."""

    name = "tiny"

    class Config(ComponentConfig):
        dim: int = Field(4, ge=1, description="embedding width")

    def __init__(self, dim: int = 4, num_items: int = 0) -> None:
        self.dim = dim
        self.num_items = num_items


class TinyObjective(Component):
    name = "tiny_loss"

    class Config(ComponentConfig):
        temperature: float = Field(0.2, gt=0)

    def __init__(self, temperature: float = 0.2) -> None:
        self.temperature = temperature


class TinyData(Component):
    name = "tiny_data"

    class Config(ComponentConfig):
        path: str
        min_count: int = Field(0, ge=0)


class TinyModelConfig(ComponentConfig):
    encoder: EncoderSpec
    objectives: list[ObjectiveSpec] = Field(default_factory=lambda: [ObjectiveSpec(name="tiny_loss")])


class TinyTask(Task):
    """A task that only declares its model schema."""

    name = "tiny_task"
    ModelConfig = TinyModelConfig


class TinyPlugin:
    @hookimpl
    def register_encoders(self, register):
        register(TinyEncoder)

    @hookimpl
    def register_objectives(self, register):
        register(TinyObjective)

    @hookimpl
    def register_data_sources(self, register):
        register(TinyData)

    @hookimpl
    def register_tasks(self, register):
        register(TinyTask)


PIPELINE = {
    "name": "tiny-run",
    "task": "tiny_task",
    "data": {"source": "tiny_data", "path": "data/tiny.txt"},
    "model": {
        "encoder": {"name": "tiny", "dim": 8},
        "objectives": [{"name": "tiny_loss", "weight": 0.25, "temperature": 0.1}, "tiny_loss"],
    },
    "train": {"epochs": 2, "lr": 0.01},
}

PIPELINE_YAML = """\
name: tiny-run
task: tiny_task
data:
  source: tiny_data
  path: data/tiny.txt
model:
  encoder: {name: tiny, dim: 8}
  objectives:
    - name: tiny_loss
      weight: 0.25
      temperature: 0.1
    - tiny_loss
train:
  epochs: 2
  lr: 0.01
"""


@pytest.fixture(autouse=True)
def tiny_plugin():
    with plugin(TinyPlugin(), name="tiny"):
        yield


def pipeline(**changes):
    doc = copy.deepcopy(PIPELINE)
    doc.update(changes)
    return doc


def write(tmp_path, text, name="pipeline.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(*args, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        load_pipeline(*args, **kwargs)
    msg = str(info.value)
    assert "Traceback" not in msg and "\n" not in msg, msg
    assert info.value.__cause__ is None
    return msg


# -- resolved, typed configs ---------------------------------------------------------------------------------------


def check_resolved(cfg: PipelineConfig) -> None:
    assert cfg.name == "tiny-run" and cfg.task == "tiny_task"
    assert isinstance(cfg.model, TinyModelConfig)
    assert isinstance(cfg.model.encoder.config, TinyEncoder.Config)
    assert cfg.model.encoder.config.dim == 8
    first, second = cfg.model.objectives
    assert first.weight == 0.25 and first.config == TinyObjective.Config(temperature=0.1)
    assert second.name == "tiny_loss" and second.weight == 1.0 and second.config.temperature == 0.2
    assert isinstance(cfg.data.config, TinyData.Config)
    assert cfg.data.name == "tiny_data" and cfg.data.config.path == "data/tiny.txt"
    assert cfg.train.epochs == 2 and cfg.train.lr == 0.01
    assert cfg.train.batch_size == 2048  # defaults fill in
    assert cfg.evaluate.ks == [10, 20]


def test_load_pipeline_from_dict():
    doc = pipeline()
    cfg = load_pipeline(doc)
    check_resolved(cfg)
    assert cfg.source is None
    assert doc == PIPELINE  # the caller's dict is not modified
    assert cfg.raw == PIPELINE
    cfg.raw["name"] = "changed"  # raw is a copy
    assert cfg.raw["name"] == "tiny-run"


def test_load_pipeline_from_yaml_file(tmp_path):
    path = write(tmp_path, PIPELINE_YAML)
    cfg = load_pipeline(path)
    check_resolved(cfg)
    assert cfg.source == path
    assert load_pipeline(str(path)).model.encoder.config.dim == 8


def test_resolved_specs_build_components():
    cfg = load_pipeline(pipeline())
    registry = get_registry()
    encoder = cfg.model.encoder.build(registry, num_items=5)
    assert isinstance(encoder, TinyEncoder) and (encoder.dim, encoder.num_items) == (8, 5)
    assert isinstance(cfg.model.objectives[0].build(registry), TinyObjective)


def test_string_shorthand_for_encoder():
    cfg = load_pipeline(pipeline(model={"encoder": "tiny"}))
    assert cfg.model.encoder.name == "tiny"
    assert cfg.model.encoder.config == TinyEncoder.Config()
    assert cfg.model.encoder.options == {}
    assert [o.name for o in cfg.model.objectives] == ["tiny_loss"]  # the ModelConfig default, resolved too
    assert cfg.model.objectives[0].config.temperature == 0.2


def test_objective_weight_stays_on_spec_not_in_component_config():
    cfg = load_pipeline(pipeline())
    spec = cfg.model.objectives[0]
    assert spec.weight == 0.25
    assert spec.options == {"temperature": 0.1}
    assert "weight" not in spec.config.model_dump()


def test_objective_weight_is_validated():
    doc = pipeline()
    doc["model"]["objectives"][0]["weight"] = -1
    msg = config_error(doc)
    assert "model.objectives.0.weight" in msg and "(got -1)" in msg


def test_unresolved_spec_says_how_to_resolve():
    with pytest.raises(RuntimeError, match="load_pipeline"):
        EncoderSpec(name="tiny").config


# -- validation errors ---------------------------------------------------------------------------------------------


def test_unknown_top_level_key_is_named():
    msg = config_error(pipeline(trian={"epochs": 3}))
    assert msg == "pipeline: trian: unknown key"


def test_unknown_top_level_key_in_file_names_the_file(tmp_path):
    path = write(tmp_path, PIPELINE_YAML + "seeed: 1\n")
    msg = config_error(path)
    assert msg.startswith(f"{path}: ") and "seeed: unknown key" in msg


def test_epochs_zero_names_path_and_value():
    msg = config_error(pipeline(train={"epochs": 0}))
    assert "train.epochs" in msg and "got 0" in msg
    assert "greater than or equal to 1" in msg


def test_wrong_type_names_path_and_value():
    msg = config_error(pipeline(train={"lr": "fast"}))
    assert "train.lr: " in msg and "(got 'fast')" in msg


def test_unknown_train_key():
    assert "train.epoch: unknown key" in config_error(pipeline(train={"epoch": 3}))


def test_missing_required_fields():
    doc = pipeline()
    del doc["task"]
    assert "task: Field required" in config_error(doc)


def test_data_needs_a_source():
    msg = config_error(pipeline(data={"path": "x"}))
    assert "data.source is required" in msg


def test_component_option_errors_name_the_yaml_path():
    doc = pipeline()
    doc["model"]["encoder"]["dim"] = -1
    msg = config_error(doc)
    assert msg.startswith("pipeline: model.encoder.dim: ") and msg.endswith("(got -1)")

    doc = pipeline()
    doc["model"]["objectives"][1] = {"name": "tiny_loss", "temprature": 0.5}
    assert "model.objectives.1.temprature: unknown key" in config_error(doc)

    assert "data.path: Field required" in config_error(pipeline(data={"source": "tiny_data"}))


def test_model_block_is_validated_by_the_task_schema():
    msg = config_error(pipeline(model={"objectives": []}))
    assert "model.encoder: Field required" in msg
    assert "model.decoder: unknown key" in config_error(pipeline(model={"encoder": "tiny", "decoder": "x"}))


def test_unknown_component_name_in_model():
    with pytest.raises(UnknownComponentError) as info:
        load_pipeline(pipeline(model={"encoder": "tinny"}))
    msg = str(info.value)
    assert msg.startswith("pipeline: Unknown encoder 'tinny' at model.encoder.name.")
    assert "Did you mean 'tiny'?" in msg


def test_unknown_task_name():
    with pytest.raises(UnknownComponentError) as info:
        load_pipeline(pipeline(task="tiny_tsk"))
    msg = str(info.value)
    assert "Unknown task 'tiny_tsk' at task." in msg and "Did you mean 'tiny_task'?" in msg
    assert isinstance(info.value, KeyError)


def test_unknown_task_with_known_provider():
    with pytest.raises(UnknownComponentError, match="engine-graphcl"):
        load_pipeline(pipeline(task="graph_cf"))


def test_unknown_data_source():
    with pytest.raises(UnknownComponentError, match=r"Unknown data source 'tiny_dta' at data\.name"):
        load_pipeline(pipeline(data={"source": "tiny_dta", "path": "x"}))


# -- files ---------------------------------------------------------------------------------------------------------


def test_malformed_yaml_gives_line_and_column(tmp_path):
    path = write(tmp_path, "name: x\ntask: tiny_task\ntrain: {epochs: 2\nseed: 1\n")
    msg = config_error(path)
    assert msg.startswith(f"{path}: malformed YAML: line ")
    assert "column" in msg
    assert "line 4, column 5" in msg  # where the flow mapping of line 3 runs into `seed:`
    assert "yaml.scanner" not in msg and "yaml.parser" not in msg and 'File "' not in msg


def test_malformed_yaml_reports_the_right_line(tmp_path):
    path = write(tmp_path, "name: x\ntask: tiny_task\ndata:\n  source: [a\n  path: b\nseed: : 2\n")
    msg = config_error(path)
    assert "malformed YAML: line " in msg and ", column " in msg


def test_bad_indentation_line_number(tmp_path):
    path = write(tmp_path, "name: x\ntrain:\n  epochs: 2\n   lr: 0.1\n")
    assert "line 4, column" in config_error(path)


@pytest.mark.parametrize("text,kind", [("- a\n- b\n", "list"), ("just a string\n", "str"), ("", "NoneType")])
def test_top_level_must_be_a_mapping(tmp_path, text, kind):
    path = write(tmp_path, text)
    assert config_error(path) == f"{path}: expected a mapping at the top level (got {kind})"


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    assert config_error(path) == f"{path}: pipeline file not found"
    assert "pipeline file not found" in config_error(tmp_path)  # a directory is not a pipeline file


def test_non_utf8_file(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    assert "not a UTF-8 text file" in config_error(path)


# -- tasks without a model schema ----------------------------------------------------------------------------------


def test_task_without_model_config_keeps_model_as_given():
    class LooseTask(Task):
        name = "loose"

    @hookimpl
    def register_tasks(register):
        register(LooseTask)

    with plugin(SimpleNamespace(register_tasks=register_tasks), name="loose"):
        cfg = load_pipeline(pipeline(task="loose", model={"anything": [1, 2]}))
    assert cfg.model == {"anything": [1, 2]}
    assert cfg.data.config.path == "data/tiny.txt"


def test_explicit_registry_argument():
    registry = get_registry()
    assert load_pipeline(pipeline(), registry=registry).model.encoder.config.dim == 8
