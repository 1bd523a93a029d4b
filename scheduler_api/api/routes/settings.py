"""A workspace's settings: failure alerts, auto-disable and per-host rate limits (one document).

``GET /api/workspaces/{ws}/settings`` answers the document (the defaults while none was written)
with its ETag; ``PUT`` replaces it whole, honouring If-Match as trigger writes do (412 when stale,
nothing changed). What the settings do is in scheduler_api.storage.workspace_settings.

Validation rules (400 naming every problem, nothing changed):
* unknown fields are refused, at any level;
* ``alerts.url``: an absolute http(s) url as a trigger's (scheduler_api.triggers.url_problem), that
  the SSRF guard lets through as it does a trigger's url (scheduler_api.ssrf, before any DNS; the
  worker checks the addresses again when it sends); ``alerts.after_failures``: 1-10000 (default 3);
* ``auto_disable_after_failures``: 1-10000, or null (never);
* ``rate_limits``: at most 100, each ``{"host", "per_second", "concurrency"}`` with at least one of
  the two bounds: ``per_second`` 0.001-100000, ``concurrency`` 1-10000. The host is a bare
  name or address (no scheme, port, path or user) and is stored as the worker reads a url's host:
  lower-case, IDNA-encoded (``Bücher.example`` -> ``xn--bcher-kva.example``), an IPv6 address
  without brackets, without a final dot; "%", empty labels and labels over 63 characters are
  refused; two limits on one host (once normalised) are refused.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, field_validator

from scheduler_api.api import quotas
from scheduler_api.api.deps import IfMatch, WorkspaceId, etags, quoted, redis_of, target_policy_of
from scheduler_api.api.schemas import ERRORS, WRITE_ERRORS, WorkspaceSettingsResponse
from scheduler_api.errors import InvalidRequest
from scheduler_api.storage import workspace_settings as store
from scheduler_api.storage.workspace_settings import RateLimit, WorkspaceSettings
from scheduler_api.triggers import url_problem

router = APIRouter()
PATH = "/api/workspaces/{workspace_id}/settings"
MAX_RATE_LIMITS = 100
MAX_FAILURES = 10_000


def normalise_host(value: str) -> str:
    """`value` as the worker reads a url's host (module docstring); ValueError saying what is wrong."""
    text = value.strip()
    text = text[:-1] if text.endswith(".") else text  # the root's dot: the worker's host has none
    wrong = f"must be a host name or address without scheme, port or path, got {value[:300]!r}"
    if not text or any(c in text for c in "/?#@%\\ \t"):
        raise ValueError(wrong)
    if ":" not in text and any(not label or len(label) > 63 for label in text.split(".")):
        raise ValueError(wrong)
    if ":" in text and not text.startswith("["):
        try:
            text = f"[{ipaddress.IPv6Address(text)}]"
        except ValueError:
            raise ValueError(wrong) from None
    try:
        url = httpx.URL(f"http://{text}/")
    except (httpx.InvalidURL, ValueError):
        raise ValueError(wrong) from None
    if url.port is not None or not url.raw_host:
        raise ValueError(wrong)
    return url.raw_host.decode("ascii").lower()


class AlertsInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: StrictStr = Field(description="Where alerts are POSTed: an absolute http(s) URL the SSRF guard allows.")
    after_failures: StrictInt = Field(
        3, ge=1, le=MAX_FAILURES, description="Alert when a trigger's consecutive failed firings reach this."
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        problem = url_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class RateLimitInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: StrictStr = Field(description="A host name or address; stored lower-case and IDNA-encoded.")
    per_second: StrictFloat | None = Field(None, ge=0.001, le=100_000, description="Requests a second (token bucket).")
    concurrency: StrictInt | None = Field(None, ge=1, le=10_000, description="Requests in flight at once.")

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        return normalise_host(value)


class WorkspaceSettingsInput(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo (`alert`) is refused, as in a trigger

    alerts: AlertsInput | None = Field(None, description="Failure and recovery alerts; null: none.")
    auto_disable_after_failures: StrictInt | None = Field(
        None, ge=1, le=MAX_FAILURES, description="Disable a trigger after this many consecutive failed firings."
    )
    rate_limits: list[RateLimitInput] = Field(
        default_factory=list,
        max_length=MAX_RATE_LIMITS,
        description="Per-host limits of this workspace's deliveries, held across all workers (README 'Rate limits').",
    )


def _checked(request: Request, body: WorkspaceSettingsInput) -> WorkspaceSettings:
    """The stored form of `body`, after the rules that span fields or need the app (SSRF guard)."""
    details: list[dict[str, str]] = []
    if body.alerts is not None:
        why = target_policy_of(request).check_url(body.alerts.url)
        if why:
            details.append({"path": "alerts.url", "message": f"deliveries to {why} are not allowed"})
    seen: dict[str, int] = {}
    for i, limit in enumerate(body.rate_limits):
        if limit.per_second is None and limit.concurrency is None:
            details.append({"path": f"rate_limits[{i}]", "message": "must set per_second, concurrency or both"})
        if limit.host in seen:
            why = f"{limit.host!r} has a limit already, rate_limits[{seen[limit.host]}]"
            details.append({"path": f"rate_limits[{i}].host", "message": why})
        seen.setdefault(limit.host, i)
    if details:
        raise InvalidRequest("Invalid request", details)
    return WorkspaceSettings(
        alert_url=body.alerts.url if body.alerts is not None else None,
        alert_after=body.alerts.after_failures if body.alerts is not None else None,
        disable_after=body.auto_disable_after_failures,
        rate_limits=tuple(RateLimit(r.host, r.per_second, r.concurrency) for r in body.rate_limits),
    )


def _answer(workspace_id: str, settings: WorkspaceSettings, etag: str) -> JSONResponse:
    body: dict[str, Any] = {"success": True, "workspace_id": workspace_id, **settings.to_dict()}
    return JSONResponse(body, headers={"ETag": quoted(etag)})


@router.get(PATH, response_model=WorkspaceSettingsResponse, responses=ERRORS, summary="A workspace's settings")
def get_settings(request: Request, workspace_id: str = WorkspaceId) -> JSONResponse:
    settings, etag = store.read(redis_of(request), workspace_id)
    return _answer(workspace_id, settings, etag)


@router.put(
    PATH,
    response_model=WorkspaceSettingsResponse,
    responses=WRITE_ERRORS,
    summary="Replace a workspace's settings: alerts, auto-disable, rate limits",
)
def put_settings(
    request: Request, body: WorkspaceSettingsInput, workspace_id: str = WorkspaceId, if_match: str | None = IfMatch
) -> JSONResponse:
    settings = _checked(request, body)
    quotas.count_write(request, workspace_id)  # a write call: 429 beyond WRITES_PER_MINUTE
    etag = store.write(redis_of(request), workspace_id, settings, if_match=etags(if_match))
    return _answer(workspace_id, settings, etag)
