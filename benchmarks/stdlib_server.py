"""The standard-library HTTP server ``engine serve`` ran before FastAPI/uvicorn (``serving/engine_serving/server.py``
until it was removed), kept here unchanged but for this paragraph and its imports, only so that
``benchmarks/serve_load.py --servers stdlib,...`` can measure it beside the new one. Not part of the package.

It answered, as the FastAPI app does:

* ``GET /health`` -> ``{"status": "ok", "family", "provider", "num_users", "num_items"}``
* ``POST /recommend`` with a JSON object:
  ``{"user": id, "k": 10}`` -> the user's top-k unseen items; for sequential models also
  ``{"sequence": [item, ...], "k": 10}`` -> the top-k next items after that sequence (its items excluded).
  Optional ``"exclude_seen": false`` keeps seen items. Answer: ``{"items": [...], "scores": [...]}``.
* ``POST /match`` (linkage models) with ``{"record": {field: value, ...}, "k": 10}`` -> the record's top-k
  candidates in the export's right table, best first: ``{"ids": [...], "scores": [...], "threshold": t}``
  (``"matches_only": true`` keeps those scoring at least ``t``). Values are strings, numbers or null; a missing
  field is a missing value, as in training, but at least one field must be given and unknown fields are refused.

Malformed requests get 400 (bad JSON, wrong types, k out of range), unknown users or items 404, unknown routes 404,
other methods 405, bodies over 1 MiB 413; every error body is ``{"error": "..."}``. It binds 127.0.0.1 by default.
"""

from __future__ import annotations

import json
import logging
import math
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import polars as pl

from engine.errors import DataError

from engine_serving.model import ExportedModel

__all__ = ["make_server", "recommend", "match", "RequestError", "MAX_K"]

log = logging.getLogger("engine.serving")

MAX_K = 1000
MAX_BODY = 1 << 20


class RequestError(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


def _jsonable(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _k(request: dict[str, Any]) -> int:
    k = request.get("k", 10)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"'k' must be an integer in [1, {MAX_K}] (got {k!r})")
    return k


def _fields(request: Any, allowed: set[str]) -> dict[str, Any]:
    """``request`` checked to be a JSON object with no field outside ``allowed``."""
    if not isinstance(request, dict):
        raise RequestError(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
    unknown = set(request) - allowed
    if unknown:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"unknown field(s): {', '.join(sorted(unknown))}")
    return request


def _flag(request: dict[str, Any], name: str, default: bool) -> bool:
    value = request.get(name, default)
    if not isinstance(value, bool):
        raise RequestError(HTTPStatus.BAD_REQUEST, f"'{name}' must be true or false (got {value!r})")
    return value


def recommend(model: ExportedModel, request: Any) -> dict[str, Any]:
    """The answer to one ``/recommend`` body (already parsed from JSON). Raises RequestError."""
    bad = HTTPStatus.BAD_REQUEST
    if model.family == "linkage":
        raise RequestError(bad, "this is a linkage model: POST /match {\"record\": {...}}")
    request = _fields(request, {"user", "sequence", "k", "exclude_seen"})
    k = _k(request)
    exclude = _flag(request, "exclude_seen", True)
    has_user, has_seq = "user" in request, "sequence" in request
    if has_user == has_seq:
        want = "'user' or 'sequence'" if model.family == "sequence" else "'user'"
        raise RequestError(bad, f"give exactly one of {want}")
    if has_seq:
        if model.family != "sequence":
            raise RequestError(bad, "'sequence' needs a sequential model; this one is a graph model: give 'user'")
        seq = request["sequence"]
        if not isinstance(seq, list) or not seq or not all(isinstance(i, (int, str)) and not isinstance(i, bool)
                                                           for i in seq):
            raise RequestError(bad, "'sequence' must be a non-empty list of item ids")
        try:
            columns = model.item_index_of(seq)
        except DataError as err:
            raise RequestError(HTTPStatus.NOT_FOUND, str(err)) from None
        inputs = model.sequence_inputs([columns])
        extra = (np.zeros(columns.size, np.int64), columns) if exclude else None
        cols, vals = model.recommend(None, k, exclude_seen=False, item_seq=inputs, extra_seen=extra)
    else:
        user = request["user"]
        if isinstance(user, (bool, float, list, dict)) or user is None:
            raise RequestError(bad, f"'user' must be an id (integer or string), got {user!r}")
        try:
            index = model.user_index(pl.Series("user", [user]))
        except DataError:
            raise RequestError(HTTPStatus.NOT_FOUND, f"user {user!r} is unknown to the model") from None
        cols, vals = model.recommend(index, k, exclude_seen=exclude)
    keep = cols[0] >= 0
    items = model.original_items(cols[0][keep]).to_list()
    scores = [float(v) if math.isfinite(v) else None for v in vals[0][keep]]
    return {"items": [_jsonable(i) for i in items], "scores": scores}


def match(model, request: Any) -> dict[str, Any]:
    """The answer to one ``/match`` body (already parsed from JSON) for a linkage model. Raises RequestError."""
    bad = HTTPStatus.BAD_REQUEST
    if model.family != "linkage":
        raise RequestError(bad, f"/match needs a linkage model; this one is a {model.family} model: POST /recommend")
    request = _fields(request, {"record", "k", "matches_only"})
    k = _k(request)
    only = _flag(request, "matches_only", False)
    record = request.get("record")
    if not isinstance(record, dict):
        raise RequestError(bad, "'record' must be an object of field values, e.g. {\"record\": {\"name\": \"...\"}}")
    fields = model.input_fields
    extra = set(record) - set(fields)
    if extra:
        raise RequestError(bad, f"unknown record field(s): {', '.join(sorted(extra))}; the model's fields: "
                                f"{', '.join(fields)}")
    if not record:
        raise RequestError(bad, f"'record' has no field; the model's fields: {', '.join(fields)}")
    for name, value in record.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (str, int, float))):
            raise RequestError(bad, f"record field {name!r} must be a string, a number or null (got {value!r})")
    from engine_serving.linkage import clean_value

    _, cols, scores = model.match({f: [clean_value(record.get(f))] for f in fields}, k, matches_only=only)
    ids = model.right_ids.gather(pl.Series(cols, dtype=pl.Int64)).to_list()
    return {"ids": ids, "scores": [float(v) for v in scores], "threshold": model.threshold}


#: POST routes -> their answer
ROUTES = {"/recommend": recommend, "/match": match}


class _Handler(BaseHTTPRequestHandler):
    server_version = "engine-serve/0.1"
    protocol_version = "HTTP/1.1"
    #: TCP_NODELAY: on a keep-alive connection the headers and the body are two writes, and Nagle's algorithm holds
    #: the second until the client's delayed ACK (~40 ms per request on Linux)
    disable_nagle_algorithm = True
    model: ExportedModel

    def log_message(self, fmt: str, *args: Any) -> None:  # route the access log through logging
        log.info("%s %s", self.address_string(), fmt % args)

    def _send(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0]
        if path == "/health":
            m = self.server.model
            body = {"status": "ok", "family": m.family, "provider": m.provider, "index": m.index_kind}
            if m.family == "linkage":
                body.update({"num_right": m.num_right, "fields": m.input_fields, "threshold": m.threshold})
            else:
                body.update({"num_users": m.num_users, "num_items": m.num_items})
            self._send(HTTPStatus.OK, body)
        elif path in ROUTES:
            self._send(HTTPStatus.METHOD_NOT_ALLOWED, {"error": f"use POST {path}"})
        else:
            self._send(HTTPStatus.NOT_FOUND, {"error": f"no route {self.path}; try GET /health, POST /recommend, "
                                                       "POST /match"})

    def do_POST(self) -> None:  # noqa: N802
        route = ROUTES.get(self.path.split("?", 1)[0])
        if route is None:
            self._send(HTTPStatus.NOT_FOUND, {"error": f"no route {self.path}; try POST /recommend, POST /match"})
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._send(HTTPStatus.LENGTH_REQUIRED, {"error": "Content-Length required"})
            return
        if length > MAX_BODY or length < 0:
            self.close_connection = True
            self._send(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": f"body over {MAX_BODY} bytes"})
            return
        raw = self.rfile.read(length)
        try:
            request = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            self._send(HTTPStatus.BAD_REQUEST, {"error": "the body is not valid JSON"})
            return
        try:
            self._send(HTTPStatus.OK, route(self.server.model, request))
        except RequestError as err:
            self._send(err.status, {"error": str(err)})
        except Exception:  # noqa: BLE001 - a bug: log it, answer 500, keep serving
            log.exception("%s failed", self.path)
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error"})

    def _not_allowed(self) -> None:
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, {"error": f"method {self.command} not allowed"})

    do_PUT = do_DELETE = do_PATCH = _not_allowed


def make_server(model: ExportedModel, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """A ready-to-run server (call ``serve_forever()``); ``port=0`` picks a free port (see ``server_address``)."""
    server = ThreadingHTTPServer((host, port), _Handler)
    server.daemon_threads = True
    server.model = model  # type: ignore[attr-defined]
    return server
