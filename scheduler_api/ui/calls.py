"""The dashboard's actions, made through the HTTP API's own route functions.

Every form calls the function its API route runs (scheduler_api.api.routes.*), with the page's
request carrying the signed-in key's scope (the quotas count per scope, scheduler_api.api.quotas),
so validation, the SSRF guard, quotas and If-Match are the API's. `call` answers the route's JSON
body, or a `Failed` with the API's status, message and details: the page shows each detail next to
the field its ``path`` names. Redis errors are not caught here (the page's error handler answers 503).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from scheduler_api.api.errors import status_of, validation_details
from scheduler_api.api.middleware import KEY_SCOPE
from scheduler_api.errors import Details, RequestError


@dataclass
class Failed:
    """An API error as a page shows it: `errors` maps a details path to its messages."""

    status: int
    message: str
    details: Details = field(default_factory=list)

    @property
    def errors(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for d in self.details:
            out.setdefault(str(d.get("path", "")), []).append(str(d.get("message", "")))
        return out


def as_caller(request: Request, scope: str) -> Request:
    """`request`, marked as made by a key of `scope` (as ApiKeyCheck marks an API request)."""
    request.scope[KEY_SCOPE] = scope
    return request


def call(route: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any] | Failed:
    """Run an API route function; its answer as a dict, or the error it answered as `Failed`."""
    try:
        answer = route(*args, **kwargs)
    except RequestError as e:
        return Failed(status_of(e), e.message, list(e.details))
    except (RequestValidationError, ValidationError) as e:
        return Failed(400, "Invalid request", validation_details(e.errors()))
    if isinstance(answer, Response):
        body: dict[str, Any] = json.loads(bytes(answer.body))
        if answer.status_code >= 400:
            return Failed(answer.status_code, str(body.get("error", "")), list(body.get("details", [])))
        etag = answer.headers.get("etag")
        if etag:
            body["_etag"] = etag
        return body
    result: dict[str, Any] = answer
    return result
