import pytest
import torch
from pydantic import ValidationError

from engine_objectives import InfoNCE, ProjectionHead


def test_projection_head_is_linear_relu_linear():
    head = ProjectionHead(3, hidden_dim=5, input_dim=4).double()
    x = torch.randn(6, 4, dtype=torch.float64)
    first, _, second = head.net
    expected = torch.relu(x @ first.weight.T + first.bias) @ second.weight.T + second.bias
    assert torch.allclose(head(x), expected, rtol=1e-12)
    assert head(x).shape == (6, 3) and "hidden_dim=5" in repr(head)
    with pytest.raises(ValueError, match="dimension 4"):
        head(torch.randn(6, 7, dtype=torch.float64))


def test_lazy_head_takes_its_input_size_from_the_first_batch():
    head = ProjectionHead(8)
    assert head(torch.randn(3, 5)).shape == (3, 8) and head.net[0].weight.shape == (8, 5)
    head.reset_parameters()


@pytest.mark.parametrize("symmetric,intra", [(False, False), (True, False), (False, True)])
def test_infonce_with_projection_is_infonce_of_the_projected_inputs(symmetric, intra):
    loss_fn = InfoNCE(temperature=0.3, symmetric=symmetric, intra_view_negatives=intra, projection_dim=3,
                      projection_hidden_dim=6, projection_input_dim=4).double()
    anchor, positive = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    plain = InfoNCE(temperature=0.3, symmetric=symmetric, intra_view_negatives=intra)
    expected = plain(loss_fn.projection(anchor), loss_fn.projection(positive)).loss
    assert torch.allclose(loss_fn(anchor, positive).loss, expected, rtol=1e-12)
    loss_fn(anchor, positive).loss.backward()
    names = {n for n, _ in loss_fn.named_parameters()}
    assert names == {"projection.net.0.weight", "projection.net.0.bias", "projection.net.2.weight",
                     "projection.net.2.bias"}
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in loss_fn.parameters())


def test_infonce_projection_gradcheck():
    loss_fn = InfoNCE(temperature=0.5, projection_dim=2, projection_input_dim=3).double()
    anchor = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    positive = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, p: loss_fn(a, p).loss, (anchor, positive), fast_mode=True)


def test_infonce_projection_config_keeps_the_old_defaults():
    assert InfoNCE.Config().projection_dim is None and InfoNCE().projection is None
    assert "projection_dim" not in InfoNCE().get_config_dict()
    loss_fn = InfoNCE.from_config(InfoNCE.Config(projection_dim=16))
    config = loss_fn.get_config_dict()
    assert config["projection_dim"] == 16 and config["projection_hidden_dim"] == 16
    assert loss_fn(torch.randn(4, 7), torch.randn(4, 7)).loss.isfinite()
    with pytest.raises(ValidationError):
        InfoNCE.Config(projection_dim=0)
    with pytest.raises(ValueError, match="need projection_dim"):
        InfoNCE(projection_hidden_dim=4)
