"""MCLRec's learnable model augmenter: an MLP that maps a sequence representation to another view of it."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field
from torch import Tensor, nn

from engine.components import Component, ComponentConfig

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


class LearnedMLP(nn.Module, Component):
    r"""A learnable augmenter from `"Meta-optimized Contrastive Learning for Sequential Recommendation"
    <https://arxiv.org/abs/2304.07763>`_ (Qin et al., SIGIR 2023, MCLRec).

    It acts on representations, not on item ids: :math:`\tilde h = \mathrm{MLP}(h)`, with ``num_layers`` linear
    layers ``D -> hidden_dim -> ... -> D`` (or ``D -> hidden_dims[0] -> ... -> D``: the released MCLRec code uses
    a bottleneck, ``hidden_dims: [32, 16]`` at ``D = 64``) and the activation between them. The ``seqrec`` task applies two of them
    (one per stochastic view) and trains them by meta-optimisation: see ``model.contrast.learned``.

    Args:
        dim (int): the representation size ``D`` (from the encoder).
        hidden_dim (int, optional): width of the hidden layers; ``D`` when unset. (default: :obj:`None`)
        num_layers (int, optional): number of linear layers, >= 1. (default: :obj:`2`)
        hidden_dims (list[int], optional): the hidden widths in order; when given, it sets the number of layers
            (``len(hidden_dims) + 1``) and ``hidden_dim`` / ``num_layers`` are ignored. (default: :obj:`None`)
        activation (str, optional): ``relu``, ``gelu`` or ``tanh``. (default: :obj:`"relu"`)
        dropout (float, optional): dropout after each hidden activation. (default: :obj:`0.0`)

    Shapes:
        - **input:** :math:`(B, D)`
        - **output:** :math:`(B, D)`
    """

    name = "learned_mlp"
    view_kind: ClassVar[str] = "representation"

    class Config(ComponentConfig):
        hidden_dim: int | None = Field(None, ge=1, description="hidden width (default: the representation size)")
        num_layers: int = Field(2, ge=1, description="number of linear layers")
        hidden_dims: list[int] | None = Field(None, description="hidden widths in order (sets the layer count; "
                                                                "overrides hidden_dim and num_layers)")
        activation: Literal["relu", "gelu", "tanh"] = Field("relu", description="activation between layers")
        dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout after each hidden activation")

    def __init__(self, dim: int, hidden_dim: int | None = None, num_layers: int = 2, activation: str = "relu",
                 dropout: float = 0.0, hidden_dims: list[int] | None = None) -> None:
        super().__init__()
        config = self.Config(hidden_dim=hidden_dim, num_layers=num_layers, activation=activation, dropout=dropout,
                             hidden_dims=hidden_dims)
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if config.hidden_dims is not None and any(w < 1 for w in config.hidden_dims):
            raise ValueError(f"hidden_dims must all be >= 1, got {config.hidden_dims}")
        hidden = config.hidden_dims if config.hidden_dims is not None else \
            [config.hidden_dim or dim] * (config.num_layers - 1)
        sizes = [dim, *hidden, dim]
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
            layers.append(nn.Linear(n_in, n_out))
            if i < len(sizes) - 2:
                layers.append(_ACTIVATIONS[config.activation]())
                if config.dropout:
                    layers.append(nn.Dropout(config.dropout))
        self.mlp = nn.Sequential(*layers)
        self.dim = dim

    def forward(self, h: Tensor) -> Tensor:
        if h.dim() != 2 or h.shape[1] != self.dim:
            raise ValueError(f"learned_mlp: expected representations [B, {self.dim}], got {list(h.shape)}")
        return self.mlp(h)
