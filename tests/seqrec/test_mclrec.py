"""MCLRec's pieces against plain references: the learnable augmenter, the contrastive regulariser, the
learned-view loss; and in the ``seqrec`` task: its optimiser groups and meta steps, its config errors, resume."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from click.testing import CliRunner
from pydantic import ValidationError

from engine.errors import ConfigError
from engine_objectives import InfoNCE
from engine_seqrec.augment import LearnedMLP
from engine_seqrec.mclrec import learned_view_loss, margin_regularizer
from tests.seqrec.test_task import make_sequences, make_task, pipeline_doc


def reference_margin(a, b):
    """Row by row in float64: relu(pos - hardest negative) averaged over rows, plus relu(max(pos, hardest) - neg)
    averaged over every (row, negative)."""
    z = torch.cat([a, b]).double()
    n = a.shape[0]
    first, second, count = 0.0, 0.0, 0
    for r in range(2 * n):
        partner = (r + n) % (2 * n)
        pos = float(z[r] @ z[partner])
        negs = [float(z[r] @ z[k]) for k in range(2 * n) if k not in (r, partner)]
        hardest = max(negs)
        first += max(0.0, pos - hardest)
        for neg in negs:
            second += max(0.0, max(pos, hardest) - neg)
            count += 1
    return first / (2 * n) + second / count


@pytest.mark.parametrize("batch_size", [2, 3, 9])
def test_margin_regularizer_matches_reference(batch_size):
    a, b = torch.randn(batch_size, 5), torch.randn(batch_size, 5)
    got = margin_regularizer(a.double(), b.double())
    assert got.item() == pytest.approx(reference_margin(a, b), rel=1e-10, abs=1e-12)


def test_margin_regularizer_by_hand():
    # a = [(1, 0), (0, 0)], b = [(2, 0), (0, 1)]: rows z = a1, a2, b1, b2 with dot products
    # a1: pos a1.b1 = 2, negatives a2 (0), b2 (0): hardest 0 -> relu(2 - 0) = 2; relu(2 - 0) twice = 4
    # a2: pos a2.b2 = 0, negatives 0, 0: 0; upper 0 -> 0
    # b1: pos 2, negatives b1.a2 = 0, b1.b2 = 0 -> 2; 4
    # b2: pos 0, negatives b2.a1 = 0, b2.b1 = 0 -> 0; 0
    # R = (2 + 2) / 4 + (4 + 4) / 8 = 2
    a = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    b = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    assert margin_regularizer(a, b).item() == pytest.approx(2.0)
    assert margin_regularizer(a[:1], b[:1]).item() == 0.0  # no negative with one row


def test_learned_view_loss_with_identity_augmenters():
    """With identity augmenters the three pairs are (h1, h2), (h2, h1), (h1, h2): NT-Xent is symmetric, so the loss
    is three times one term (plus three regularisers)."""
    h1, h2 = torch.randn(6, 4), torch.randn(6, 4)
    objective = InfoNCE(temperature=1.0, normalize=False, intra_view_negatives=True)
    identity = torch.nn.Identity()
    one = objective(h1, h2).loss
    assert learned_view_loss(objective, h1, h2, identity, identity, 0.0).item() == pytest.approx(3 * one.item(),
                                                                                                  rel=1e-6)
    with_reg = learned_view_loss(objective, h1, h2, identity, identity, 0.5)
    assert with_reg.item() == pytest.approx(3 * one.item() + 0.5 * 3 * margin_regularizer(h1, h2).item(), rel=1e-6)


def test_learned_view_loss_uses_the_other_views_augmenter():
    h1, h2 = torch.randn(5, 3), torch.randn(5, 3)
    objective = InfoNCE(temperature=0.5, normalize=False)
    g1, g2 = LearnedMLP(3), LearnedMLP(3)
    expected = objective(h1, g2(h2)).loss + objective(h2, g1(h1)).loss + objective(g1(h1), g2(h2)).loss
    assert torch.allclose(learned_view_loss(objective, h1, h2, g1, g2, 0.0), expected)


def test_learned_mlp_layers_and_shapes():
    mlp = LearnedMLP(8, hidden_dim=16, num_layers=3, activation="gelu", dropout=0.1)
    linears = [m for m in mlp.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(8, 16), (16, 16), (16, 8)]
    assert mlp(torch.randn(4, 8)).shape == (4, 8)
    bottleneck = LearnedMLP(64, hidden_dims=[32, 16], num_layers=7, activation="gelu")  # the released MCLRec shape
    linears = [m for m in bottleneck.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 32), (32, 16), (16, 64)]
    assert sum(isinstance(m, torch.nn.GELU) for m in bottleneck.modules()) == 2
    single = LearnedMLP(4, num_layers=1)
    assert len(single.mlp) == 1 and isinstance(single.mlp[0], torch.nn.Linear)
    assert LearnedMLP.view_kind == "representation" and LearnedMLP.name == "learned_mlp"


def test_learned_mlp_bad_input():
    with pytest.raises(ValueError, match=r"expected representations \[B, 8\], got \[4, 6\]"):
        LearnedMLP(8)(torch.randn(4, 6))
    with pytest.raises(ValidationError):
        LearnedMLP(8, num_layers=0)
    with pytest.raises(ValidationError):
        LearnedMLP(8, activation="swish")
    with pytest.raises(ValueError, match="dim must be >= 1"):
        LearnedMLP(0)
    with pytest.raises(ValueError, match="hidden_dims must all be >= 1"):
        LearnedMLP(8, hidden_dims=[4, 0])


MCLREC = {"contrast": {"views": "augment", "augmenters": ["crop", "mask"],
                       "objective": {"name": "infonce", "temperature": 1.0, "normalize": False,
                                     "intra_view_negatives": True, "weight": 0.1},
                       "learned": {"augmenter": {"name": "learned_mlp", "hidden_dim": 8}, "margin_weight": 0.1,
                                   "lr": 0.01}}}


def test_mclrec_meta_steps_update_their_own_groups(tmp_path, seqrec_plugins):
    task, model, _ = make_task(tmp_path, MCLREC)
    groups = task.parameter_groups(model)
    assert set(groups) == {"model", "augmenter"} and groups["augmenter"]["lr"] == 0.01
    ids = [{id(p) for p in g["params"]} for g in groups.values()]
    assert not ids[0] & ids[1] and ids[0] | ids[1] == {id(p) for p in model.parameters()}
    assert ids[1] == {id(p) for p in model.learned_views.parameters()}
    batch = next(iter(task.train_batches(1, torch.Generator().manual_seed(0))))
    steps = task.training_steps(model, batch)
    order = []
    for group, out in steps:
        order.append(group)
        model.zero_grad(set_to_none=True)
        out.loss.backward()
        encoder_grads = [p.grad for p in model.encoder.parameters()]
        augmenter_grads = [p.grad for p in model.learned_views.parameters()]
        assert all(g is not None for g in augmenter_grads)
        if group == "augmenter":  # the learned-view loss alone, with the encoder's forward outside the graph
            assert set(out.parts) == {"learned_views"} and all(g is None for g in encoder_grads)
        else:
            assert {"contrast", "learned_views", "rec/ce"} <= set(out.parts)
    assert order == ["model", "augmenter", "model"]
    joint = {**MCLREC["contrast"], "learned": {**MCLREC["contrast"]["learned"], "meta": False}}
    task, model, _ = make_task(tmp_path, {"contrast": joint})
    assert set(task.parameter_groups(model)) == {"model"}
    assert [g for g, _ in task.training_steps(model, batch)] == ["model"]


def test_mclrec_config_errors(tmp_path, seqrec_plugins):
    from engine.config import load_pipeline

    bad = {"contrast": {"views": "dropout", "learned": {}}}
    with pytest.raises(ConfigError, match="learned views .* set views: augment"):
        load_pipeline(pipeline_doc(tmp_path, make_sequences(), bad))
    crop_as_learned = {"contrast": {**MCLREC["contrast"], "learned": {"augmenter": "crop"}}}
    with pytest.raises(ConfigError, match="not a learnable representation augmenter"):
        make_task(tmp_path, crop_as_learned)


def test_mclrec_resume_restores_both_optimisers(tmp_path, seqrec_plugins):
    """2 epochs then --resume to 3 equals 3 straight: both optimisers' states are in the checkpoint."""
    from engine.cli import cli

    def run(directory, *extra):
        directory.mkdir(exist_ok=True)
        doc = pipeline_doc(directory, make_sequences(), MCLREC, epochs=3, monitor="ndcg@5",
                           checkpoint_dir=str(directory / "ck"))
        path = directory / "pipeline.yaml"
        path.write_text(yaml.safe_dump(doc))
        out = directory / "m.json"
        result = CliRunner().invoke(cli, ["run", str(path), "--metrics-out", str(out), *extra])
        assert result.exit_code == 0, (result.output, result.exception)
        return json.loads(out.read_text())

    straight = run(tmp_path / "a")
    run(tmp_path / "b", "--set", "train.epochs=2")
    state = torch.load(tmp_path / "b" / "ck" / "unit" / "last.pt", weights_only=False)
    assert set(state["optimizers"]) == {"model", "augmenter"}
    resumed = run(tmp_path / "b", "--resume")
    assert resumed["epochs"] == 3
    assert resumed["ndcg@5"] == pytest.approx(straight["ndcg@5"], abs=1e-6)
