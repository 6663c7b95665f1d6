import pytest

from engine.errors import ConfigError, UnknownComponentError
from engine.plugins import get_registry
import engine_objectives
from engine_objectives import BPR, InfoNCE
from engine_objectives import plugin as objectives_module

#: Every objective of the catalogue, by registered name (issue #5).
NAMES = {
    "infonce": engine_objectives.InfoNCE,
    "bpr": engine_objectives.BPR,
    "tiled_infonce": engine_objectives.TiledInfoNCE,
    "siglip": engine_objectives.SigLIP,
    "dcl": engine_objectives.DCL,
    "supcon": engine_objectives.SupCon,
    "cwcl": engine_objectives.CWCL,
    "align_uniform": engine_objectives.AlignUniform,
    "hard_negative_infonce": engine_objectives.HardNegativeInfoNCE,
    "debiased_infonce": engine_objectives.DebiasedInfoNCE,
    "mochi": engine_objectives.MoCHi,
    "queue_infonce": engine_objectives.QueueInfoNCE,
    "auc": engine_objectives.AUCLoss,
    "symile": engine_objectives.Symile,
    "gram": engine_objectives.GRAM,
    "weighted_sum": engine_objectives.WeightedSum,
}


def test_register_objectives_registers_every_objective():
    registered = []
    objectives_module.register_objectives(register=registered.append)
    assert registered[:2] == [InfoNCE, BPR]
    assert {cls.name: cls for cls in registered} == NAMES and len(registered) == len(NAMES)
    assert all(cls.__name__ in engine_objectives.__all__ for cls in registered)


def test_every_name_is_in_the_registry(objectives_plugin):
    registry = get_registry()
    for name, cls in NAMES.items():
        entry = registry.get("objective", name)
        assert entry.cls is cls and entry.plugin == "objectives" and entry.summary
        assert registry.validate("objective", name, {} if name != "weighted_sum" else {"terms": ["bpr"]}, "o")
    assert set(NAMES) <= set(registry.names("objective"))


def test_every_objective_builds_with_defaults(objectives_plugin):
    registry = get_registry()
    for name in NAMES:
        options = {"terms": ["infonce"]} if name == "weighted_sum" else {}
        loss_fn = registry.build("objective", name, registry.validate("objective", name, options, "o"))
        assert isinstance(loss_fn, NAMES[name]) and isinstance(loss_fn.get_config_dict(), dict)
        assert NAMES[name].__doc__ and "Reference" in NAMES[name].__doc__ and "Shapes" in NAMES[name].__doc__


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
