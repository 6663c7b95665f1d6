"""One augmentation drawn at random for each sequence, as CL4SRec and CoSeRec build their views."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor

from engine.components import Component, ComponentConfig

from ._batch import check_batch, uniform
from .crop import Crop
from .insert import Insert
from .mask import Mask
from .reorder import Reorder
from .substitute import Substitute

AugmenterName = Literal["crop", "mask", "reorder", "insert", "substitute"]


class RandomChoice(Component):
    r"""For each sequence, one augmentation drawn uniformly from a list: CL4SRec's views
    (`Xie et al., ICDE 2022 <https://arxiv.org/abs/2010.14395>`_) use crop, mask and reorder; CoSeRec's ``random``
    (`Liu et al., 2021 <https://arxiv.org/abs/2108.06479>`_) adds insert and substitute.

    Every listed augmenter runs on the whole batch (each is vectorised) and each row keeps the view it drew, so the
    random stream, and thus the result for a seeded generator, does not depend on which rows drew what.
    CoSeRec's ``augment_threshold`` (a different list for short sequences) is not implemented.

    Args:
        num_items (int, optional): number of items, needed when ``"mask"`` is listed (mask token ``num_items + 1``).
        augmenters (list[str], optional): names among ``crop``, ``mask``, ``reorder``, ``insert``, ``substitute``.
            (default: :obj:`["crop", "mask", "reorder"]`, CL4SRec)
        eta, gamma, beta, insert_rate, substitute_rate, window: options of :class:`Crop`, :class:`Mask`,
            :class:`Reorder`, :class:`Insert` and :class:`Substitute`, with their defaults.
    """

    name = "random"
    view_kind: ClassVar[str] = "sequence"

    class Config(ComponentConfig):
        augmenters: list[AugmenterName] = Field(
            default_factory=lambda: ["crop", "mask", "reorder"],
            min_length=1,
            description="Augmentations to draw from, one per sequence, uniformly.",
        )
        eta: float = Field(0.2, gt=0.0, le=1.0, description="Crop: fraction of each sequence kept.")
        gamma: float = Field(0.3, gt=0.0, le=1.0, description="Mask: fraction of items masked.")
        beta: float = Field(0.2, gt=0.0, le=1.0, description="Reorder: fraction of each sequence shuffled.")
        insert_rate: float = Field(0.4, gt=0.0, le=1.0, description="Insert: fraction of positions with an insert.")
        substitute_rate: float = Field(0.1, gt=0.0, le=1.0, description="Substitute: fraction of items replaced.")
        window: int | None = Field(1, ge=1, description="Insert/substitute: co-occurrence window of the correlation.")

    def __init__(
        self,
        num_items: int | None = None,
        augmenters: list[str] | tuple[str, ...] = ("crop", "mask", "reorder"),
        eta: float = 0.2,
        gamma: float = 0.3,
        beta: float = 0.2,
        insert_rate: float = 0.4,
        substitute_rate: float = 0.1,
        window: int | None = 1,
    ):
        if not augmenters:
            raise ValueError("augmenters must name at least one augmentation")
        if "mask" in augmenters and num_items is None:
            raise ValueError("num_items is required when 'mask' is listed (the mask token is num_items + 1)")
        build = {
            "crop": lambda: Crop(eta=eta),
            "mask": lambda: Mask(num_items=num_items, gamma=gamma),
            "reorder": lambda: Reorder(beta=beta),
            "insert": lambda: Insert(rate=insert_rate, window=window),
            "substitute": lambda: Substitute(rate=substitute_rate, window=window),
        }
        unknown = [a for a in augmenters if a not in build]
        if unknown:
            raise ValueError(f"unknown augmenters {unknown}; known: {', '.join(build)}")
        self.augmenters = [build[a]() for a in augmenters]

    def fit(self, train_sequences: list[Tensor], num_items: int) -> None:
        """Fit the listed augmenters that need item statistics (insert, substitute), sharing one fit per window."""
        fitted = None
        for aug in self.augmenters:
            if hasattr(aug, "fit"):
                if fitted is None:
                    aug.fit(train_sequences, num_items)
                    fitted = aug.correlation
                else:
                    aug.correlation = fitted  # same window for all: one correlation serves every augmenter

    def __call__(
        self, seqs: Tensor, lengths: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Each row of ``seqs`` ``[B, L]`` augmented by one augmenter drawn uniformly, and the new lengths."""
        check_batch(seqs, lengths)
        B = seqs.size(0)
        pick = torch.floor(uniform((B,), generator, seqs.device) * len(self.augmenters)).long()
        pick = pick.clamp(max=len(self.augmenters) - 1)
        out, out_lengths = seqs.clone(), lengths.clone()
        for k, aug in enumerate(self.augmenters):
            view, view_lengths = aug(seqs, lengths, generator)
            chosen = pick == k
            out = torch.where(chosen.unsqueeze(1), view, out)
            out_lengths = torch.where(chosen, view_lengths, out_lengths)
        return out, out_lengths

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({', '.join(repr(a) for a in self.augmenters)})"
