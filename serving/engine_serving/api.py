"""The HTTP API of ``engine serve``, defined once: pydantic request and response models, and the answer to each
request from a loaded model. :mod:`engine_serving.app` mounts them on FastAPI routes, whose ``/openapi.json`` is
generated from these models.

* ``GET /health`` -> :class:`Health`.
* ``POST /recommend`` with a :class:`RecommendRequest`: ``{"user": id, "k": 10}`` -> the user's top-k unseen items;
  for sequential models also ``{"sequence": [item, ...], "k": 10}`` -> the top-k next items after that sequence
  (its items excluded). ``"exclude_seen": false`` keeps seen items. Answer: :class:`Recommendations`.
* ``POST /match`` (linkage models) with a :class:`MatchRequest`: ``{"record": {field: value, ...}, "k": 10}`` -> the
  record's top-k candidates in the export's right table, best first (:class:`Matches`; ``"matches_only": true``
  keeps those scoring at least the threshold). Values are strings, numbers or null; a missing field is a missing
  value, as in training, but at least one field must be given and unknown fields are refused.

Malformed requests get 400 (bad JSON, wrong types, k out of range, unknown fields), unknown users or items 404;
every error body is an :class:`Error`, ``{"error": "..."}``.
"""

from __future__ import annotations

import math
from http import HTTPStatus
from typing import Any, Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator, model_validator

from engine.errors import DataError

__all__ = ["MAX_K", "MAX_BODY", "RequestError", "RecommendRequest", "MatchRequest", "Recommendations", "Matches",
           "Health", "Error", "health", "recommend", "match", "resolve_recommend", "finish_recommend"]

#: the largest ``k`` a request may ask for
MAX_K = 1000
#: the largest request body, bytes
MAX_BODY = 1 << 20

Id = StrictInt | StrictStr


class RequestError(Exception):
    """A request the model cannot answer: ``status`` (4xx) and a message for the caller."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


def _is_id(value: Any) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


class RecommendRequest(BaseModel):
    """Top-k items for a known user, or (sequential models) for an explicit sequence of items."""

    model_config = ConfigDict(extra="forbid", strict=True)

    user: Id = Field(None, description="A user id the model was trained on (integer or string). Give this or "
                                       "`sequence`.")
    sequence: list[Id] = Field(None, min_length=1, description="Sequential models: item ids, oldest first; the "
                                                               "answer is the next items. Give this or `user`.")
    k: int = Field(10, ge=1, le=MAX_K, description="How many items to return.")
    exclude_seen: bool = Field(True, description="Leave out the user's training items (or the sequence's items).")

    @field_validator("user", mode="before")
    @classmethod
    def _user(cls, value: Any) -> Any:
        if not _is_id(value):
            raise ValueError(f"'user' must be an id (integer or string), got {value!r}")
        return value

    @field_validator("sequence", mode="before")
    @classmethod
    def _sequence(cls, value: Any) -> Any:
        if not isinstance(value, list) or not value or not all(map(_is_id, value)):
            raise ValueError("'sequence' must be a non-empty list of item ids")
        return value

    @model_validator(mode="after")
    def _one_input(self) -> "RecommendRequest":
        if (self.user is None) == (self.sequence is None):
            raise ValueError("give exactly one of 'user' or (sequential models) 'sequence'")
        return self


Value = StrictStr | StrictInt | float | None


class MatchRequest(BaseModel):
    """Candidates in the export's right table for one raw record (linkage models)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    record: dict[str, Value] = Field(description="Field values of the record (strings, numbers or null; a missing "
                                                 "field is a missing value). At least one of the model's fields.")
    k: int = Field(10, ge=1, le=MAX_K, description="How many candidates to return.")
    matches_only: bool = Field(False, description="Keep only candidates scoring at least the model's threshold.")

    @field_validator("record", mode="before")
    @classmethod
    def _record(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            raise ValueError("'record' must be an object of field values, e.g. {\"record\": {\"name\": \"...\"}}")
        for name, v in value.items():
            if v is not None and (isinstance(v, bool) or not isinstance(v, (str, int, float))):
                raise ValueError(f"record field {name!r} must be a string, a number or null (got {v!r})")
        return value


class Recommendations(BaseModel):
    items: list[Id] = Field(description="Item ids, best first (fewer than k when fewer items are left).")
    scores: list[float | None] = Field(description="Their scores, in the same order.")


class Matches(BaseModel):
    ids: list[Id] = Field(description="Ids of right-table records, best first.")
    scores: list[float] = Field(description="Their scores (the cross-encoder's or pair classifier's probability, "
                                            "else the cosine).")
    threshold: float = Field(description="The score from which a candidate is a match (chosen on valid).")


class Health(BaseModel):
    status: Literal["ok"]
    family: Literal["graph", "sequence", "linkage"]
    provider: str = Field(description="The onnxruntime execution provider.")
    index: str = Field(description="How top-k is found: exact, or faiss <kind>.")
    num_users: int | None = Field(None, description="Recommendation models: users known to the model.")
    num_items: int | None = Field(None, description="Recommendation models: items that can be recommended.")
    num_right: int | None = Field(None, description="Linkage models: records of the right table.")
    fields: list[str] | None = Field(None, description="Linkage models: the fields of a record.")
    threshold: float | None = Field(None, description="Linkage models: the match threshold.")


class Error(BaseModel):
    error: str = Field(description="What was wrong with the request, and what to send instead.")


# -- answers ----------------------------------------------------------------------------------------------------
def health(model) -> Health:
    body: dict[str, Any] = {"status": "ok", "family": model.family, "provider": model.provider,
                            "index": model.index_kind}
    if model.family == "linkage":
        body.update(num_right=model.num_right, fields=model.input_fields, threshold=model.threshold)
    else:
        body.update(num_users=model.num_users, num_items=model.num_items)
    return Health(**body)


def _jsonable(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def resolve_recommend(model, request: RecommendRequest) -> tuple[str, Any]:
    """What to score for ``request``: ``("user", internal index)`` or ``("sequence", score columns)``. Raises
    RequestError for a linkage model, a sequence sent to a graph model, or unknown ids (404)."""
    bad = HTTPStatus.BAD_REQUEST
    if model.family == "linkage":
        raise RequestError(bad, "this is a linkage model: POST /match {\"record\": {...}}")
    if request.sequence is not None:
        if model.family != "sequence":
            raise RequestError(bad, "'sequence' needs a sequential model; this one is a graph model: give 'user'")
        try:
            return "sequence", model.item_index_of(request.sequence)
        except DataError as err:
            raise RequestError(HTTPStatus.NOT_FOUND, str(err)) from None
    try:
        return "user", int(model.user_index(pl.Series("user", [request.user]))[0])
    except DataError:
        raise RequestError(HTTPStatus.NOT_FOUND, f"user {request.user!r} is unknown to the model") from None


def score_rows(model, kind: str, inputs: list[Any], k: int, exclude_seen: bool) -> tuple[np.ndarray, np.ndarray]:
    """One scoring run of several resolved requests of the same ``kind``: ``(columns [b, k], scores [b, k])``."""
    if kind == "user":
        return model.recommend(np.asarray(inputs, dtype=np.int64), k, exclude_seen=exclude_seen)
    seqs = model.sequence_inputs(inputs)
    extra = None
    if exclude_seen:
        extra = (np.repeat(np.arange(len(inputs)), [c.size for c in inputs]), np.concatenate(inputs))
    return model.recommend(None, k, exclude_seen=False, item_seq=seqs, extra_seen=extra)


def finish_recommend(model, cols: np.ndarray, vals: np.ndarray) -> Recommendations:
    """The answer of one row of :func:`score_rows`."""
    keep = cols >= 0
    items = model.original_items(cols[keep]).to_list()
    scores = [float(v) if math.isfinite(v) else None for v in vals[keep]]
    return Recommendations.model_construct(items=[_jsonable(i) for i in items], scores=scores)


def recommend(model, request: RecommendRequest) -> Recommendations:
    """The answer to one ``/recommend`` request, scored alone. Raises RequestError."""
    kind, inputs = resolve_recommend(model, request)
    cols, vals = score_rows(model, kind, [inputs], request.k, request.exclude_seen)
    return finish_recommend(model, cols[0], vals[0])


def match(model, request: MatchRequest) -> Matches:
    """The answer to one ``/match`` request (linkage models). Raises RequestError."""
    bad = HTTPStatus.BAD_REQUEST
    if model.family != "linkage":
        raise RequestError(bad, f"/match needs a linkage model; this one is a {model.family} model: POST /recommend")
    fields, record = model.input_fields, request.record
    extra = set(record) - set(fields)
    if extra:
        raise RequestError(bad, f"unknown record field(s): {', '.join(sorted(extra))}; the model's fields: "
                                f"{', '.join(fields)}")
    if not record:
        raise RequestError(bad, f"'record' has no field; the model's fields: {', '.join(fields)}")
    from .linkage import clean_value

    _, cols, scores = model.match({f: [clean_value(record.get(f))] for f in fields}, request.k,
                                  matches_only=request.matches_only)
    ids = model.right_ids.gather(pl.Series(cols, dtype=pl.Int64)).to_list()
    return Matches.model_construct(ids=ids, scores=[float(v) for v in scores], threshold=model.threshold)
