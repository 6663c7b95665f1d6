"""The typed ``model:`` block of the ``seqrec`` task (see :mod:`engine_seqrec.task` for what each part does)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from engine.components import ComponentConfig
from engine.config import AugmenterSpec, EncoderSpec, ObjectiveSpec
from engine.content import ContentConfig

__all__ = ["SeqRecModelConfig", "ContrastConfig", "LearnedViewsConfig"]


class LearnedViewsConfig(ComponentConfig):
    """MCLRec's learned views: ``model.contrast.learned``."""

    augmenter: AugmenterSpec = Field(default_factory=lambda: AugmenterSpec(name="learned_mlp"),
                                     description="a representation augmenter; two are built, one per view")
    objective: ObjectiveSpec = Field(
        default_factory=lambda: ObjectiveSpec(name="infonce", temperature=1.0, normalize=False,
                                              intra_view_negatives=True, weight=0.1),
        description="the objective of the learned-view loss; its `weight` is beta")
    margin_weight: float = Field(0.1, ge=0, description="weight mu of MCLRec's contrastive regulariser")
    meta: bool = Field(True, description="three updates per batch (encoder, augmenters, encoder) as MCLRec; "
                                         "false: one joint update of everything")
    lr: float | None = Field(None, gt=0, description="learning rate of the augmenters (default: train.lr)")


class ContrastConfig(ComponentConfig):
    objective: ObjectiveSpec = Field(default_factory=lambda: ObjectiveSpec(name="infonce", weight=0.1),
                                     description="the contrastive objective on [B, D] pairs; its `weight` is λ")
    views: Literal["augment", "dropout", "supervised"] = Field(
        "augment", description="augment: CL4SRec; dropout: DuoRec unsupervised; supervised: DuoRec same-target")
    augmenters: list[AugmenterSpec] = Field(default_factory=list,
                                            description="views: augment draws each view's augmenter from this list")
    learned: LearnedViewsConfig | None = Field(None, description="MCLRec's learned views (needs views: augment)")

    @model_validator(mode="after")
    def _augment_needs_augmenters(self) -> "ContrastConfig":
        if self.views == "augment" and not self.augmenters:
            raise ValueError("views 'augment' needs at least one augmenter in contrast.augmenters "
                             "(CL4SRec: crop, mask, reorder)")
        if self.learned is not None and self.views != "augment":
            raise ValueError(f"learned views (MCLRec) act on the two augmented views: set views: augment "
                             f"(got {self.views!r})")
        return self


class SeqRecModelConfig(ComponentConfig):
    encoder: EncoderSpec = Field(default_factory=lambda: EncoderSpec(name="sasrec"))
    max_len: int = Field(50, ge=1, description="keep the most recent max_len items of every input sequence")
    loss: Literal["ce", "bce", "bpr"] = Field("ce", description="next-item loss (see engine_seqrec.losses)")
    num_negatives: int = Field(1, ge=1, description="sampled negatives per position (bce, bpr)")
    train_positions: Literal["all", "last"] = Field(
        "all", description="train every non-padded position (SASRec, CL4SRec) or the last one only (RecBole)")
    prefix_augmentation: bool = Field(False, description="every prefix of a training sequence is an example "
                                                         "(RecBole, DuoRec; pair with train_positions: last)")
    mask_history: bool = Field(True, description="evaluation: never recommend an item of the history "
                                                 "(ICLRec/MCLRec code); RecBole does not mask")
    contrast: ContrastConfig | None = None
    content: ContentConfig | None = Field(None, description="item side information (needs data.item_features)")
