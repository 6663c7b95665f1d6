import pytest
import torch

from engine.config import ObjectiveSpec, load_pipeline
from engine.errors import ConfigError
from engine.plugins import get_registry
from engine_objectives import AlignUniform, InfoNCE, SigLIP, WeightedSum


def test_weighted_sum_adds_weighted_terms_and_logs_each():
    anchor, positive = torch.randn(5, 4), torch.randn(5, 4)
    terms = [InfoNCE(temperature=0.2), InfoNCE(temperature=0.5), AlignUniform()]
    loss_fn = WeightedSum(terms, [1.0, 0.5, 0.1])
    out = loss_fn(anchor, positive)
    values = [t(anchor, positive) for t in terms]
    assert torch.allclose(out.loss, values[0].loss + 0.5 * values[1].loss + 0.1 * values[2].loss)
    assert set(out.parts) == {"infonce/infonce", "infonce_2/infonce", "align_uniform/align", "align_uniform/uniform"}
    assert torch.allclose(out.parts["infonce_2/infonce"], values[1].loss)  # unweighted
    assert loss_fn.get_config_dict()["infonce_2.weight"] == 0.5
    assert loss_fn.get_config_dict()["infonce_2.temperature"] == 0.5


def test_weighted_sum_gradients_flow_to_every_term():
    loss_fn = WeightedSum([SigLIP(), InfoNCE(learnable_temperature=True)], [2.0, 1.0])
    loss_fn(torch.randn(4, 3), torch.randn(4, 3)).loss.backward()
    assert {n for n, p in loss_fn.named_parameters() if p.grad is not None} == {
        "terms.0.log_scale", "terms.0.bias", "terms.1.log_temperature"}


def test_weighted_sum_from_registry_config(objectives_plugin):
    registry = get_registry()
    config = registry.validate("objective", "weighted_sum", {"terms": [
        {"name": "infonce", "temperature": 0.1},
        {"name": "weighted_sum", "weight": 0.5, "terms": ["dcl", {"name": "siglip", "weight": 0.0}]},
    ]}, "objective")
    loss_fn = registry.build("objective", "weighted_sum", config)
    assert isinstance(loss_fn, WeightedSum) and loss_fn.weights == [1.0, 0.5]
    assert loss_fn.terms[0].temperature == 0.1 and loss_fn.terms[1].labels == ["dcl", "siglip"]
    out = loss_fn(torch.randn(4, 3), torch.randn(4, 3))
    assert set(out.parts) == {"infonce/infonce", "weighted_sum/dcl/dcl", "weighted_sum/siglip/siglip"}
    expected = out.parts["infonce/infonce"] + 0.5 * out.parts["weighted_sum/dcl/dcl"]
    assert torch.allclose(out.loss, expected)


def test_weighted_sum_errors_name_the_path(objectives_plugin):
    registry = get_registry()
    with pytest.raises(ConfigError, match=r"terms\.0\.weight"):
        registry.validate("objective", "weighted_sum", {"terms": [{"name": "dcl", "weight": -1}]}, "objective")
    with pytest.raises(ConfigError, match="terms"):
        registry.validate("objective", "weighted_sum", {"terms": []}, "objective")
    config = WeightedSum.Config(terms=[{"name": "dcl", "temperature": 0}])
    with pytest.raises(ConfigError, match=r"terms\.0\.temperature"):
        WeightedSum.from_config(config, registry=registry)
    config = WeightedSum.Config(terms=[ObjectiveSpec(name="infonc")])
    with pytest.raises(KeyError, match="Did you mean 'infonce'"):
        WeightedSum.from_config(config, registry=registry)
    with pytest.raises(ValueError, match="2 objectives but 1 weights"):
        WeightedSum([InfoNCE(), InfoNCE()], [1.0])
    with pytest.raises(ValueError, match=">= 0"):
        WeightedSum([InfoNCE()], [-1.0])
    with pytest.raises(ValueError, match="distinct"):
        WeightedSum([InfoNCE(), InfoNCE()], labels=["a", "a"])


def test_weighted_sum_in_a_pipeline(tmp_path, graphcl_plugins):
    """Nested terms are validated by load_pipeline like any block, and built from the registry."""

    def doc(objective):
        return {"name": "ws", "task": "graph_cf", "data": {"source": "synthetic_cf", "path": str(tmp_path)},
                "model": {"encoder": {"name": "lightgcn"}, "loss": "bpr",
                          "contrast": {"objective": objective, "views": "cross_layer", "layer": 1}}}

    cfg = load_pipeline(doc({"name": "weighted_sum", "weight": 0.1, "terms": [
        {"name": "infonce", "temperature": 0.2}, {"name": "align_uniform", "weight": 0.5}]}))
    spec = cfg.model.contrast.objective
    assert spec.config.terms[0].config.temperature == 0.2  # resolved by load_pipeline
    loss_fn = spec.build(get_registry())
    assert isinstance(loss_fn, WeightedSum) and spec.weight == 0.1 and loss_fn.weights == [1.0, 0.5]
    with pytest.raises(ConfigError, match=r"terms\.0\.temperature"):
        load_pipeline(doc({"name": "weighted_sum", "terms": [{"name": "infonce", "temperature": -1}]}))
