"""The API's error handling: every error becomes ``{"success": false, "error", "details"}``.

Rules, for every endpoint:
* a `RequestError` is answered with its class's status code (`STATUS`, the one table that maps
  the error tree of `scheduler_api.errors` to HTTP): invalid input 400, no or unknown key 401, a
  key outside its workspaces or a full quota 403, nothing there 404, a stale If-Match 412, a body
  too large 413, too many calls this minute 429 (with `Retry-After`); nothing was changed;
* invalid input caught by FastAPI (path, query, JSON body, a trigger's fields) is a 400 with one
  `details` entry per problem; malformed JSON too, and a body Python's JSON parser gives up on
  (nested too deep, an integer over its digit limit, not UTF-8) says which;
* Redis unreachable, refusing writes or too slow -> 503 with a message saying whether the change
  may have been made;
* Starlette's own HTTP errors (404 unknown path, 405 with `Allow`) keep their status;
* anything unexpected -> 500 in the same shape, logged with its traceback, never sent.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Sequence
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from scheduler_api.errors import (
    Details,
    Forbidden,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    QuotaExceeded,
    RateLimited,
    RequestError,
    StoreUnavailable,
    Unauthorized,
)
from scheduler_api.triggers import Trigger

log = logging.getLogger("scheduler_api.api")

STATUS: dict[type[RequestError], int] = {
    InvalidRequest: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    PreconditionFailed: 412,
    PayloadTooLarge: 413,
    QuotaExceeded: 403,
    RateLimited: 429,
}


def status_of(error: RequestError) -> int:
    """The status code of `error`'s class (or of the nearest class in `STATUS` it derives from)."""
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400


def error_body(error: str, details: Details | None = None) -> dict[str, Any]:
    return {"success": False, "error": error, "details": details or []}


def error_response(error: RequestError) -> JSONResponse:
    """The JSON answer to `error`; 401s also name the scheme the client must use, 429s say when to
    retry (`Retry-After`, seconds)."""
    status = status_of(error)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if isinstance(error, RateLimited):
        headers = {"Retry-After": str(error.retry_after)}
    return JSONResponse(error_body(error.message, error.details), status_code=status, headers=headers)


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


# An error about a whole trigger (a rule across fields, such as "exactly one of cron and at") is
# placed at the first trigger field its message names: `triggers[1].cron`, or `cron` for one trigger.
_TRIGGER_FIELDS = re.compile(r"\b(" + "|".join(sorted(Trigger.model_fields, key=len, reverse=True)) + r")\b")


def _located(err: dict[str, Any]) -> tuple[int | str, ...]:
    loc = tuple(err.get("loc", ()))
    whole = not loc or loc == ("body",) or isinstance(loc[-1], int)
    if whole and err.get("type") == "value_error":
        named = _TRIGGER_FIELDS.search(str(err.get("msg", "")))
        if named:
            return (*loc, named.group(1))
    return loc


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
    return JSONResponse(error_body("Invalid request", validation_details(errors)), status_code=400)


def validation_details(errors: Sequence[Any]) -> Details:
    """pydantic's errors as ``details`` entries (path and message), as a 400 shows them."""
    return [{"path": _path(_located(e)), "message": _message(e)} for e in errors]


async def _request_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestError)
    return error_response(exc)


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


def _unparsable_body(cause: BaseException) -> str:
    """What FastAPI's "There was an error parsing the body" was: json.loads's own exception."""
    if isinstance(cause, RecursionError):
        return "nested too deeply: JSON arrays and objects may nest fewer than 1000 levels"
    if isinstance(cause, UnicodeDecodeError):
        return f"not valid UTF-8 (byte {cause.object[cause.start]:#04x} at offset {cause.start})"
    if isinstance(cause, ValueError) and "integer string conversion" in str(cause):
        return f"a number is too long: integers may have at most {sys.get_int_max_str_digits()} digits"
    return "could not be parsed as JSON"


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and exc.__cause__ is not None and exc.detail == "There was an error parsing the body":
        details = [{"path": "body", "message": _unparsable_body(exc.__cause__)}]
        return JSONResponse(error_body("Malformed JSON body", details), status_code=400)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        allowed = _allowed_methods(request)
        if allowed:
            headers["Allow"] = allowed
    return JSONResponse(error_body(str(exc.detail)), status_code=exc.status_code, headers=headers or None)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(error_body("Internal server error"), status_code=500)


def install_handlers(app: FastAPI) -> None:
    """Register the handlers above on `app`."""
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(RequestError, _request_error)
    app.add_exception_handler(StoreUnavailable, _unavailable)
    app.add_exception_handler(redis.ConnectionError, _unavailable)
    app.add_exception_handler(redis.TimeoutError, _unavailable)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
