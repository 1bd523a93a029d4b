"""`create_app(settings)`: the FastAPI application, its Redis client and its error handling.

Error rules, for every endpoint:
* invalid input (path, JSON body, a trigger) -> 400 ``{"success": false, "error", "details"}``,
  malformed JSON included; nothing is changed;
* a body larger than ``MAX_BODY_BYTES`` -> 413 in the same shape, before it is read in full;
* Redis unreachable -> 503 ``Redis is unavailable``;
* anything unexpected -> 500 in the same shape, logged with its traceback, never sent.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import unquote

import redis
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from redis import Redis
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scheduler_api import __version__
from scheduler_api.api.routes.triggers import api, router
from scheduler_api.api.routes.workspaces import controls
from scheduler_api.auth import ApiKey, authorize, parse_api_keys
from scheduler_api.errors import InvalidRequest, SettingsError, StoreUnavailable
from scheduler_api.header_crypto import HeaderCipher
from scheduler_api.metrics import RedisCollector
from scheduler_api.settings import Settings
from scheduler_api.ssrf import TargetPolicy
from scheduler_api.storage import connection
from scheduler_api.storage import triggers as store

log = logging.getLogger("scheduler_api.api")


def error_body(error: str, details: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {"success": False, "error": error, "details": details or []}


def _path(loc: tuple[int | str, ...]) -> str:
    """('body', 'triggers', 1, 'cron') -> 'triggers[1].cron'."""
    parts = list(loc)
    if parts and parts[0] in ("body", "path", "query") and len(parts) > 1:
        parts = parts[1:]
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out or "body"


def _message(err: dict[str, Any]) -> str:
    msg = str(err.get("msg", "invalid"))
    return msg.removeprefix("Value error, ")


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        detail = next(e for e in errors if e.get("type") == "json_invalid")
        reason = (detail.get("ctx") or {}).get("error", "invalid JSON")
        return JSONResponse(
            error_body("Malformed JSON body", [{"path": "body", "message": str(reason)}]), status_code=400
        )
    details = [{"path": _path(tuple(e.get("loc", ()))), "message": _message(e)} for e in errors]
    return JSONResponse(error_body("Invalid request", details), status_code=400)


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InvalidRequest)
    return JSONResponse(error_body(exc.message, exc.details), status_code=exc.status)


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    """503. Refused or unreachable: nothing was changed. A timeout: the change may have been made
    (a replace or a delete can be sent again as it is; a run-now would fire once more)."""
    log.warning("redis unavailable: %s", exc)
    if isinstance(exc, redis.TimeoutError) or (isinstance(exc, StoreUnavailable) and exc.maybe_done):
        message = "Redis did not answer in time; the change may or may not have been made, check before retrying"
    elif isinstance(exc, StoreUnavailable) and exc.refused:
        message = "Redis is refusing writes for now (out of memory, read-only or loading); nothing was changed"
    else:
        message = "Redis is unavailable; nothing was changed, try again later"
    return JSONResponse(error_body(message, []), status_code=503)


def _allowed_methods(request: Request) -> str | None:
    """Every method served at the request's path. Starlette's 405 names only the methods of the
    first route with that path, and one path has a route per method here (POST, GET, DELETE)."""
    allowed = [
        method
        for method in ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")
        if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in request.app.routes)
    ]
    return ", ".join(allowed) or None


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        allowed = _allowed_methods(request)
        if allowed:
            headers["Allow"] = allowed
    return JSONResponse(error_body(str(exc.detail)), status_code=exc.status_code, headers=headers or None)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(error_body("Internal server error"), status_code=500)


class HeadAsGet:
    """HEAD on every GET route, as the original's Express answers it: the request is served as a
    GET and its response goes out with the GET's headers (Content-Length included) and no body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def without_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, without_body)


class BodySizeLimit:
    """Answers 413 to a request body over `limit` bytes, by Content-Length or while streaming."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_big = JSONResponse(
            error_body(
                "Request body too large",
                [{"path": "body", "message": f"must be at most {self.limit} bytes"}],
            ),
            status_code=413,
        )
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.limit:
                    await too_big(scope, receive, send)
                    return
        received = 0
        started = False
        exceeded = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if exceeded and not started:
                # FastAPI catches the error raised while it reads the body and answers 400
                # ("error parsing the body"): drop that answer, the 413 below replaces it.
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLarge:
            pass
        if exceeded and not started:
            await too_big(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


_WORKSPACE_IN_PATH = re.compile(r"^/api/workspaces/([^/]+)")


class ApiKeyCheck:
    """Every ``/api/...`` request needs an allowed API key (see scheduler_api.auth) before anything
    else is looked at: the body is not read and nothing is validated for an unauthorised caller."""

    def __init__(self, app: ASGIApp, keys: list[ApiKey]) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.keys and scope["path"].startswith("/api/"):
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
            match = _WORKSPACE_IN_PATH.match(scope["path"])
            try:
                authorize(self.keys, headers.get("authorization"), unquote(match.group(1)) if match else None)
            except InvalidRequest as e:
                extra = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
                response = JSONResponse(error_body(e.message, e.details), status_code=e.status, headers=extra)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(settings: Settings, *, redis_client: Redis | None = None) -> FastAPI:
    """Build the API. Redis is opened in the lifespan (or `redis_client` is used as given)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = redis_client is None
        app.state.redis = redis_client or connection.connect(settings.redis_url, timeout=settings.redis_timeout_seconds)
        try:
            yield
        finally:
            if own:
                app.state.redis.close()

    app = FastAPI(
        title="scheduler-api",
        version=__version__,
        description="Fires HTTP requests on cron schedules, per workspace.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.api_keys = parse_api_keys(settings.api_keys)
    if not app.state.api_keys:
        if settings.app_env == "production":
            raise SettingsError("API_KEYS: the API refuses to start in production without API keys")
        log.warning("API_KEYS is not set: the management API is OPEN to anyone who can reach it (development only)")
    app.state.cipher = HeaderCipher(settings.secrets_key) if settings.secrets_key else None
    app.state.target_policy = TargetPolicy.from_settings(settings)
    app.include_router(router)
    # The key itself is checked by `ApiKeyCheck` before routing; this documents it in OpenAPI (and
    # gives /docs its "Authorize" button). auto_error=False: it never answers anything itself.
    documented_key = [Depends(HTTPBearer(auto_error=False, description="An API key from API_KEYS."))]
    app.include_router(api, dependencies=documented_key)
    app.include_router(controls, dependencies=documented_key)

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics() -> Response:
        """Prometheus text format; the counters live in Redis, so every replica answers the same."""
        registry = CollectorRegistry()
        registry.register(RedisCollector(app.state.redis, settings.queue_name))
        with store.redis_errors():
            body = generate_latest(registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(InvalidRequest, _invalid_request)
    app.add_exception_handler(StoreUnavailable, _unavailable)
    app.add_exception_handler(redis.ConnectionError, _unavailable)
    app.add_exception_handler(redis.TimeoutError, _unavailable)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
    app.add_middleware(BodySizeLimit, limit=settings.max_body_bytes)
    app.add_middleware(ApiKeyCheck, keys=app.state.api_keys)
    app.add_middleware(HeadAsGet)  # added last: runs first
    return app
