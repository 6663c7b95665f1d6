"""The linkage task's cross-encoder hooks (``model.cross_encoder``): building it, its own optimiser, its updates.

Mixed into :class:`engine_linkage.task.LinkageTask`, which provides ``model_cfg``, ``data``, ``values``,
``training_step``, ``_mined_per_record`` and the current ``_epoch``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from engine.components import ObjectiveOutput
from engine.errors import ConfigError

from .cross_encoder import CrossEncoder, cross_fields, serialize_records


class CrossEncoderHooks:
    """Ditto's retrieve-then-rerank on top of the bi-encoder: a pretrained transformer scores each candidate pair."""

    def build_cross_encoder(self, model: torch.nn.Module) -> None:
        """Attach ``model.cross`` and serialise every record once (``self.texts``, by side and row)."""
        ce, d = self.model_cfg.cross_encoder, self.data
        if not (d.pairs["train"].label == 0).any() and self._mined_per_record == 0:
            raise ConfigError("model.cross_encoder: the train pairs hold no non-match (FEBRL-style true links), "
                              "so it would learn that every pair matches; set model.cross_encoder.hard_negatives")
        model.cross = CrossEncoder(ce.model, ce.max_length)
        self.cross_fields = cross_fields(d.fields, ce.fields)
        self.texts = {side: serialize_records({f: self.values(table, f) for f in self.cross_fields})
                      for side, table in (("left", d.left), ("right", d.right_table))}

    def parameter_groups(self, model) -> dict[str, dict[str, Any]]:
        """With a cross-encoder, it has its own optimiser (``cross``: a fine-tuning learning rate)."""
        ce = self.model_cfg.cross_encoder
        if ce is None:
            return super().parameter_groups(model)
        own = {id(p) for p in model.cross.parameters()}
        rest = [p for p in model.parameters() if p.requires_grad and id(p) not in own]
        return {"model": {"params": rest},
                "cross": {"params": list(model.cross.parameters()), "lr": ce.lr, "weight_decay": ce.weight_decay}}

    def training_steps(self, model, batch):
        """The bi-encoder's update, then (in the cross-encoder's first ``epochs`` epochs) one cross-encoder update
        per ``batch_size`` of the batch's labelled pairs."""
        yield "model", self.training_step(model, batch)
        ce, clf = self.model_cfg.cross_encoder, batch[2]
        if ce is None or clf is None or self._epoch > ce.epochs:
            return
        for start in range(0, clf[0].shape[0], ce.batch_size):
            li, ri, y = (a[start:start + ce.batch_size] for a in clf)
            logits = self._cross_logits(model, li, ri)
            bce = F.binary_cross_entropy_with_logits(logits, torch.as_tensor(y, dtype=torch.float32,
                                                                             device=logits.device))
            yield "cross", ObjectiveOutput(bce, {"bce": bce})

    def _cross_logits(self, model, lrows, rrows) -> torch.Tensor:
        return model.cross.score([self.texts["left"][i] for i in lrows], [self.texts["right"][i] for i in rrows])
