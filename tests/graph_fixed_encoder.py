"""A graph encoder that returns a hand-built encoding, shared by the graph-task tests."""

from __future__ import annotations

import torch


class FixedEncoder(torch.nn.Module):
    """Returns a given encoding whatever the graph and the item input (a hand-built encoder output)."""

    def __init__(self, encoding) -> None:
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.encoding = encoding

    def forward(self, graph, **kwargs):
        return self.encoding
