"""``engine serve``: recommendations over HTTP from an exported model, on the standard library's threading server.

* ``GET /health`` -> ``{"status": "ok", "family", "provider", "num_users", "num_items"}``
* ``POST /recommend`` with a JSON object:
  ``{"user": id, "k": 10}`` -> the user's top-k unseen items; for sequential models also
  ``{"sequence": [item, ...], "k": 10}`` -> the top-k next items after that sequence (its items excluded).
  Optional ``"exclude_seen": false`` keeps seen items. Answer: ``{"items": [...], "scores": [...]}``.

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

from .model import ExportedModel

__all__ = ["make_server", "recommend", "RequestError", "MAX_K"]

log = logging.getLogger("engine.serving")

MAX_K = 1000
MAX_BODY = 1 << 20


class RequestError(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


def _jsonable(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def recommend(model: ExportedModel, request: Any) -> dict[str, Any]:
    """The answer to one ``/recommend`` body (already parsed from JSON). Raises RequestError."""
    bad = HTTPStatus.BAD_REQUEST
    if not isinstance(request, dict):
        raise RequestError(bad, "the body must be a JSON object")
    unknown = set(request) - {"user", "sequence", "k", "exclude_seen"}
    if unknown:
        raise RequestError(bad, f"unknown field(s): {', '.join(sorted(unknown))}")
    k = request.get("k", 10)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise RequestError(bad, f"'k' must be an integer in [1, {MAX_K}] (got {k!r})")
    exclude = request.get("exclude_seen", True)
    if not isinstance(exclude, bool):
        raise RequestError(bad, f"'exclude_seen' must be true or false (got {exclude!r})")
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
        except DataError as err:
            raise RequestError(HTTPStatus.NOT_FOUND, f"user {user!r} is unknown to the model") from None
        cols, vals = model.recommend(index, k, exclude_seen=exclude)
    keep = cols[0] >= 0
    items = model.original_items(cols[0][keep]).to_list()
    scores = [float(v) if math.isfinite(v) else None for v in vals[0][keep]]
    return {"items": [_jsonable(i) for i in items], "scores": scores}


class _Handler(BaseHTTPRequestHandler):
    server_version = "engine-serve/0.1"
    protocol_version = "HTTP/1.1"
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
        if self.path.split("?", 1)[0] == "/health":
            m = self.server.model
            self._send(HTTPStatus.OK, {"status": "ok", "family": m.family, "provider": m.provider,
                                       "num_users": m.num_users, "num_items": m.num_items})
        elif self.path.split("?", 1)[0] == "/recommend":
            self._send(HTTPStatus.METHOD_NOT_ALLOWED, {"error": "use POST /recommend"})
        else:
            self._send(HTTPStatus.NOT_FOUND, {"error": f"no route {self.path}; try GET /health, POST /recommend"})

    def do_POST(self) -> None:  # noqa: N802
        if self.path.split("?", 1)[0] != "/recommend":
            self._send(HTTPStatus.NOT_FOUND, {"error": f"no route {self.path}; try POST /recommend"})
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
            self._send(HTTPStatus.OK, recommend(self.server.model, request))
        except RequestError as err:
            self._send(err.status, {"error": str(err)})
        except Exception:  # noqa: BLE001 - a bug: log it, answer 500, keep serving
            log.exception("recommend failed")
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
