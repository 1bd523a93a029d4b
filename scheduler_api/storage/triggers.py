"""Triggers in Redis: read a workspace's list and write changes to it, atomically.

Each trigger is two things, written together by one Lua script (``write.lua``) so that every
observer (readers, the schedulers, the workers) sees a change whole or not at all:

* its definition, the field ``{trigger id}`` of the workspace hash ``sa:ws:{workspace id}``, with
  a version ``v`` (new when the trigger is created or its schedule changes, storage.edits: firings
  of the old version not yet started are dropped) and its position ``o`` in the list;
* its cron entry in rq-scheduler's schedule (``sa:schedule``), member ``{workspace_id}:{id}``,
  score = its next run time. The number of schedule entries of a workspace always equals its count
  of triggers not ended (``end_at`` passed, ``max_firings`` reached, a one-off that fired).

Every change also sets the workspace's ETag (``sa:etag:{workspace id}``, a new random token; absent,
read as ``0``, while the workspace has no triggers). A change is planned on a `Snapshot`
(scheduler_api.storage.edits) and written with `write`, which applies it only if what it was
planned on still holds: the client's If-Match, the snapshot's ETag (whole-list changes) or the
touched triggers' stored definitions (one-trigger changes, so that changes of different triggers
never conflict).

Failure rules: the API's calls (`read`, `write`, `set_paused`, `is_paused`, and `rotate_secrets` of
the CLI) raise Redis being unreachable, slow or refusing writes as `StoreUnavailable`
(scheduler_api.storage.redis_util; the API answers 503). A write is one script, so a refused or
failed one leaves the workspace as it was; after a timeout it may have been applied
(`StoreUnavailable.maybe_done`). The scheduler's and the workers' reads (`load_definitions`,
`load_raw_definitions`, `paused_among`) raise redis-py's errors unchanged: their loops log them
and try again.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any

from redis import Redis

from scheduler_api import cron as cronlib
from scheduler_api.policy import Policy, next_run
from scheduler_api.storage import keys, scripts
from scheduler_api.storage.redis_util import compact_json, redis_errors

EMPTY_ETAG = "0"  # the ETag of a workspace without triggers


@dataclass(frozen=True)
class StoredTrigger:
    """A trigger as stored: its id, definition, version, position and next run time."""

    workspace_id: str
    id: str
    version: str
    cron: str | None  # None for a one-off trigger (`at`)
    url: str
    method: str
    payload: dict[str, Any] | None
    headers: dict[str, str]
    next_run_at: float | None = None
    timezone: str = "UTC"
    enabled: bool = True
    position: int = 0
    at: float | None = None  # a one-off trigger's time (unix seconds)
    policy: Policy | None = None  # None: no policy field set (scheduler_api.policy)
    # Auto-disabled (scheduler_api.storage.workspace_settings): (reason, unix time), kept while disabled.
    disabled: tuple[str, float] | None = None

    @property
    def schedule(self) -> cronlib.Cron | None:
        """The parsed cron (None for a one-off trigger)."""
        return cronlib.parse(self.cron, self.timezone) if self.cron is not None else None

    def next_run_after(self, after: float) -> float | None:
        """The first run time after `after` within the trigger's bounds; None once it has ended."""
        return next_run(self.schedule, self.at, self.policy, after)

    @property
    def overlap(self) -> str:
        return self.policy.overlap if self.policy is not None else "allow"

    @property
    def jitter_seconds(self) -> int:
        return self.policy.jitter_seconds if self.policy is not None else 0

    @property
    def max_firings(self) -> int | None:
        return self.policy.max_firings if self.policy is not None else None

    @property
    def job_id(self) -> str:
        return keys.job_id(self.workspace_id, self.id)

    @property
    def job_name(self) -> str:
        return f"{self.workspace_id}-trigger-{self.id}"

    @cached_property
    def payload_json(self) -> bytes:
        """`payload` as the JSON bytes a request carries (`b""` for none), encoded once per
        definition: workers keep parsed definitions across firings."""
        return json.dumps(self.payload).encode() if self.payload is not None else b""

    def to_json(self) -> str:
        data: dict[str, Any] = {
            "v": self.version,
            "o": self.position,
            "cron": self.cron,
            "url": self.url,
            "method": self.method,
            "payload": self.payload,
            "headers": self.headers,
            "tz": self.timezone,
            "on": self.enabled,
        }
        if self.disabled is not None and not self.enabled:
            data["off"] = {"reason": self.disabled[0], "at": self.disabled[1]}
        if self.at is not None:
            data["at"] = self.at
        if self.policy is not None:
            data["p"] = self.policy.to_dict()
        return compact_json(data)

    @classmethod
    def from_json(
        cls, workspace_id: str, trigger_id: str, raw: str | bytes, next_run_at: float | None = None
    ) -> StoredTrigger:
        data = json.loads(raw)
        return cls(
            workspace_id=workspace_id,
            id=trigger_id,
            version=data["v"],
            cron=data["cron"],
            url=data["url"],
            method=data["method"],
            payload=data.get("payload"),
            headers=data.get("headers") or {},
            next_run_at=next_run_at,
            timezone=data.get("tz") or "UTC",
            enabled=data.get("on", True),
            position=data.get("o", 0),
            at=data.get("at"),
            policy=Policy.from_dict(data["p"]) if "p" in data else None,
            disabled=(data["off"]["reason"], float(data["off"]["at"])) if "off" in data else None,
        )


@dataclass(frozen=True)
class Snapshot:
    """A workspace's triggers as read at one instant, with its ETag: what a change is planned on."""

    workspace_id: str
    etag: str
    triggers: list[StoredTrigger]  # in list order
    raws: dict[str, str]  # trigger id -> its definition JSON as read

    def find(self, trigger_id: str) -> StoredTrigger | None:
        return next((t for t in self.triggers if t.id == trigger_id), None)


def read(conn: Redis, workspace_id: str) -> Snapshot:
    """The workspace's triggers in list order, each with its next run time, and its ETag."""
    with redis_errors():
        flat = scripts.run(
            conn,
            "list",
            [keys.workspace(workspace_id), keys.SCHEDULE, keys.etag(workspace_id)],
            [keys.job_id(workspace_id, "")],
        )
    etag = _text(flat[0])
    triggers, raws = [], {}
    for i in range(1, len(flat), 3):
        trigger_id, raw, score = _text(flat[i]), _text(flat[i + 1]), flat[i + 2]
        raws[trigger_id] = raw
        triggers.append(StoredTrigger.from_json(workspace_id, trigger_id, raw, float(score) if score else None))
    triggers.sort(key=lambda t: (t.position, t.id))
    return Snapshot(workspace_id, etag, triggers, raws)


def list_triggers(conn: Redis, workspace_id: str) -> list[StoredTrigger]:
    """The workspace's triggers in list order, each with its next run time; [] if unknown."""
    return read(conn, workspace_id).triggers


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class Write:
    """One change of a workspace's triggers, as planned on a `Snapshot`.

    `upserts`: definitions to write, each with whether its schedule entry is written too (a new
    trigger, or a new cron or time zone) or kept. `deletes`: ids to remove. `whole_list`: every id
    not in `upserts` is removed (a replace). `expect_etag` / `expect`: what must still hold for the
    write to apply (the snapshot's ETag; the touched triggers' definitions as read, None = absent).
    """

    upserts: list[tuple[StoredTrigger, bool]] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    whole_list: bool = False
    expect_etag: str = ""
    expect: dict[str, str | None] = field(default_factory=dict)
    unpause: bool = False

    @property
    def empty(self) -> bool:
        return not (self.upserts or self.deletes or self.whole_list or self.unpause)


class WriteStatus(enum.Enum):
    APPLIED = "ok"
    PRECONDITION_FAILED = "precondition"  # the client's If-Match names another ETag
    CONFLICT = "conflict"  # the workspace changed since the snapshot: plan again
    TOO_MANY = "too_many"  # the change would exceed the workspace's trigger limit


def write(
    conn: Redis,
    workspace_id: str,
    change: Write,
    *,
    new_etag: str,
    if_match: Sequence[str] = (),
    max_triggers: int,
) -> tuple[WriteStatus, int]:
    """Apply `change` if its expectations and `if_match` (ETags, any of which may match) still hold;
    return (the status, the number of triggers before the change, or the count that was too many).

    An upsert with its schedule entry written gets the entry at its `next_run_at`, or none when
    that is None (the trigger has ended at once: ``end_at`` or ``at`` passed); either way its
    ``max_firings`` count restarts and a firing waiting for its active one (``buffer_one``) goes.
    A removed trigger's firing state goes with it (keys.state)."""
    args: list[Any] = [
        keys.job_id(workspace_id, ""),
        keys.CHANGED,
        workspace_id,
        int(change.unpause),
        " ".join(if_match),
        new_etag,
        change.expect_etag,
        int(change.whole_list),
        max_triggers,
        len(change.expect),
    ]
    for trigger_id, raw in change.expect.items():
        args += [trigger_id, raw or ""]
    args.append(len(change.upserts))
    for t, reschedule in change.upserts:
        next_run = ("end" if t.next_run_at is None else repr(t.next_run_at)) if reschedule else ""
        args += [t.id, t.to_json(), next_run]
    args.append(len(change.deletes))
    args += change.deletes
    with redis_errors():
        answer = scripts.run(
            conn,
            "write",
            [
                keys.workspace(workspace_id),
                keys.SCHEDULE,
                keys.PAUSED,
                keys.etag(workspace_id),
                keys.state(workspace_id),
                keys.WORKSPACES,
                keys.RETIRED,
            ],
            args,
        )
    status = WriteStatus(_text(answer[0]))
    return status, int(answer[1]) if len(answer) > 1 and status is not WriteStatus.CONFLICT else 0


def load_raw_definitions(conn: Redis, job_ids: Sequence[str]) -> dict[str, bytes]:
    """The stored JSON of the given jobIds, in one round trip (one HMGET per workspace); missing
    ones are left out."""
    by_workspace: dict[str, tuple[list[str], list[str]]] = {}
    for jid in job_ids:
        ws, idx = keys.split_job_id(jid)
        jids, fields = by_workspace.setdefault(ws, ([], []))
        jids.append(jid)
        fields.append(idx)
    pipe = conn.pipeline(transaction=False)
    for ws, (_, fields) in by_workspace.items():
        pipe.hmget(keys.workspace(ws), fields)
    found: dict[str, bytes] = {}
    for (jids, _), raws in zip(by_workspace.values(), pipe.execute(), strict=True):
        found.update((jid, raw) for jid, raw in zip(jids, raws, strict=True) if raw is not None)
    return found


def load_definitions(conn: Redis, job_ids: Sequence[str]) -> dict[str, StoredTrigger]:
    """Definitions of the given jobIds, in one round trip; missing ones are left out."""
    return {jid: parse_definition(jid, raw) for jid, raw in load_raw_definitions(conn, job_ids).items()}


@lru_cache(maxsize=100_000)
def parse_definition(job_id: str, raw: bytes) -> StoredTrigger:
    """A stored definition, parsed once per distinct JSON: the scheduler and the workers read the same
    definitions tick after tick (treat the result as read-only)."""
    ws, trigger_id = keys.split_job_id(job_id)
    return StoredTrigger.from_json(ws, trigger_id, raw)


def set_paused(conn: Redis, workspace_id: str, paused: bool) -> None:
    """Pause or resume a whole workspace: its triggers keep their schedule but do not fire."""
    with redis_errors():
        if paused:
            conn.sadd(keys.PAUSED, workspace_id)
        else:
            conn.srem(keys.PAUSED, workspace_id)


def is_paused(conn: Redis, workspace_id: str) -> bool:
    with redis_errors():
        return bool(conn.sismember(keys.PAUSED, workspace_id))


def paused_among(conn: Redis, workspace_ids: Sequence[str]) -> set[str]:
    """Which of `workspace_ids` are paused, in one round trip."""
    if not workspace_ids:
        return set()
    flags = conn.smismember(keys.PAUSED, list(workspace_ids))
    return {ws for ws, flag in zip(workspace_ids, flags, strict=True) if flag}
