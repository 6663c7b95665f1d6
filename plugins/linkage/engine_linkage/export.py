"""The exported graph of the record encoder: featurised record -> unit-norm record vector.

``torch.onnx.export`` names the graph inputs after ``forward``'s parameters, so there is one wrapper per input
combination (id fields only, value fields only, both).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["record_encoder_export"]


class _Both(nn.Module):
    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, ids: Tensor, values: Tensor) -> Tensor:
        return self.encoder(ids, values)


class _Ids(_Both):
    def forward(self, ids: Tensor) -> Tensor:  # type: ignore[override]
        return self.encoder(ids, torch.zeros(ids.shape[0], 0, dtype=torch.float32))


class _Values(_Both):
    def forward(self, values: Tensor) -> Tensor:  # type: ignore[override]
        return self.encoder(torch.zeros(values.shape[0], 0, dtype=torch.long), values)


def record_encoder_export(encoder: nn.Module, slots) -> tuple[nn.Module, tuple[str, ...]]:
    kinds = {s.kind for s in slots}
    if kinds == {"ids"}:
        return _Ids(encoder).eval(), ("ids",)
    if kinds == {"values"}:
        return _Values(encoder).eval(), ("values",)
    return _Both(encoder).eval(), ("ids", "values")
