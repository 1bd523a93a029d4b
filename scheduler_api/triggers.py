"""What a trigger is, and the validation of one (pydantic v2).

A trigger is ``cron + url + method + optional payload + optional headers``. Validation rules,
each answered with a 400 whose `details[].path` names the field (``triggers[1].cron``):

* ``id``: optional, 1-64 characters of ``A-Z a-z 0-9 _ . -`` but not dots only, unique in its list
  (case-sensitive);
  absent, the trigger's index in the list as a string (so ``jobId`` is ``{workspace_id}:{index}``,
  the original's). A default id equal to a given one is refused, naming both triggers.
* ``cron``: a string that `scheduler_api.cron.validate` accepts (the scheduler's own parser, plus
  the rules for new input).
* ``url``: an absolute ``http://`` or ``https://`` URL with a host, at most 2048 characters,
  no whitespace or control characters.
* ``method``: GET, POST, PUT, PATCH or DELETE (any case; stored upper-case).
* ``payload``: a JSON object or null. It is sent as the JSON body of POST, PUT and PATCH;
  GET and DELETE requests carry no body, so a payload on them is stored but not sent.
* ``headers``: an object of string to string; names are RFC 9110 tokens, unique regardless of
  case, values are printable ASCII (spaces and tabs allowed; no CR, LF, NUL or other control
  character, nothing non-ASCII: the HTTP client could not send it). Values are secrets: no
  response or log ever shows them, only the names. Names the service sets or the connection
  owns are reserved: ``X-Scheduler-*``, ``Idempotency-Key``, and hop-by-hop / framing headers
  (``Host``, ``Content-Length``, ``Transfer-Encoding``, ``Connection``, ``Keep-Alive``,
  ``Proxy-Connection``, ``TE``, ``Trailer``, ``Upgrade``, ``Expect``).
* Limits set in the settings (`check_limits`): payload size, number of headers, size of a
  header, url length; answered 400 with the path of the offending field.
* ``timezone``: optional IANA zone name the cron is read in (default UTC); see the DST policy in
  `scheduler_api.cron`.
* ``enabled``: optional boolean, default true; a disabled trigger keeps its schedule, shows
  ``paused: true`` and does not fire.
* ``at`` (a one-off trigger's time, instead of ``cron``: exactly one of the two) and the delivery
  policy and bounds fields: their input models and rules are in `scheduler_api.policy` (README
  "Delivery policies"); ``at`` in the future is checked where the write is planned
  (scheduler_api.storage.edits), so an unchanged ``at`` of a trigger that has fired is kept.
* Unknown fields are rejected, so that a typo (``header``) is not silently ignored.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import httpx
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

from scheduler_api import cron as cronlib
from scheduler_api.errors import CronError, InvalidRequest
from scheduler_api.policy import IsoTime, RetryConfig, Seconds, StatusList, SuccessCheck, policy_input

WORKSPACE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
# 1-64 characters (the length is checked where it is used), not dots only: a client's url library
# would send `.../triggers/.` as `.../triggers`, the whole list.
TRIGGER_ID = re.compile(r"^[A-Za-z0-9_.-]*[A-Za-z0-9_-][A-Za-z0-9_.-]*$")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
MAX_URL_LENGTH = 2048
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_BAD_URL_CHARS = re.compile(r"[\x00-\x20\x7f]")
# A header value: visible ASCII, spaces and tabs (RFC 9110 field-value without obs-text, which
# the HTTP client cannot send): no CR, LF, NUL or other control character, nothing non-ASCII.
_HEADER_VALUE = re.compile(r"^[\t\x20-\x7e]*$")

Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
RESERVED_HEADERS = frozenset(
    {
        "idempotency-key",
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "expect",
    }
)


MAX_AT_YEARS = 10


class Limits(Protocol):
    max_payload_bytes: int
    max_headers: int
    max_header_bytes: int
    max_url_length: int
    max_delivery_timeout_seconds: float


def check_workspace_id(workspace_id: str) -> str | None:
    """None when valid, else what is wrong with it."""
    if WORKSPACE_ID.fullmatch(workspace_id):  # fullmatch: `$` alone also matches before a final "\n"
        return None
    return f"must be 1-128 characters of A-Z a-z 0-9 _ . -, got {workspace_id[:140]!r}"


@lru_cache(maxsize=16_384)  # a replace often repeats urls, and clients resend whole lists
def url_problem(value: str) -> str | None:
    """What is wrong with a trigger's url, or None."""
    if len(value) > MAX_URL_LENGTH:
        return f"must be at most {MAX_URL_LENGTH} characters, got {len(value)}"
    if _BAD_URL_CHARS.search(value):
        return "must not contain spaces or control characters"
    if "\\" in value:  # parsers disagree: https://a.example\\@b.example/ is b.example to some, a.example to others
        return "must not contain a backslash"
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as e:
        return f"is not a valid URL: {e}"
    if parts.scheme.lower() not in ("http", "https"):
        return f"must be an http:// or https:// URL, got {value[:100]!r}"
    if not parts.hostname:
        return f"must have a host, got {value[:100]!r}"
    if port == 0:
        return "port must be between 1 and 65535"
    return _unsendable(value)


@lru_cache(maxsize=4096)
def _unsendable(value: str) -> str | None:
    """Why httpx, which the worker sends with, refuses `value` (stricter than urlsplit: IDNA
    hosts, IPv6 literals such as [v1.fe], xn-- labels), or None. Clients send the same urls
    replace after replace: each is parsed once."""
    try:
        httpx.URL(value)
    except (httpx.InvalidURL, ValueError) as e:
        return f"is not a valid URL: {e}"
    return None


class Trigger(BaseModel):
    """One trigger as a client sends it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: StrictStr | None = Field(
        None,
        description="Stable id, 1-64 characters of A-Z a-z 0-9 _ . - (not dots only); default: its index in the list.",
        pattern=TRIGGER_ID.pattern,
        min_length=1,
        max_length=64,
    )
    cron: StrictStr | None = Field(
        None, description="Cron expression: 5 fields, or 6 with seconds first, or @hourly etc. (or give `at`)."
    )
    url: StrictStr = Field(description="Absolute http(s) URL the request is sent to.")
    method: Method = Field(description="HTTP method.")
    payload: dict[str, Any] | None = Field(None, description="JSON body for POST/PUT/PATCH.")
    headers: dict[str, StrictStr] | None = Field(None, description="Extra request headers (values are secret).")
    timezone: StrictStr | None = Field(None, description="IANA time zone the cron is read in; default UTC.")
    enabled: StrictBool = Field(True, description="A disabled trigger keeps its schedule but does not fire.")
    at: IsoTime | None = Field(None, description="A one-off trigger's time, instead of `cron`.")
    timeout_seconds: Seconds | None = Field(None, ge=1, description="Per-attempt timeout (default the setting's).")
    retry: RetryConfig | None = None
    final_statuses: StatusList | None = Field(None, description="Statuses that fail the firing without retries.")
    success: SuccessCheck | None = None
    overlap: Literal["allow", "skip", "buffer_one"] | None = Field(
        None, description="What a firing due while another of this trigger is active does (default allow)."
    )
    start_at: IsoTime | None = Field(None, description="No firing before this time.")
    end_at: IsoTime | None = Field(None, description="No firing after this time.")
    max_firings: StrictInt | None = Field(None, ge=1, le=1_000_000_000, description="End after this many firings.")
    jitter_seconds: StrictInt | None = Field(None, ge=0, le=3600, description="Send each firing up to this late.")

    @model_validator(mode="after")
    def _schedule(self) -> Trigger:
        if (self.cron is None) == (self.at is None):
            raise ValueError("exactly one of cron and at is required (cron for a schedule, at for a one-off)")
        if self.at is not None:
            extra = [name for name in ("start_at", "end_at", "max_firings") if getattr(self, name) is not None]
            if extra:
                raise ValueError(f"{', '.join(extra)} apply to cron triggers only, not with at")
            if self.at.timestamp() > time.time() + MAX_AT_YEARS * 365.25 * 86_400:
                raise ValueError(f"at must be at most {MAX_AT_YEARS} years ahead")
        if self.start_at is not None and self.end_at is not None and self.end_at <= self.start_at:
            raise ValueError("end_at must be after start_at")
        return self

    def policy_dict(self) -> dict[str, Any]:
        """The policy fields that are set, in the stored form (scheduler_api.policy.Policy)."""
        return policy_input(self)

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            cronlib.validate(value)
        except CronError as e:
            raise ValueError(str(e)) from None
        return value

    @field_validator("payload")
    @classmethod
    def _payload(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        try:
            json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")
        except ValueError:  # UnicodeEncodeError is one
            raise ValueError(
                "must be standard JSON: no NaN or Infinity, and no unpaired surrogate (such as \\ud800) in a string"
            ) from None
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return cronlib.check_timezone(value)
        except CronError as e:
            raise ValueError(str(e)) from None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        problem = url_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("method", mode="before")
    @classmethod
    def _method(cls, value: Any) -> Any:
        if isinstance(value, str):
            upper = value.upper()
            if upper in METHODS:
                return upper
            raise ValueError(f"must be one of {', '.join(METHODS)}, got {value[:20]!r}")
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return None
        seen: set[str] = set()
        for name, header_value in value.items():
            if not _TOKEN.fullmatch(name):
                raise ValueError(f"{name[:60]!r} is not a valid header name")
            lower = name.lower()
            if lower in RESERVED_HEADERS or lower.startswith("x-scheduler-"):
                raise ValueError(f"{name!r} is reserved: the service sets it")
            if lower in seen:
                raise ValueError(f"{name!r} is given twice (header names are case-insensitive)")
            seen.add(lower)
            if not _HEADER_VALUE.fullmatch(header_value):
                if any(c in header_value for c in "\r\n\x00"):
                    raise ValueError(f"value of {name!r} must not contain CR, LF or NUL")
                raise ValueError(f"value of {name!r} must be printable ASCII (no control or non-ASCII characters)")
        return value


class ReplaceTriggers(BaseModel):
    """Body of ``POST /api/workspaces/{workspace_id}/triggers``: the workspace's whole new list."""

    model_config = ConfigDict(extra="forbid")

    triggers: list[Trigger] = Field(description="The new list; it replaces every existing trigger.")

    @model_validator(mode="after")
    def _unique_ids(self) -> ReplaceTriggers:
        """Ids are unique in the list (case-sensitive); a default id (the index) counts too."""
        details = duplicate_ids([t.id for t in self.triggers])
        if details:
            raise InvalidRequest("Invalid request", details)
        return self


def duplicate_ids(ids: list[str | None]) -> list[dict[str, str]]:
    """Error details for ids given twice in a list, a default id (the index, for None) included."""
    first: dict[str, int] = {}
    details = []
    for i, given in enumerate(ids):
        trigger_id = given if given is not None else str(i)
        if trigger_id in first:
            j = first[trigger_id]
            how = "" if given is not None and ids[j] is not None else " (a trigger without an id has its index as id)"
            details.append(
                {"path": f"triggers[{i}].id", "message": f"id {trigger_id!r} is also the id of triggers[{j}]{how}"}
            )
        else:
            first[trigger_id] = i
    return details


def check_limits(
    triggers: list[Trigger], limits: Limits, *, paths: Sequence[str] | None = None
) -> list[dict[str, str]]:
    """The configured size limits each trigger breaks, as error details (empty when none); the
    details' paths start with `paths[i]` (default ``triggers[i]``; ``""`` for a lone trigger)."""
    details = []
    for i, t in enumerate(triggers):
        at = paths[i] if paths is not None else f"triggers[{i}]"
        dot = "." if at else ""
        if t.timeout_seconds is not None and t.timeout_seconds > limits.max_delivery_timeout_seconds:
            details.append(
                {
                    "path": f"{at}{dot}timeout_seconds",
                    "message": f"must be at most {limits.max_delivery_timeout_seconds:g} seconds",
                }
            )
        if len(t.url) > limits.max_url_length:
            details.append({"path": f"{at}{dot}url", "message": f"must be at most {limits.max_url_length} characters"})
        if t.payload is not None:
            size = len(json.dumps(t.payload, separators=(",", ":")).encode())
            if size > limits.max_payload_bytes:
                details.append(
                    {
                        "path": f"{at}{dot}payload",
                        "message": f"must be at most {limits.max_payload_bytes} bytes as JSON, got {size}",
                    }
                )
        headers = t.headers or {}
        if len(headers) > limits.max_headers:
            details.append(
                {
                    "path": f"{at}{dot}headers",
                    "message": f"at most {limits.max_headers} headers, got {len(headers)}",
                }
            )
        for name, value in headers.items():
            if len(name.encode()) + len(value.encode()) > limits.max_header_bytes:
                details.append(
                    {
                        "path": f"{at}{dot}headers.{name}",
                        "message": f"name and value must be at most {limits.max_header_bytes} bytes",
                    }
                )
    return details
