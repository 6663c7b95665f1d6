"""The component registry: built from plugin hooks, with typed configs and errors that say what to do."""

from types import SimpleNamespace

import pytest
from pydantic import BaseModel, Field, ValidationError

from engine.components import Component, ComponentConfig
from engine.errors import ConfigError, EngineError, PluginError, UnknownComponentError
from engine.hookspecs import hookimpl
from engine.plugins import get_registry, plugin
from engine.registry import KINDS, Registry, format_validation_error


class MLPEncoder(Component):
    """A tiny encoder for registry tests.

    More text that the summary leaves out.
    """

    name = "mlp"

    class Config(ComponentConfig):
        embedding_dim: int = Field(16, ge=1, description="output width")
        dropout: float = Field(0.0, ge=0, lt=1)

    def __init__(self, embedding_dim: int = 16, dropout: float = 0.0, num_items: int | None = None) -> None:
        self.embedding_dim = embedding_dim
        self.dropout = dropout
        self.num_items = num_items


class GRUEncoder(Component):
    name = "gru"

    class Config(ComponentConfig):
        hidden: int = 8


class DCLObjective(Component):
    """Debiased contrastive loss (stand-in)."""

    name = "dcl"

    class Config(ComponentConfig):
        tau_plus: float = Field(0.1, ge=0, le=1)


class SigLIPObjective(Component):
    name = "siglip"

    class Config(ComponentConfig):
        pass


class EncodersPlugin:
    @hookimpl
    def register_encoders(self, register):
        register(MLPEncoder)
        register(GRUEncoder)


def _objectives_plugin(*classes):
    @hookimpl
    def register_objectives(register):
        for cls in classes:
            register(cls)

    return SimpleNamespace(register_objectives=register_objectives)


@pytest.fixture
def encoders():
    with plugin(EncodersPlugin(), name="test-encoders") as name:
        yield name


@pytest.fixture
def objectives():
    with plugin(_objectives_plugin(DCLObjective, SigLIPObjective), name="test-objectives") as name:
        yield name


# -- lookup --------------------------------------------------------------------------------------------------------


def test_get_returns_entry_with_plugin_name(encoders, objectives):
    registry = get_registry()
    entry = registry.get("encoder", "mlp")
    assert entry.cls is MLPEncoder
    assert (entry.kind, entry.name, entry.plugin) == ("encoder", "mlp", "test-encoders")
    assert entry.config_model is MLPEncoder.Config
    assert entry.summary == "A tiny encoder for registry tests."
    assert registry.get("encoder", "gru").summary == ""
    assert registry.get("objective", "dcl").plugin == "test-objectives"
    assert {"mlp", "gru"} <= set(registry.names("encoder"))
    assert registry.names("encoder") == sorted(registry.names("encoder"))


def test_entries_by_kind_and_all(encoders, objectives):
    registry = get_registry()
    assert [e.name for e in registry.entries("encoder")] == registry.names("encoder")
    everything = registry.entries()
    assert {(e.kind, e.name) for e in everything} >= {("encoder", "mlp"), ("objective", "dcl")}
    assert [e.kind for e in everything] == sorted((e.kind for e in everything), key=KINDS.index)


def test_registry_forgets_plugin_after_context():
    with plugin(EncodersPlugin(), name="short-lived"):
        assert get_registry().get("encoder", "mlp").plugin == "short-lived"
    with pytest.raises(UnknownComponentError):
        get_registry().get("encoder", "mlp")


# -- unknown names -------------------------------------------------------------------------------------------------


def test_unknown_name_suggests_and_lists_known(encoders, objectives):
    with pytest.raises(UnknownComponentError) as info:
        get_registry().get("objective", "siglp", where="model.objectives.0.name")
    err = info.value
    assert isinstance(err, KeyError) and isinstance(err, EngineError)
    msg = str(err)
    assert msg.startswith("Unknown objective 'siglp' at model.objectives.0.name.")
    assert "Did you mean 'siglip'?" in msg
    assert "Known: dcl, siglip." in msg
    assert "engine plugins list" in msg
    assert not msg.startswith('"')  # KeyError would quote it


def test_unknown_name_without_close_match(encoders):
    msg = str(pytest.raises(UnknownComponentError, get_registry().get, "encoder", "transformer").value)
    assert "Did you mean" not in msg
    assert "Known: gru, mlp." in msg


def test_unknown_name_with_nothing_registered_says_none():
    msg = str(pytest.raises(UnknownComponentError, get_registry().get, "augmenter", "edge_drop").value)
    assert "Known: (none)." in msg
    assert "More augmenters come from plugins" in msg


def test_unknown_known_provider_names_the_plugin_to_install(objectives):
    with pytest.raises(UnknownComponentError) as info:
        get_registry().get("objective", "infonce")
    msg = str(info.value)
    assert "engine-objectives" in msg
    assert "engine plugins install engine-objectives" in msg
    assert "Known: dcl, siglip." in msg


def test_unknown_error_is_catchable_as_key_error():
    with pytest.raises(KeyError):
        get_registry().get("task", "graph_cf")
    assert "engine-graphcl" in str(pytest.raises(KeyError, get_registry().get, "task", "graph_cf").value)


# -- invalid registrations -----------------------------------------------------------------------------------------


def test_duplicate_name_from_two_plugins_names_both(encoders):
    class OtherMLP(MLPEncoder):
        pass

    @hookimpl
    def register_encoders(register):
        register(OtherMLP)

    with plugin(SimpleNamespace(register_encoders=register_encoders), name="rival-encoders"):
        with pytest.raises(PluginError) as info:
            get_registry()
    msg = str(info.value)
    assert "duplicate encoder name 'mlp'" in msg
    assert "'test-encoders'" in msg and "'rival-encoders'" in msg
    # the clash is gone with the rival plugin
    assert get_registry().get("encoder", "mlp").cls is MLPEncoder


def test_duplicate_name_within_one_plugin():
    with plugin(_objectives_plugin(DCLObjective, DCLObjective), name="twice"):
        with pytest.raises(PluginError, match="duplicate objective name 'dcl'.*'twice'.*'twice'"):
            get_registry()


def test_same_name_in_different_kinds_is_allowed():
    class DCLEncoder(MLPEncoder):
        name = "dcl"

    @hookimpl
    def register_encoders(register):
        register(DCLEncoder)

    with plugin(SimpleNamespace(register_encoders=register_encoders), name="e"), plugin(
        _objectives_plugin(DCLObjective), name="o"
    ):
        registry = get_registry()
        assert registry.get("encoder", "dcl").cls is DCLEncoder
        assert registry.get("objective", "dcl").cls is DCLObjective


@pytest.mark.parametrize("name", [None, "", 3])
def test_component_without_string_name_is_rejected(name):
    class Nameless:
        class Config(BaseModel):
            pass

    if name is not None:
        Nameless.name = name
    with plugin(_objectives_plugin(Nameless), name="bad-names"):
        with pytest.raises(PluginError, match="'bad-names'.*without a string `name`"):
            get_registry()


def test_component_subclass_without_name_is_rejected():
    class NoName(Component):  # Component only annotates `name`
        pass

    with plugin(_objectives_plugin(NoName), name="bad-component"):
        with pytest.raises(PluginError, match="without a string `name`"):
            get_registry()


@pytest.mark.parametrize("config", [None, dict, object()])
def test_component_without_pydantic_config_is_rejected(config):
    class NoConfig:
        name = "noconf"

    if config is not None:
        NoConfig.Config = config
    with plugin(_objectives_plugin(NoConfig), name="bad-config"):
        with pytest.raises(PluginError, match="objective 'noconf' from plugin 'bad-config' has no pydantic `Config`"):
            get_registry()


def test_unknown_kind_is_rejected():
    registry = Registry()
    with pytest.raises(PluginError, match="unknown kind 'model'"):
        registry.add("model", MLPEncoder, "p")


# -- validation ----------------------------------------------------------------------------------------------------


def test_validate_returns_typed_config(encoders):
    cfg = get_registry().validate("encoder", "mlp", {"embedding_dim": 32}, "model.encoder")
    assert isinstance(cfg, MLPEncoder.Config)
    assert cfg.embedding_dim == 32 and cfg.dropout == 0.0


def test_validate_error_names_path_rule_and_value(encoders):
    with pytest.raises(ConfigError) as info:
        get_registry().validate("encoder", "mlp", {"embedding_dim": -1}, "model.encoder")
    msg = str(info.value)
    assert msg.startswith("model.encoder.embedding_dim: ")
    assert "greater than or equal to 1" in msg
    assert msg.endswith("(got -1)")
    assert info.value.__cause__ is None and "Traceback" not in msg


def test_validate_reports_every_problem_on_one_line(encoders):
    with pytest.raises(ConfigError) as info:
        get_registry().validate("encoder", "mlp", {"embedding_dim": "wide", "dropout": 1.5}, "model.encoder")
    msg = str(info.value)
    assert "\n" not in msg
    assert "model.encoder.embedding_dim: " in msg and "(got 'wide')" in msg
    assert "model.encoder.dropout: " in msg and "(got 1.5)" in msg


def test_validate_unknown_key(encoders):
    with pytest.raises(ConfigError) as info:
        get_registry().validate("encoder", "mlp", {"embedding_dimm": 8}, "model.encoder")
    assert str(info.value) == "model.encoder.embedding_dimm: unknown key"


def test_validate_unknown_component_names_the_yaml_path(encoders):
    with pytest.raises(UnknownComponentError, match=r"at model\.encoder\.name\. Did you mean 'mlp'\?"):
        get_registry().validate("encoder", "mpl", {}, "model.encoder")


def test_format_validation_error_missing_field_has_no_value():
    class Needs(BaseModel):
        path: str

    with pytest.raises(ValidationError) as info:
        Needs.model_validate({})
    assert format_validation_error(info.value, "data") == "data.path: Field required"


def test_build_passes_config_and_named_context(encoders):
    registry = get_registry()
    cfg = registry.validate("encoder", "mlp", {"embedding_dim": 4}, "model.encoder")
    enc = registry.build("encoder", "mlp", cfg, num_items=7, device="cpu")  # device is not a constructor argument
    assert isinstance(enc, MLPEncoder)
    assert (enc.embedding_dim, enc.dropout, enc.num_items) == (4, 0.0, 7)
