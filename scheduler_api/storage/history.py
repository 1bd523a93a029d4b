"""Delivery history per workspace: one record per firing, newest scheduled time first.

A `Record` is the shape of one firing's record: what the API shows, and what the workers and the
scheduler store (through scheduler_api.storage.firings, in the same script as the step that
decides it). Its `outcome` is one of `OutcomeKind`:

* ``delivered`` - a 2xx answer; final;
* ``failed`` - the last attempt failed, or the firing could never be sent; final;
* ``blocked`` - the SSRF guard refused the target; final, never retried;
* ``retrying`` - an attempt failed and the next one is scheduled (``next_attempt_at``);
* ``missed`` - the scheduler reached the firing later than ``MISFIRE_GRACE_SECONDS``; nothing sent;
* ``skipped`` - not sent because another firing of its trigger was active (``overlap``: ``skip``,
  or ``buffer_one`` with one already waiting); ``reason`` says why (``overlap``) and
  ``active_id`` names the active firing. Kept like delivered records (it is no failure).

An alert (scheduler_api.delivery.alerts) has a record of its own, ``"kind": "alert"`` with
``"alert": {"type", "id", "url"}`` (the trigger it is about, where it went), outcomes as a firing's.

(``dropped`` is an outcome kind, not a record: a firing whose trigger was removed before it was
sent leaves no record.) A replayed record (scheduler_api.storage.replay) keeps its id and gains the
replay's attempts, its outcome and ``replays``, the number of times it was sent again. Which
attempts are retried is decided in scheduler_api.delivery.

Retention (`Retention`), per workspace (each tenant gets the original's per-queue guarantees, and
one busy tenant cannot evict another's history): delivered and skipped records are kept
``COMPLETED_KEEP_SECONDS`` and at most ``COMPLETED_KEEP_COUNT`` (the ``done`` set); failed,
blocked and missed ones the last ``FAILED_KEEP_COUNT``; and at most ``HISTORY_MAX_PER_WORKSPACE``
records of any outcome (retrying ones included) in all (``lua/trim.lua``, applied by firings.record, commit_due, sweep).

Failure rules: `list_records` raises Redis being unreachable, slow or refusing as
`StoreUnavailable` (the API answers 503). Every stored record was written by `Record.to_json`;
reading one that is not (a bug) raises KeyError or ValueError.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, NamedTuple, Protocol

from redis import Redis

from scheduler_api import tracing
from scheduler_api.cron import iso
from scheduler_api.settings import Settings
from scheduler_api.storage import keys, scripts
from scheduler_api.storage.redis_util import compact_json, redis_errors


@dataclass(frozen=True)
class Retention:
    """How long records are kept, per workspace (module docstring)."""

    keep_seconds: int
    keep_done: int
    keep_failed: int
    keep_history: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Retention:
        return cls(
            settings.completed_keep_seconds,
            settings.completed_keep_count,
            settings.failed_keep_count,
            settings.history_cap,
        )

    def args(self) -> list[int]:
        """The four values in the order the scripts take them (``lua/trim.lua``, `retention_at`)."""
        return [self.keep_seconds, self.keep_done, self.keep_failed, self.keep_history]


class OutcomeKind(StrEnum):
    """What became of a firing (module docstring); stored as the word, in records and in Lua."""

    DELIVERED = "delivered"
    FAILED = "failed"
    BLOCKED = "blocked"
    RETRYING = "retrying"
    MISSED = "missed"
    SKIPPED = "skipped"
    DROPPED = "dropped"


# The outcomes a record can have, for the API's filter: every OutcomeKind but DROPPED.
OutcomeName = Literal["delivered", "failed", "retrying", "missed", "blocked", "skipped"]


class FiringLike(Protocol):
    """What a record takes from the firing it is about (scheduler_api.storage.firings.Firing)."""

    @property
    def id(self) -> str: ...

    @property
    def job_id(self) -> str: ...

    @property
    def scheduled_at(self) -> float: ...


class Record(NamedTuple):
    """One firing's record. Times are unix seconds here and ISO 8601 UTC in the JSON (`cron.iso`).

    Built by the constructors below, one per outcome; nothing is validated (the workers build
    thousands a second from values they made themselves). A NamedTuple rather than a frozen
    dataclass: as immutable, and cheaper to build (a frozen dataclass sets each field through
    `object.__setattr__`), which counts at one record per delivery.
    """

    id: str  # the firing id, ``{jobId}@{scheduled time}``
    job_id: str
    workspace_id: str
    scheduled_at: float
    outcome: OutcomeKind
    attempts: list[dict[str, Any]]  # each attempt as scheduler_api.delivery.attempt.Attempt.as_dict
    finished_at: float | None = None  # delivered, failed, blocked
    next_attempt_at: float | None = None  # retrying
    late_seconds: float | None = None  # missed: how late the scheduler reached it
    missed_since: float | None = None  # missed: the first run time passed over
    reason: str | None = None  # skipped: why ("overlap")
    active_id: str | None = None  # skipped: the firing that was active
    replays: int | None = None  # sent again this many times (scheduler_api.storage.replay); None: never
    kind: str | None = None  # "alert": an alert's record (scheduler_api.delivery.alerts); None: a trigger's
    alert: dict[str, Any] | None = None  # an alert's {"type", "id" (the trigger's), "url"}

    @classmethod
    def delivered(
        cls, firing: FiringLike, workspace_id: str, attempts: list[dict[str, Any]], *, finished_at: float
    ) -> Record:
        return cls(
            firing.id, firing.job_id, workspace_id, firing.scheduled_at, OutcomeKind.DELIVERED, attempts, finished_at
        )

    @classmethod
    def failed(
        cls, firing: FiringLike, workspace_id: str, attempts: list[dict[str, Any]], *, finished_at: float
    ) -> Record:
        return cls(
            firing.id, firing.job_id, workspace_id, firing.scheduled_at, OutcomeKind.FAILED, attempts, finished_at
        )

    @classmethod
    def blocked(
        cls, firing: FiringLike, workspace_id: str, attempts: list[dict[str, Any]], *, finished_at: float
    ) -> Record:
        return cls(
            firing.id, firing.job_id, workspace_id, firing.scheduled_at, OutcomeKind.BLOCKED, attempts, finished_at
        )

    @classmethod
    def retrying(
        cls, firing: FiringLike, workspace_id: str, attempts: list[dict[str, Any]], *, next_attempt_at: float
    ) -> Record:
        return cls(
            firing.id,
            firing.job_id,
            workspace_id,
            firing.scheduled_at,
            OutcomeKind.RETRYING,
            attempts,
            next_attempt_at=next_attempt_at,
        )

    @classmethod
    def missed(
        cls,
        firing_id: str,
        job_id: str,
        workspace_id: str,
        scheduled_at: float,
        *,
        late_seconds: float,
        missed_since: float,
    ) -> Record:
        """A firing the scheduler skipped; `late_seconds` is kept to the millisecond."""
        return cls(
            firing_id,
            job_id,
            workspace_id,
            scheduled_at,
            OutcomeKind.MISSED,
            [],
            late_seconds=round(late_seconds, 3),
            missed_since=missed_since,
        )

    @classmethod
    def skipped(cls, firing: FiringLike, workspace_id: str, *, active_id: str, finished_at: float) -> Record:
        """A firing not sent because `active_id`, another firing of its trigger, was active."""
        return cls(
            firing.id,
            firing.job_id,
            workspace_id,
            firing.scheduled_at,
            OutcomeKind.SKIPPED,
            [],
            finished_at,
            reason="overlap",
            active_id=active_id,
        )

    def skipped_json_without_active_id(self) -> str:
        """A skipped record's JSON without ``active_id``: the commit script (``lua/commit_due.lua``)
        appends it once it has read which firing is active."""
        data = self.to_dict()
        del data["active_id"]
        return compact_json(data)

    def to_dict(self) -> dict[str, Any]:
        """The record as the API shows it (and as it is stored), keys in this order."""
        data: dict[str, Any] = {
            "id": self.id,
            "jobId": self.job_id,
            "workspace_id": self.workspace_id,
            "scheduled_at": iso(self.scheduled_at),
        }
        if self.outcome is OutcomeKind.MISSED:
            data["outcome"] = self.outcome.value
            data["late_seconds"] = self.late_seconds
            data["missed_since"] = iso(self.missed_since) if self.missed_since is not None else None
            data["attempts"] = self.attempts
            return data
        data["attempts"] = self.attempts
        data["outcome"] = self.outcome.value
        if self.reason is not None:
            data["reason"] = self.reason
            data["active_id"] = self.active_id
        if self.next_attempt_at is not None:
            data["next_attempt_at"] = iso(self.next_attempt_at)
        if self.finished_at is not None:
            data["finished_at"] = iso(self.finished_at)
        if self.replays is not None:
            data["replays"] = self.replays
        if self.kind is not None:
            data["kind"] = self.kind
            data["alert"] = self.alert
        return data

    def to_json(self) -> str:
        return compact_json(self.to_dict())

    def to_view(self) -> dict[str, Any]:
        """The record as the API shows it: as stored, plus the firing's W3C ``trace_id`` when it
        was sent (scheduler_api.tracing: computed from the id, so nothing more is stored)."""
        data = self.to_dict()
        if self.attempts:
            data["trace_id"] = tracing.trace_id(self.id)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Record:
        return cls(
            data["id"],
            data["jobId"],
            data["workspace_id"],
            _unix(data["scheduled_at"]),
            OutcomeKind(data["outcome"]),
            data["attempts"],
            finished_at=_unix_or_none(data.get("finished_at")),
            next_attempt_at=_unix_or_none(data.get("next_attempt_at")),
            late_seconds=data.get("late_seconds"),
            missed_since=_unix_or_none(data.get("missed_since")),
            reason=data.get("reason"),
            active_id=data.get("active_id"),
            replays=data.get("replays"),
            kind=data.get("kind"),
            alert=data.get("alert"),
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> Record:
        return cls.from_dict(json.loads(raw))


def _unix(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def _unix_or_none(text: str | None) -> float | None:
    return None if text is None else _unix(text)


def list_records(
    conn: Redis,
    workspace_id: str,
    *,
    trigger: str | None = None,
    outcome: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """The workspace's records as the API shows them (`Record.to_dict`), newest scheduled time
    first, filtered by trigger id and outcome."""
    with redis_errors():
        ids: list[bytes] = conn.zrevrange(keys.history(workspace_id), 0, -1)  # type: ignore[assignment]
        raws = conn.hmget(keys.records(workspace_id), ids) if ids else []
    job_id = keys.job_id(workspace_id, trigger) if trigger is not None else None
    out = []
    for raw in raws:
        if raw is None:
            continue
        data = json.loads(raw)
        if job_id is not None and data["jobId"] != job_id:
            continue
        if outcome is not None and data["outcome"] != outcome:
            continue
        out.append(Record.from_dict(data).to_view())
        if len(out) >= limit:
            break
    return out


def sweep(conn: Redis, workspace_ids: Sequence[str], *, now: float, retention: Retention) -> int:
    """Apply retention to workspaces whether or not they get new records; return how many whole
    histories were dropped.

    Records are trimmed when a workspace gets a new one, so a quiet workspace would keep delivered
    records past `COMPLETED_KEEP_SECONDS`, and one with no trigger left would keep its history
    for ever: the scheduler sweeps every workspace with a history (scheduler_api.engine.retention).
    A workspace with no trigger loses its whole history (failed records included) once its newest
    finished record is `COMPLETED_KEEP_SECONDS` old.
    """
    if not workspace_ids:
        return 0
    script_keys: list[str] = [keys.RETIRED]
    for ws in workspace_ids:
        script_keys += (keys.workspace(ws), *keys.history_keys(ws))
    return int(scripts.run(conn, "sweep", script_keys, [repr(now), *retention.args(), *workspace_ids]))
