"""``engine serve``: the ASGI app (FastAPI) that answers the API of :mod:`engine_serving.api` from an exported
model, and how to run it under uvicorn.

``create_app(model)`` builds the app around a loaded model (:func:`engine_serving.load_model`); mount it in your own
app or run it with any ASGI server. With no model it reads the environment, so uvicorn can build it itself::

    ENGINE_SERVE_MODEL=out/export uvicorn engine_serving.app:create_app --factory --host 127.0.0.1 --port 8000

* ``ENGINE_SERVE_MODEL`` (required): an ``engine export`` directory, an MLflow run id or a ``runs:/<run_id>/<path>``
  URI; ``ENGINE_SERVE_TRACKING_URI``: the MLflow tracking URI for run ids;
* ``ENGINE_SERVE_THREADS``: onnxruntime threads (default: all cores);
* ``ENGINE_SERVE_NEW_ITEMS`` / ``ENGINE_SERVE_NEW_ITEMS_ID``: ``engine serve --new-items`` / ``--new-items-id``;
* ``ENGINE_SERVE_BATCHING`` (``1`` or ``0``, default ``1``), ``ENGINE_SERVE_MAX_BATCH`` (default 64),
  ``ENGINE_SERVE_BATCH_WAIT_MS`` (default 0): request batching of ``/recommend`` (:mod:`engine_serving.batching`).

Routes: ``GET /health``, ``POST /recommend``, ``POST /match``, and FastAPI's ``GET /openapi.json`` and ``GET /docs``.
Errors are JSON ``{"error": "..."}``: 400 for a malformed request (bad JSON, wrong types, unknown fields, k out of
range), 404 for unknown users or items and unknown routes, 405 for another method, 411 for a POST without a length,
413 for a body over 1 MiB; a bug is a 500 and the server keeps serving.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from typing import Any

from .api import (MAX_BODY, Error, Health, MatchRequest, Matches, Recommendations, RecommendRequest, RequestError,
                  health, match, recommend, resolve_recommend)
from .errors import ModelError

__all__ = ["create_app", "model_from_env", "bind", "run", "ENV_VARS"]

log = logging.getLogger("engine.serving")

ENV_VARS = ("ENGINE_SERVE_MODEL", "ENGINE_SERVE_TRACKING_URI", "ENGINE_SERVE_THREADS", "ENGINE_SERVE_NEW_ITEMS",
            "ENGINE_SERVE_NEW_ITEMS_ID", "ENGINE_SERVE_BATCHING", "ENGINE_SERVE_MAX_BATCH",
            "ENGINE_SERVE_BATCH_WAIT_MS")

#: what the error responses of the POST routes look like, for the OpenAPI schema
_ERRORS = {400: {"model": Error, "description": "Malformed request"},
           404: {"model": Error, "description": "Unknown user or item"},
           411: {"model": Error, "description": "No Content-Length"},
           413: {"model": Error, "description": "Body over 1 MiB"}}


def _env_int(name: str, default: int | None, minimum: int) -> int | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise ModelError(f"{name} must be an integer >= {minimum} (got {raw!r})")
    return value


def _env_settings() -> dict[str, Any]:
    flag = os.environ.get("ENGINE_SERVE_BATCHING", "1").strip().lower()
    if flag not in ("1", "0", "true", "false", "yes", "no", "on", "off", ""):
        raise ModelError(f"ENGINE_SERVE_BATCHING must be 1 or 0 (got {flag!r})")
    wait = os.environ.get("ENGINE_SERVE_BATCH_WAIT_MS", "").strip() or "0"
    try:
        wait_ms = float(wait)
    except ValueError:
        wait_ms = -1.0
    if not wait_ms >= 0:
        raise ModelError(f"ENGINE_SERVE_BATCH_WAIT_MS must be a number >= 0 (got {wait!r})")
    return {"batching": flag in ("1", "true", "yes", "on", ""),
            "max_batch": _env_int("ENGINE_SERVE_MAX_BATCH", 64, 1), "batch_wait_ms": wait_ms}


def model_from_env():
    """The model the ``ENGINE_SERVE_*`` variables name (see the module docstring), loaded. Raises ModelError."""
    from .model import load_with_new_items

    source = os.environ.get("ENGINE_SERVE_MODEL", "").strip()
    if not source:
        raise ModelError("ENGINE_SERVE_MODEL is not set: name the model to serve, e.g. ENGINE_SERVE_MODEL=out/export "
                         "uvicorn engine_serving.app:create_app --factory (an `engine export` directory, an MLflow "
                         "run id or a runs:/<run_id>/<path> URI)")
    model, _ = load_with_new_items(source, tracking_uri=os.environ.get("ENGINE_SERVE_TRACKING_URI") or None,
                                   threads=_env_int("ENGINE_SERVE_THREADS", None, 1),
                                   new_items=os.environ.get("ENGINE_SERVE_NEW_ITEMS", "").strip() or None,
                                   new_items_id=os.environ.get("ENGINE_SERVE_NEW_ITEMS_ID") or None,
                                   option="ENGINE_SERVE_NEW_ITEMS")
    return model


class BodyLimit:
    """ASGI middleware: a POST, PUT or PATCH must declare its length (411 otherwise) of at most ``max_body`` bytes
    (413, answered before the body is read, and the connection closed); a chunked body is counted as it arrives."""

    def __init__(self, app, max_body: int = MAX_BODY) -> None:
        self.app, self.max_body = app, max_body

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is None and b"chunked" not in headers.get(b"transfer-encoding", b"").lower():
            return await _reply(send, 411, "Content-Length required")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                declared = -1
            if declared < 0:
                return await _reply(send, 400, f"bad Content-Length {length.decode(errors='replace')!r}")
            if declared > self.max_body:
                return await _reply(send, 413, f"body over {self.max_body} bytes", close=True)
            return await self.app(scope, receive, send)
        chunks, size = [], 0  # chunked: read it here, bounded, then hand it on
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            size += len(message.get("body", b""))
            if size > self.max_body:
                return await _reply(send, 413, f"body over {self.max_body} bytes", close=True)
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body, sent = b"".join(chunks), False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)


async def _reply(send, status: int, message: str, close: bool = False) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _validation_message(errors: list[dict[str, Any]]) -> str:
    """pydantic's errors of a request body as one line: the field, the rule and the value."""
    parts = []
    for err in errors:
        loc = [str(p) for p in err["loc"][1:]] if err["loc"][:1] == ("body",) else [str(p) for p in err["loc"]]
        kind = err["type"]
        if kind == "json_invalid":
            return "the body is not valid JSON"
        if not loc and kind in ("model_attributes_type", "dict_type", "model_type", "missing"):
            return "the body must be a JSON object"
        msg = err["msg"].removeprefix("Value error, ")
        if kind == "value_error":
            parts.append(msg)
        elif kind == "extra_forbidden":
            parts.append(f"unknown field {'.'.join(loc)!r}")
        else:
            shown = "" if kind == "missing" else f" (got {err.get('input')!r})"
            parts.append(f"'{'.'.join(loc)}': {msg}{shown}")
    return "; ".join(dict.fromkeys(parts))


def create_app(model=None, *, batching: bool | None = None, max_batch: int | None = None,
               batch_wait_ms: float | None = None, max_body: int = MAX_BODY):
    """The ASGI app serving ``model`` (loaded; None: :func:`model_from_env`). ``batching`` (default on): score
    concurrent ``/recommend`` requests together, at most ``max_batch`` (64) per run, waiting ``batch_wait_ms`` (0)
    for more; unset arguments come from the ``ENGINE_SERVE_*`` variables."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.openapi.utils import get_openapi
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException

    from .batching import Batcher

    settings = _env_settings()
    if model is None:
        model = model_from_env()
    elif isinstance(model, (str, os.PathLike)):
        from .model import load_model

        model = load_model(str(model))
    batching = settings["batching"] if batching is None else batching
    batcher = Batcher(model, max_batch or settings["max_batch"],
                      settings["batch_wait_ms"] if batch_wait_ms is None else batch_wait_ms) if batching else None

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        if batcher is not None:
            await batcher.close()

    app = FastAPI(title="engine serve", version="1", lifespan=lifespan,
                  description=f"A {model.family} model exported by engine, on onnxruntime.")
    app.state.model, app.state.batcher = model, batcher
    app.add_middleware(BodyLimit, max_body=max_body)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        message = _validation_message(exc.errors())
        kind = request.headers.get("content-type", "")
        if message == "the body must be a JSON object" and kind and "json" not in kind:  # curl -d without -H
            message += f" with Content-Type: application/json (got Content-Type: {kind})"
        return JSONResponse({"error": message}, status_code=400)

    @app.exception_handler(RequestError)
    async def _refused(request: Request, exc: RequestError):
        return JSONResponse({"error": str(exc)}, status_code=int(exc.status))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException):
        path = request.url.path
        if exc.status_code == 404:
            message = f"no route {path}; try GET /health, POST /recommend, POST /match, GET /docs"
        elif exc.status_code == 405:
            allowed = (exc.headers or {}).get("Allow", "")
            message = f"method {request.method} not allowed on {path}; use {allowed or 'another method'}"
        else:
            message = str(exc.detail)
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception):  # logged by the server too; it keeps serving
        log.error("%s %s failed: %r", request.method, request.url.path, exc)
        return JSONResponse({"error": "internal error"}, status_code=500)

    @app.get("/health", response_model=Health, response_model_exclude_none=True)
    async def get_health() -> Health:
        """The model being served: its family, onnxruntime provider, top-k index and size."""
        return health(model)

    @app.post("/recommend", response_model=Recommendations, responses=_ERRORS)
    async def post_recommend(body: RecommendRequest) -> Recommendations:
        """Top-k items of a known user, or (sequential models) the next items after a sequence."""
        if batcher is None:
            return await run_in_threadpool(recommend, model, body)
        kind, inputs = resolve_recommend(model, body)
        return await batcher.submit(kind, inputs, body.k, body.exclude_seen)

    @app.post("/match", response_model=Matches, responses=_ERRORS)
    async def post_match(body: MatchRequest) -> Matches:
        """Linkage models: the best candidates of one raw record in the right table."""
        return await run_in_threadpool(match, model, body)

    def openapi() -> dict[str, Any]:  # 400 (our validation errors) documented instead of FastAPI's 422
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    operation.get("responses", {}).pop("422", None)
            for name in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(name, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
    return app


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``port`` 0: a free one). Raises OSError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # proto set: asyncio sets TCP_NODELAY
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def run(app, sock: socket.socket, log_level: str = "warning") -> None:
    """Serve ``app`` with uvicorn on the bound ``sock`` until SIGINT or SIGTERM (a graceful shutdown)."""
    import uvicorn

    config = uvicorn.Config(app, log_level=log_level, access_log=False, timeout_graceful_shutdown=10)
    uvicorn.Server(config).run(sockets=[sock])
