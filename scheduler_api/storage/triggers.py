"""Triggers in Redis: replace, list and delete a workspace's list, atomically.

Each trigger is two things, written together by one Lua script so that every observer (readers,
the schedulers, the workers) sees the old list or the new list, never a mix:

* its definition, a field of the workspace hash ``sa:ws:{id}``, with a fresh version ``v``;
* its cron entry in rq-scheduler's schedule (``sa:schedule``), member ``{workspace_id}:{index}``,
  score = its next run time. The number of schedule entries of a workspace always equals its count.

Failure rules: the API's calls (`replace`, `delete`, `list_triggers`, `set_paused`, `is_paused`,
and `rotate_secrets` of the CLI) raise Redis being unreachable, slow or refusing writes as
`StoreUnavailable` (scheduler_api.storage.redis_util; the API answers 503). A write is one
script, so a refused or failed one leaves the workspace as it was; after a timeout it may have
been applied (`StoreUnavailable.maybe_done`). The scheduler's and the workers' reads
(`load_definitions`, `load_raw_definitions`, `paused_among`) raise redis-py's errors unchanged:
their loops log them and try again.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any

from redis import Redis

from scheduler_api import cron as cronlib
from scheduler_api.header_crypto import HeaderCipher
from scheduler_api.storage import keys, scripts
from scheduler_api.storage.redis_util import compact_json, redis_errors
from scheduler_api.triggers import Trigger


@dataclass(frozen=True)
class StoredTrigger:
    """A trigger as stored: its definition, index and next run time."""

    workspace_id: str
    index: int
    version: str
    cron: str
    url: str
    method: str
    payload: dict[str, Any] | None
    headers: dict[str, str]
    next_run_at: float | None = None
    timezone: str = "UTC"
    enabled: bool = True

    @property
    def schedule(self) -> cronlib.Cron:
        return cronlib.parse(self.cron, self.timezone)

    @property
    def job_id(self) -> str:
        return keys.job_id(self.workspace_id, self.index)

    @property
    def job_name(self) -> str:
        return f"{self.workspace_id}-trigger-{self.index}"

    @cached_property
    def payload_json(self) -> bytes:
        """`payload` as the JSON bytes a request carries (`b""` for none), encoded once per
        definition: workers keep parsed definitions across firings."""
        return json.dumps(self.payload).encode() if self.payload is not None else b""

    def to_json(self) -> str:
        return compact_json(
            {
                "v": self.version,
                "cron": self.cron,
                "url": self.url,
                "method": self.method,
                "payload": self.payload,
                "headers": self.headers,
                "tz": self.timezone,
                "on": self.enabled,
            }
        )

    @classmethod
    def from_json(
        cls, workspace_id: str, index: int, raw: str | bytes, next_run_at: float | None = None
    ) -> StoredTrigger:
        data = json.loads(raw)
        return cls(
            workspace_id=workspace_id,
            index=index,
            version=data["v"],
            cron=data["cron"],
            url=data["url"],
            method=data["method"],
            payload=data.get("payload"),
            headers=data.get("headers") or {},
            next_run_at=next_run_at,
            timezone=data.get("tz") or "UTC",
            enabled=data.get("on", True),
        )


def replace(
    conn: Redis,
    workspace_id: str,
    triggers: Sequence[Trigger],
    *,
    now: Callable[[], float] = time.time,
    cipher: HeaderCipher | None = None,
    unpause: bool = False,
) -> tuple[int, list[StoredTrigger]]:
    """Replace the workspace's whole list; return (how many were removed, the new list).

    With `cipher`, header values are stored encrypted (the returned triggers hold them sealed).
    With `unpause` (`delete`), the workspace's pause is lifted in the same script.
    """
    ts = now()
    # One random token per replace, made unique per trigger by its index: a version only has to
    # differ from every earlier version of the same jobId.
    token = secrets.token_hex(5)
    next_runs: dict[tuple[str, str], float] = {}  # many triggers of one list share a schedule

    def next_run(cron: str, tz: str) -> float:
        if (cron, tz) not in next_runs:
            next_runs[cron, tz] = cronlib.parse(cron, tz).next_after(ts)
        return next_runs[cron, tz]

    stored = [
        StoredTrigger(
            workspace_id=workspace_id,
            index=i,
            version=f"{token}{i:x}",
            cron=t.cron,
            url=t.url,
            method=t.method,
            payload=t.payload,
            headers=cipher.seal(t.headers or {}) if cipher else dict(t.headers or {}),
            next_run_at=next_run(t.cron, t.timezone or "UTC"),
            timezone=t.timezone or "UTC",
            enabled=t.enabled,
        )
        for i, t in enumerate(triggers)
    ]
    args: list[Any] = [keys.job_id(workspace_id, ""), keys.CHANGED, int(unpause), workspace_id, len(stored)]
    for s in stored:
        args += [s.index, s.to_json(), repr(s.next_run_at)]
    with redis_errors():
        removed = scripts.run(conn, "replace", [keys.workspace(workspace_id), keys.SCHEDULE, keys.PAUSED], args)
    return int(removed), stored


def delete(conn: Redis, workspace_id: str) -> int:
    """Remove every trigger of the workspace, and its pause; return how many triggers there were.

    The workspace is gone: one created later under the same id starts unpaused (a replace, even
    with an empty list, keeps the pause)."""
    removed, _ = replace(conn, workspace_id, [], unpause=True)
    return removed


def list_triggers(conn: Redis, workspace_id: str) -> list[StoredTrigger]:
    """The workspace's triggers in index order, each with its next run time; [] if unknown."""
    with redis_errors():
        flat = scripts.run(conn, "list", [keys.workspace(workspace_id), keys.SCHEDULE], [keys.job_id(workspace_id, "")])
    out = []
    for i in range(0, len(flat), 3):
        score = flat[i + 2]
        out.append(StoredTrigger.from_json(workspace_id, int(flat[i]), flat[i + 1], float(score) if score else None))
    return sorted(out, key=lambda t: t.index)


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
    ws, idx = keys.split_job_id(job_id)
    return StoredTrigger.from_json(ws, int(idx), raw)


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


def rotate_secrets(conn: Redis, cipher: HeaderCipher) -> int:
    """Re-encrypt every stored header value with the first SECRETS_KEY key; return triggers rewritten.

    Each definition is swapped only if it is still the one read (a concurrent replace wins), and its
    version is kept, so firings already scheduled are not dropped.
    """
    rewritten = 0
    with redis_errors():
        for key in conn.scan_iter(match=keys.WORKSPACE_PREFIX + "*", count=500):
            for field, raw in conn.hgetall(key).items():
                data = json.loads(raw)
                if not data.get("headers"):
                    continue
                data["headers"] = cipher.rotate(data["headers"])
                new = compact_json(data)
                rewritten += int(scripts.run(conn, "swap", [key], [field, raw, new]))
    return rewritten
