import pytest

from engine.errors import ConfigError, UnknownComponentError
from engine.plugins import get_registry
from engine_objectives import BPR, InfoNCE
from engine_objectives import plugin as objectives_module


def test_register_objectives_registers_both():
    registered = []
    objectives_module.register_objectives(register=registered.append)
    assert registered == [InfoNCE, BPR]


def test_registry_entries(objectives_plugin):
    registry = get_registry()
    for name, cls in (("infonce", InfoNCE), ("bpr", BPR)):
        entry = registry.get("objective", name)
        assert entry.cls is cls and entry.plugin == "objectives" and entry.summary
    assert {"infonce", "bpr"} <= set(registry.names("objective"))


def test_registry_builds_from_config(objectives_plugin):
    registry = get_registry()
    loss_fn = registry.build("objective", "infonce", InfoNCE.Config(temperature=0.1))
    assert isinstance(loss_fn, InfoNCE) and loss_fn.temperature == 0.1
    config = registry.validate("objective", "infonce", {"temperature": 0.5, "symmetric": True}, "objectives[0]")
    assert registry.build("objective", "infonce", config).symmetric
    assert isinstance(registry.build("objective", "bpr", BPR.Config(), num_users=3), BPR)


def test_registry_validation_errors_name_the_path(objectives_plugin):
    with pytest.raises(ConfigError, match=r"objectives\[0\]\.temperature"):
        get_registry().validate("objective", "infonce", {"temperature": 0}, "objectives[0]")
    with pytest.raises(ConfigError, match="unknown key"):
        get_registry().validate("objective", "bpr", {"margin": 1.0}, "objectives[1]")


def test_unregistered_after_fixture():
    with pytest.raises(UnknownComponentError, match="engine-objectives"):
        get_registry().get("objective", "infonce")
