"""The ``model:`` block of a ``linkage`` pipeline, parsed and validated once at the edge (see
:mod:`engine_linkage.task` for what each part does)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from engine.components import ComponentConfig
from engine.config import EncoderSpec, ObjectiveSpec

from .cross_encoder import CrossEncoderConfig

__all__ = ["LinkageModelConfig", "RerankConfig", "IntraModalConfig", "CrossEncoderConfig"]


class RerankConfig(ComponentConfig):
    weight: float = Field(1.0, ge=0, description="weight of the classifier's cross-entropy in the total loss")
    hidden: int = Field(64, ge=1, description="width of the classifier's hidden layers")
    jaccard: bool = Field(True, description="n-gram Jaccard similarity of each id field as a feature")
    vector_features: bool = Field(False, description="also |u - v| and u * v of the record vectors as features")
    hard_negatives: int = Field(0, ge=0, description="negatives per train record mined from the blocking index "
                                                     "each epoch (neighbours that are not labelled matches)")
    lr: float | None = Field(None, gt=0, description="the classifier's own optimiser and learning rate (its loss then "
                                                     "trains only the classifier, with batch_size pairs per step); "
                                                     "null: one optimiser with the encoder at train.lr, one "
                                                     "classifier step per contrastive batch")
    batch_size: int = Field(64, ge=1, description="labelled pairs per classifier step with its own optimiser (lr)")
    cosine_fallback: bool = Field(False, description="score pairs by the record cosine instead when it reaches a "
                                                     "higher F1 on valid than the classifier (checked at every "
                                                     "evaluation; the choice is reported and exported)")
    learned_features: bool = Field(True, description="the trained encoder's field and record cosines as features; "
                                                      "false: only weight-free ones (presence, jaccard, tfidf), "
                                                      "which generalise better from few labelled pairs")
    tfidf: list[Literal["word", "char"]] = Field(
        default_factory=list, description="untrained TF-IDF cosines as features (word unigrams, char 3-grams; idf "
                                          "fitted on both tables): of the whole record and of each text field")
    tfidf_fallback: bool = Field(False, description="score pairs by the untrained TF-IDF cosine of the whole record "
                                                     "(the best of rerank.tfidf's analysers) instead when it reaches "
                                                     "a higher F1 on valid than the classifier: never below the "
                                                     "baseline a user gets without training (chosen on valid, "
                                                     "reported and exported)")
    spans: bool = Field(False, description="typed-span features: product codes shared or contained, number "
                                           "overlap, relative difference of each numeric field "
                                           "(engine_linkage.spans; no weights)")

    @model_validator(mode="after")
    def _vector_features_are_learned(self):
        if self.vector_features and not self.learned_features:
            raise ValueError("vector_features are learned features: set learned_features: true or drop them")
        if self.tfidf_fallback and not self.tfidf:
            raise ValueError("tfidf_fallback scores by a TF-IDF cosine: set tfidf (e.g. [word, char])")
        return self


class IntraModalConfig(ComponentConfig):
    weight: float = Field(1.0, ge=0, description="weight of the intra-modal terms in the total loss")
    fields: list[str] | None = Field(None, min_length=1, description="the fields whose own vectors are contrasted "
                                                                     "across matched pairs; default: every field")


class LinkageModelConfig(ComponentConfig):
    dim: int = Field(128, ge=2, description="record and field vector dimension")
    encoders: dict[str, EncoderSpec | list[EncoderSpec]] = Field(
        default_factory=lambda: {"text": EncoderSpec(name="char_ngram")},
        description="modality (text, categorical, numeric, date, image) or field name -> field encoder, or a list of "
                    "encoders (the field is encoded by each)")
    fusion: Literal["mean", "attention", "concat"] = Field("attention", description="fields -> record vector")
    objective: ObjectiveSpec = Field(
        default_factory=lambda: ObjectiveSpec(name="infonce", symmetric=True, temperature=0.05),
        description="contrastive objective over matching pairs; its `weight` scales it")
    intra_modal: IntraModalConfig | None = Field(
        None, description="also the objective between the left and right vectors of each field of the matched pairs")
    rerank: RerankConfig | None = Field(default_factory=RerankConfig,
                                        description="a pair classifier re-scores candidate pairs; null: cosine")
    cross_encoder: CrossEncoderConfig | None = Field(
        None, description="a fine-tuned transformer scores the candidate pairs (Ditto-style); it replaces the pair "
                          "classifier's score")
    blocking_k: int = Field(10, ge=1, description="candidates per left record in blocking")
    blocking: Literal["vectors", "tfidf", "both"] = Field(
        "vectors", description="blocking index: the record vectors (faiss), the TF-IDF cosine of the whole record "
                               "(blocking_tfidf; exact, sparse, row chunks), or the union of both (k of each)")
    blocking_tfidf: Literal["word", "char"] = Field("char", description="the TF-IDF analyser of blocking: tfidf")
    eval_batch_size: int = Field(1024, ge=1, description="records / pairs scored at once")
    matches_out: str | None = Field(None, description="write the test matches here (parquet)")
    whole_record: bool = Field(False, description="add a text field `_record`: the record's values joined, in "
                                                  "field order (robust to values in the wrong attribute: Dirty sets)")
