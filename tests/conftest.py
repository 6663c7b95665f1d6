import sys, pathlib
for _p in ("plugins/objectives", "plugins/graphcl", "plugins/seqrec", "plugins/linkage", "tests"):
    _d = str(pathlib.Path(__file__).resolve().parents[1] / _p)
    if _d not in sys.path:
        sys.path.insert(0, _d)
import os

# Tests never load entry points: plugins are registered in-memory by fixtures.
os.environ["ENGINE_LOAD_PLUGINS"] = ""
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TQDM_DISABLE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if os.environ.get("ENGINE_SLOW_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="slow; set ENGINE_SLOW_TESTS=1 to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _small_torch():
    torch.set_num_threads(2)
    torch.manual_seed(0)
    yield


@pytest.fixture
def objectives_plugin():
    from engine.plugins import plugin
    from engine_objectives import plugin as mod

    with plugin(mod, name="objectives"):
        yield


@pytest.fixture
def graphcl_plugins():
    """The objectives and graphcl plugins registered in memory (as `engine plugins install` would make them)."""
    from engine.plugins import plugin
    from engine_graphcl import plugin as gmod
    from engine_objectives import plugin as omod

    with plugin(omod, name="objectives"), plugin(gmod, name="graphcl"):
        yield


@pytest.fixture
def seqrec_plugins():
    """The objectives and seqrec plugins registered in memory (as `engine plugins install` would make them)."""
    from engine.plugins import plugin
    from engine_objectives import plugin as omod
    from engine_seqrec import plugin as smod

    with plugin(omod, name="objectives"), plugin(smod, name="seqrec"):
        yield



@pytest.fixture
def linkage_plugins():
    """The objectives and linkage plugins registered in memory (as `engine plugins install` would make them)."""
    from engine.plugins import plugin
    from engine_linkage import plugin as lmod
    from engine_objectives import plugin as omod

    with plugin(omod, name="objectives"), plugin(lmod, name="linkage"):
        yield
