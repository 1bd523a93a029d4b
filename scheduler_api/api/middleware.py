"""ASGI middleware of the API, outermost first: HEAD as GET, the API-key check, the body limit.

Each answers in the API's error shape (scheduler_api.api.errors) and never reads a request body it
is about to refuse.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scheduler_api.api.errors import error_response
from scheduler_api.auth import ApiKey, authorize
from scheduler_api.errors import PayloadTooLarge, RequestError, SchedulerApiError


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
        too_big = error_response(
            PayloadTooLarge(
                "Request body too large", [{"path": "body", "message": f"must be at most {self.limit} bytes"}]
            )
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


class _BodyTooLarge(SchedulerApiError):
    """Raised inside `receive` to stop the app reading a body over the limit (answered 413)."""


_WORKSPACE_IN_PATH = re.compile(r"^/api/workspaces/([^/]+)")
# The ASGI scope entry naming the scope of the caller's key ("*", a name or "prefix*"); absent
# without API_KEYS, which counts as "*".
KEY_SCOPE = "scheduler_api.key_scope"


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
                key = authorize(self.keys, headers.get("authorization"), unquote(match.group(1)) if match else None)
            except RequestError as e:
                await error_response(e)(scope, receive, send)
                return
            scope = {**scope, KEY_SCOPE: key.scope}  # the quotas count per scope (api.quotas)
        await self.app(scope, receive, send)
