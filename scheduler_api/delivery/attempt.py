"""One delivery attempt: build the request and send it.

What is sent: the trigger's method and url, its headers, `payload` as a JSON body for POST, PUT
and PATCH (none for GET and DELETE), plus `User-Agent: scheduler-api/<version>` (in place of the
trigger's own, if it has one), `X-Scheduler-Workspace`, `X-Scheduler-Trigger` (the jobId),
`X-Scheduler-Scheduled-At` (ISO 8601 UTC), `X-Scheduler-Attempt` (1 for the first try),
`Idempotency-Key` (the firing id, the same for every attempt of one firing), `traceparent` (W3C
trace context: the firing's trace id, the attempt's span id; scheduler_api.tracing) and the Standard
Webhooks signature of the workspace, always: `webhook-id` (= the Idempotency-Key),
`webhook-timestamp` and `webhook-signature` (scheduler_api.signing; these three, like User-Agent
and traceparent, replace any the trigger sets). Redirects are not followed. A replay (scheduler_api.storage.replay)
also carries `X-Scheduler-Replay`, its number (1 for the first replay of a firing).

`send` never raises: every failure becomes the returned `Attempt`'s `error` (``timeout``,
``blocked`` by the SSRF guard, ``assertion``, the transport's error class...), and `Attempt.final`
marks one that no retry can fix (a blocked target, an url or header that cannot be sent). Which
attempts are retried, and when, is decided in `scheduler_api.delivery.retry`.

A trigger's delivery policy (scheduler_api.policy; a trigger without one is sent exactly as
before, with no extra work):
* ``timeout_seconds`` bounds the whole exchange of each attempt in place of
  ``DELIVERY_TIMEOUT_SECONDS``; a timeout's message names the seconds that applied;
* what is delivered (`Attempt.ok`): any 2xx by default. With ``success.status`` the status must
  be one of its codes or classes, else the attempt fails with error ``assertion`` and the message
  ``expected status <the list>; got <status>``. With ``success.body_contains`` (a status that
  passed) the text, as UTF-8 bytes, must occur in the first ``SUCCESS_BODY_MAX_BYTES`` of the
  decompressed body (a plain substring: no pattern a tenant writes costs super-linear time),
  else error ``assertion``, ``the response did not contain '<text>' in its first <n> bytes``.
  Only then is more than the excerpt read. A non-2xx answer of a trigger without ``success.status``
  is a plain failed attempt (its status, no error), as before;
* ``Retry-After`` (every trigger): on a 429 or 503 answer its value, delta-seconds or an
  HTTP-date (`retry_after_seconds`; negative or past: 0, unreadable: ignored), capped at
  ``RETRY_AFTER_MAX_SECONDS``, is `Attempt.retry_after` and shows in the attempt's record as
  ``retry_after``; the retry waits at least that long. The header of any other status is not read.

What the tenant sees of an attempt (`Attempt.as_dict`, stored in its record) tells it nothing
about the service's network: a blocked attempt's message is ``blocked by the SSRF guard (host
<the host of its url>)``, never the addresses a name resolved to nor why they are blocked; those
are in `Attempt.detail`, for the operator's log only. The response excerpt has the trigger's own
header values replaced with ``[redacted]`` (`redact`), so a target that echoes its request does not
put the tenant's secrets into Redis and the history in plain text.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import Any

import httpx

from scheduler_api import __version__, signing, tracing
from scheduler_api import cron as cronlib
from scheduler_api.delivery.http import HEADERS_EXTENSION, TIMEOUT_EXTENSION, DeliveryClient, aiohttp_url
from scheduler_api.errors import SecretsError
from scheduler_api.policy import Policy
from scheduler_api.settings import Settings
from scheduler_api.ssrf import TargetPolicy, blocked_in_chain
from scheduler_api.storage.firings import Firing
from scheduler_api.storage.triggers import StoredTrigger
from scheduler_api.triggers import BODY_METHODS

log = logging.getLogger("scheduler_api.delivery")

REDACTED = "[redacted]"
# Shorter header values are not redacted from excerpts: a 1-3 character value ("1", "yes", "no")
# occurs by chance in almost any text, so redacting it would mangle the excerpt and hide nothing
# (such a value is no secret: it can be guessed in a few thousand tries).
MIN_REDACTED_LENGTH = 4

USER_AGENT = f"scheduler-api/{__version__}"
# Header names of the trigger's own that ours replace (lower case).
OURS = frozenset({"user-agent", "webhook-id", "webhook-timestamp", "webhook-signature", "traceparent"})


@dataclass(frozen=True)
class SendOptions:
    """What every attempt of a worker shares."""

    timeout: float
    excerpt_bytes: int
    policy: TargetPolicy
    # Workspace id -> its signer, filled by the runtime before a batch sends (DeliveryRuntime.load_signers).
    signers: dict[str, signing.Signer] = field(default_factory=dict, compare=False, hash=False)
    success_body_bytes: int = 65_536  # how much of a body `success.body_contains` looks in
    retry_after_max: float = 3600.0  # the longest Retry-After honoured

    @classmethod
    def from_settings(cls, settings: Settings) -> SendOptions:
        return cls(
            timeout=settings.delivery_timeout_seconds,
            excerpt_bytes=settings.response_excerpt_bytes,
            policy=TargetPolicy.from_settings(settings),
            success_body_bytes=settings.success_body_max_bytes,
            retry_after_max=settings.retry_after_max_seconds,
        )


def build_request(
    trigger: StoredTrigger, firing: Firing, options: SendOptions, span: str | None = None
) -> httpx.Request:
    """The request of one attempt (see the module docstring for what it carries).

    A `User-Agent` or ``webhook-*`` header among the trigger's headers is replaced by ours (one
    header line, not two). Raises `SecretsError` when the workspace's signer was not loaded (a
    bug: the batch loads it first); `send` turns that into a failed attempt. The body is given as a
    ready stream, so httpx adds no headers of its own: the transport sets Host and
    Content-Length from the url and the bytes. A trigger's ``timeout_seconds`` travels in the
    request's extensions (scheduler_api.delivery.http.TIMEOUT_EXTENSION). `span`: the attempt's
    span id when tracing exports it (else a random one, `tracing.span_id`).
    """
    has_body = trigger.method in BODY_METHODS and trigger.payload is not None
    content = trigger.payload_json if has_body else b""
    signer = options.signers.get(trigger.workspace_id)
    if signer is None:
        raise SecretsError(f"no signing secret loaded for workspace {trigger.workspace_id!r}")
    headers = [(k, v) for k, v in trigger.headers.items() if k.lower() not in OURS]
    if has_body and not any(k.lower() == "content-type" for k, _ in headers):
        headers.append(("Content-Type", "application/json"))
    headers += [
        ("User-Agent", USER_AGENT),
        ("X-Scheduler-Workspace", trigger.workspace_id),
        ("X-Scheduler-Trigger", trigger.job_id),
        ("X-Scheduler-Scheduled-At", cronlib.iso(firing.scheduled_at)),
        ("X-Scheduler-Attempt", str(firing.attempt)),
        ("Idempotency-Key", firing.id),
        ("traceparent", tracing.traceparent(firing.id, span)),
    ]
    if firing.replay:
        headers.append(("X-Scheduler-Replay", str(firing.replay)))
    headers += signer.headers(firing.id, content, time.time())
    # The headers travel as the list the transport hands to aiohttp (HEADERS_EXTENSION): every
    # name and value is ASCII already (validated), and httpx's own header handling would build,
    # normalise and then decode them again for nothing on every delivery.
    extensions: dict[str, Any] = {HEADERS_EXTENSION: headers}
    policy = trigger.policy
    if policy is not None and policy.timeout_seconds is not None:
        extensions[TIMEOUT_EXTENSION] = policy.timeout_seconds
    request = httpx.Request(
        trigger.method, parsed_url(trigger.url), stream=httpx.ByteStream(content), extensions=extensions
    )
    request.read()
    return request


@lru_cache(maxsize=65_536)
def parsed_url(url: str) -> httpx.URL:
    """httpx's parse of a trigger url, once per url (workers send to the same urls again and again)."""
    return httpx.URL(url)


def refused_host(url: httpx.URL, policy: TargetPolicy) -> str | None:
    """Why the SSRF guard refuses the host the request goes to, before any DNS, or None."""
    return policy.check_host(url.raw_host.decode("ascii"))


def redact(text: str, values: Iterable[str]) -> str:
    """`text` with every occurrence of each of `values` (those of `MIN_REDACTED_LENGTH` or more
    characters; case-sensitive) replaced with ``[redacted]``, and so is the start of one cut off at
    the end of `text` (an excerpt ends where the byte limit fell, maybe inside a value), when that
    start is `MIN_REDACTED_LENGTH` characters or more. Plain `in`/`replace`, no regex: this runs on
    every delivery of a trigger that has headers."""
    for value in values:
        n = len(value)
        if n < MIN_REDACTED_LENGTH:
            continue
        if value in text:
            text = text.replace(value, REDACTED)
        # A cut-off start: a suffix of `text` of at least MIN_REDACTED_LENGTH characters that the
        # value begins with (shorter than the value, or the replace above would have taken it).
        start = max(len(text) - n + 1, 0)
        head = value[:MIN_REDACTED_LENGTH]
        while (i := text.find(head, start)) >= 0:
            if value.startswith(text[i:]):
                text = text[:i] + REDACTED
                break
            start = i + 1
    return text


def warm(trigger: StoredTrigger, options: SendOptions) -> None:
    """Parse ahead what a delivery of `trigger` parses (scheduler_api.storage.prefetch): its url for httpx,
    the SSRF check and aiohttp, and its payload; into the caches `send` reads."""
    url = parsed_url(trigger.url)
    refused_host(url, options.policy)
    aiohttp_url(str(url))
    _ = trigger.payload_json


@dataclass
class Attempt:
    started_at: float
    duration: float
    status: int | None = None
    error: str | None = None
    message: str | None = None
    body: str | None = None
    final: bool = False  # a failure that retrying cannot fix (blocked target, undecryptable header)
    detail: str | None = None  # for the operator's log only, never stored: why a target was blocked
    ok: bool = False  # delivered: the answer passed the trigger's success check (default any 2xx)
    retry_after: float | None = None  # a 429/503's Retry-After in seconds, capped (module docstring)

    def as_dict(self, number: int) -> dict[str, Any]:
        data = {
            "attempt": number,
            "started_at": cronlib.iso(self.started_at),
            "duration_ms": round(self.duration * 1000, 1),
            "status": self.status,
            "error": self.error,
            "message": self.message,
            "body": self.body,
        }
        if self.retry_after is not None:
            data["retry_after"] = self.retry_after
        return data


async def send(
    client: DeliveryClient, trigger: StoredTrigger, firing: Firing, options: SendOptions, span: str | None = None
) -> Attempt:
    """Send one attempt; never raises (every failure becomes the Attempt's `error`). `span`: see `build_request`."""
    started = time.time()
    t0 = time.perf_counter()
    policy = trigger.policy
    try:
        url = parsed_url(trigger.url)
        refused = refused_host(url, options.policy)
        if refused:
            return blocked_attempt(started, 0.0, url, f"{url.host}: {refused}")
        request = build_request(trigger, firing, options, span)
        response = await client.deliver(request)  # the client's transport bounds the whole exchange
        # The excerpt is all that is read, unless a success.body_contains looks further.
        limit = options.excerpt_bytes
        if policy is not None and policy.body_contains is not None:
            limit = max(limit, options.success_body_bytes)
        try:
            read = bytearray()  # grows in place: many small chunks cost linear time, not quadratic
            async for chunk in response.stream:  # type: ignore[union-attr]
                read += chunk
                if len(read) >= limit:
                    break
        finally:
            await response.aclose()
        body = read[: options.excerpt_bytes].decode("utf-8", "replace")
        if body and trigger.headers:
            body = redact(body, trigger.headers.values())
        status = response.status_code
        attempt = Attempt(started, time.perf_counter() - t0, status=status, body=body or None, ok=200 <= status < 300)
        if policy is not None:
            check_success(attempt, policy, read, options.success_body_bytes)
        if status == 429 or status == 503:
            value = response.headers.get("retry-after")
            attempt.retry_after = retry_after_seconds(value, now=time.time(), cap=options.retry_after_max)
        return attempt
    except Exception as e:
        elapsed = time.perf_counter() - t0
        refusal = blocked_in_chain(e)
        if refusal is not None:
            return blocked_attempt(started, elapsed, parsed_url(trigger.url), str(refusal))
        cause = e.__cause__
        if isinstance(e, httpx.TimeoutException) and cause is not None and not isinstance(cause, TimeoutError):
            # httpx-aiohttp maps every aiohttp connection error (refused, DNS, reset) to ConnectTimeout:
            # name the real one instead of calling a refused connection a timeout.
            return Attempt(started, elapsed, error=type(cause).__name__, message=str(e)[:300])
        if isinstance(e, TimeoutError | httpx.TimeoutException):
            timeout = options.timeout if policy is None or policy.timeout_seconds is None else policy.timeout_seconds
            return Attempt(started, elapsed, error="timeout", message=f"no complete response within {timeout:g}s")
        if not isinstance(e, httpx.HTTPError):  # still a failed attempt, not a crash
            log.exception("unexpected error delivering %s", firing.id)
        return Attempt(started, elapsed, error=type(e).__name__, message=str(e)[:300])


def blocked_attempt(started: float, elapsed: float, url: httpx.URL, detail: str) -> Attempt:
    """A target the SSRF guard refused: the record names only the host the tenant wrote; what it
    resolved to and why that is refused (`detail`) go to the operator's log (module docstring)."""
    message = f"blocked by the SSRF guard (host {url.host})"
    return Attempt(started, elapsed, error="blocked", message=message, final=True, detail=detail)


def check_success(attempt: Attempt, policy: Policy, body: bytes | bytearray, limit: int) -> None:
    """Apply the trigger's success check to `attempt` (made with a status; `ok` set for any 2xx):
    ``success.status``, then ``success.body_contains`` in the first `limit` bytes of `body`
    (module docstring)."""
    status = attempt.status
    expected = policy.success_statuses
    if expected is not None and status is not None:
        attempt.ok = expected.matches(status)
        if not attempt.ok:
            attempt.error = "assertion"
            attempt.message = f"expected status {expected.describe()}; got {status}"
            return
    needle = policy.body_contains
    if attempt.ok and needle is not None and body.find(needle.encode(), 0, limit) < 0:
        shown = needle if len(needle) <= 100 else needle[:100] + "..."
        attempt.ok = False
        attempt.error = "assertion"
        attempt.message = f"the response did not contain {shown!r} in its first {limit} bytes"


def retry_after_seconds(value: str | None, *, now: float, cap: float) -> float | None:
    """The seconds a ``Retry-After`` value asks to wait, at most `cap`: delta-seconds (``120``) or
    an HTTP-date (``Wed, 21 Oct 2026 07:28:00 GMT``, less `now`), to the millisecond. A negative
    delay or a past date is 0; a missing or unreadable value is None (ignored)."""
    if value is None:
        return None
    text = value.strip()
    digits = text[1:] if text.startswith("-") else text
    if digits.isascii() and digits.isdigit():
        seconds = float(text)  # a float: no digit-count limit (a huge value is capped below)
    else:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:  # "-0000": UTC, by RFC 5322
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - now
    return round(min(max(seconds, 0.0), cap), 3)
