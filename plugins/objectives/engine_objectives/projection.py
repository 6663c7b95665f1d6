"""SimCLR's projection head: a small MLP applied to embeddings before a contrastive loss."""

from __future__ import annotations

from torch import Tensor, nn


class ProjectionHead(nn.Module):
    r"""A two-layer MLP :math:`g(h) = W_2 \, \mathrm{ReLU}(W_1 h + b_1) + b_2` shared by both views.

    SimCLR computes its loss on :math:`g(h)` and keeps :math:`h` as the representation: the head absorbs the
    invariances the loss imposes. Related: :class:`~engine_objectives.InfoNCE` (``projection_dim``).
    Reference: Chen et al., `A Simple Framework for Contrastive Learning of Visual Representations
    <https://arxiv.org/abs/2002.05709>`_ (ICML 2020), section 2.1.

    Args:
        output_dim (int): size of :math:`g(h)`.
        hidden_dim (int, optional): size of the hidden layer. (default: :obj:`output_dim`)
        input_dim (int, optional): size of :math:`h`; when :obj:`None` the first layer is a
            :class:`torch.nn.LazyLinear` that takes it from the first batch. (default: :obj:`None`)

    Shapes:
        - **input:** :math:`(*, D)`
        - **output:** :math:`(*, \text{output\_dim})`
    """

    def __init__(self, output_dim: int, hidden_dim: int | None = None, input_dim: int | None = None) -> None:
        super().__init__()
        hidden = output_dim if hidden_dim is None else hidden_dim
        self.input_dim, self.hidden_dim, self.output_dim = input_dim, hidden, output_dim
        first = nn.LazyLinear(hidden) if input_dim is None else nn.Linear(input_dim, hidden)
        self.net = nn.Sequential(first, nn.ReLU(), nn.Linear(hidden, output_dim))

    def reset_parameters(self) -> None:
        for layer in self.net:
            if hasattr(layer, "reset_parameters"):  # a LazyLinear not yet materialised skips itself
                layer.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        if self.input_dim is not None and x.shape[-1] != self.input_dim:
            raise ValueError(f"ProjectionHead: expected embeddings of dimension {self.input_dim}, got "
                             f"{list(x.shape)}; set projection_input_dim to the encoder's output size")
        return self.net(x)

    def extra_repr(self) -> str:
        return f"input_dim={self.input_dim}, hidden_dim={self.hidden_dim}, output_dim={self.output_dim}"
