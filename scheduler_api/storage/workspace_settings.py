"""A workspace's settings in Redis: failure alerts, auto-disable and per-host rate limits.

One document per workspace, ``{"alerts": {"url", "after_failures"} | null,
"auto_disable_after_failures": n | null, "rate_limits": [{"host", "per_second", "concurrency"}]}``,
in the hash keys.workspace_settings with its own ETag (``0`` while none is stored: the defaults).
The API validates a document (scheduler_api.api.routes.settings) and writes it whole with `write`,
which honours If-Match like a trigger write. The workers read the rate limits of a batch's
workspaces once per batch (`rate_limits_of`) and enforce them (scheduler_api.delivery.limits).

Failures are counted by the record script (``lua/record.lua``, called by
scheduler_api.storage.firings.record, in the same script that stores the outcome), so the count
is exact across any number of workers: per trigger, in its workspace's state hash (keys.state),
``{id}!`` counts its consecutive failed firings. Rules:

* a final ``failed`` or ``blocked`` outcome of a firing of the trigger (scheduled, run now or a
  replay; retries of one firing count once: only final outcomes count) adds one; a ``delivered``
  one sets the count back to 0; ``missed``, ``skipped`` and dropped firings change nothing;
* when the count becomes exactly ``alerts.after_failures``, one alert ``trigger.failing``;
* when it becomes exactly ``auto_disable_after_failures``, the trigger is disabled (its stored
  definition gets ``"on": false`` and ``"off": {"reason", "at"}``, its version is kept: firings
  already committed are still sent, no new one is; the workspace's ETag changes) and, with alerts
  set, one alert ``trigger.disabled``;
* after a ``failing`` or ``disabled`` alert (the flag ``{id}^``), the next delivered firing
  raises one ``trigger.recovered``: once per transition, never per failure;
* an alert is a firing of its own (``{ws}:~alert@{trigger id}.{event}.{token}``, no trigger), put
  into the outbox at once by the same script and sent by a worker (scheduler_api.delivery.alerts);
  its outcome is never counted, so a failing alert raises no alert;
* re-enabling the trigger (``enabled: true``) sets its count back to 0 (`reset_failures`, called by
  scheduler_api.storage.edits); removing it drops its count and flag (``lua/write.lua``).

Failure rules: `read` and `write` raise Redis being unreachable, slow or refusing as
`StoreUnavailable` (the API answers 503), and so does `reset_failures` (called after a trigger
write, which stays applied); `write` raises `PreconditionFailed` when If-Match names another ETag,
and writes nothing then.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis import Redis

from scheduler_api.errors import PreconditionFailed
from scheduler_api.storage import keys, scripts
from scheduler_api.storage.redis_util import compact_json, redis_errors

EMPTY_ETAG = "0"  # the ETag of a workspace without stored settings


@dataclass(frozen=True)
class RateLimit:
    """At most `per_second` requests a second and `concurrency` in flight to `host` (lower-case,
    IDNA-encoded, no port), for one workspace; None: no such bound."""

    host: str
    per_second: float | None = None
    concurrency: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "per_second": self.per_second, "concurrency": self.concurrency}


@dataclass(frozen=True)
class WorkspaceSettings:
    """A workspace's settings (module docstring); the defaults are "nothing set"."""

    alert_url: str | None = None
    alert_after: int | None = None  # alerts.after_failures; set with alert_url
    disable_after: int | None = None  # auto_disable_after_failures
    rate_limits: tuple[RateLimit, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """The document as the API shows it (and as it is stored)."""
        alerts = {"url": self.alert_url, "after_failures": self.alert_after} if self.alert_url else None
        return {
            "alerts": alerts,
            "auto_disable_after_failures": self.disable_after,
            "rate_limits": [r.to_dict() for r in self.rate_limits],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkspaceSettings:
        alerts = data.get("alerts") or {}
        return cls(
            alert_url=alerts.get("url"),
            alert_after=alerts.get("after_failures"),
            disable_after=data.get("auto_disable_after_failures"),
            rate_limits=tuple(RateLimit(**r) for r in data.get("rate_limits") or ()),
        )


def read(conn: Redis, workspace_id: str) -> tuple[WorkspaceSettings, str]:
    """The workspace's settings and their ETag (the defaults and ``0`` when none are stored)."""
    with redis_errors():
        doc, etag = conn.hmget(keys.workspace_settings(workspace_id), ["doc", "etag"])
    if doc is None:
        return WorkspaceSettings(), EMPTY_ETAG
    return WorkspaceSettings.from_dict(json.loads(doc)), etag.decode() if isinstance(etag, bytes) else str(etag)


def write(conn: Redis, workspace_id: str, settings: WorkspaceSettings, *, if_match: Sequence[str] = ()) -> str:
    """Replace the workspace's settings if `if_match` (ETags, any of which may match; none: any)
    still holds; return the new ETag. The record script sees the new thresholds at once."""
    new_etag = secrets.token_hex(8)
    args = [
        " ".join(if_match),
        new_etag,
        compact_json(settings.to_dict()),
        settings.alert_url or "",
        settings.alert_after if settings.alert_url else "",
        settings.disable_after or "",
    ]
    with redis_errors():
        answer = scripts.run(
            conn, "workspace_settings", [keys.workspace_settings(workspace_id), keys.state(workspace_id)], args
        )
    if answer[0] in (b"precondition", "precondition"):
        current = answer[1].decode() if isinstance(answer[1], bytes) else str(answer[1])
        why = f'the settings changed: their ETag is now "{current}"; read them again'
        raise PreconditionFailed("Precondition failed", [{"path": "headers.if-match", "message": why}])
    return new_etag


def rate_limits_of(conn: Redis, workspace_ids: Sequence[str]) -> dict[str, dict[str, RateLimit]]:
    """The rate limits of those of `workspace_ids` that have any, by workspace and then host (one
    round trip). Redis errors are raised unchanged (a worker's batch fails; another takes it)."""
    pipe = conn.pipeline(transaction=False)
    for workspace_id in workspace_ids:
        pipe.hget(keys.workspace_settings(workspace_id), "doc")
    found: dict[str, dict[str, RateLimit]] = {}
    for workspace_id, doc in zip(workspace_ids, pipe.execute(), strict=True):
        limits = json.loads(doc).get("rate_limits") if doc else None
        if limits:
            found[workspace_id] = {r["host"]: RateLimit(**r) for r in limits}
    return found


def record_keys(workspace_id: str) -> tuple[str, str, str]:
    """The keys ``lua/record.lua`` takes per workspace to count failures (settings, definitions,
    ETag), in that order."""
    return keys.workspace_settings(workspace_id), keys.workspace(workspace_id), keys.etag(workspace_id)


def failures_field(trigger_id: str) -> str:
    """The field of keys.state counting a trigger's consecutive failed firings."""
    return trigger_id + "!"


def failing_field(trigger_id: str) -> str:
    """The field of keys.state present once a failing or disabled alert was raised for a trigger."""
    return trigger_id + "^"


def consecutive_failures(conn: Redis, workspace_id: str, trigger_id: str) -> int:
    with redis_errors():
        return int(conn.hget(keys.state(workspace_id), failures_field(trigger_id)) or 0)


def reset_failures(conn: Redis, workspace_id: str, trigger_ids: Sequence[str]) -> None:
    """Set the counts of consecutive failed firings of `trigger_ids` back to 0 (they were re-enabled)."""
    if trigger_ids:
        with redis_errors():
            conn.hdel(keys.state(workspace_id), *map(failures_field, trigger_ids))
