"""Changes of a workspace's triggers: planned on a snapshot, diffed, then written with compare-and-set.

Identity rules (README "Trigger identity"):
* a trigger is known by its id (given, or its index in the list as a string), never by position;
* a trigger kept unchanged by a change is not written at all: same version, same schedule entry,
  so it neither fires an extra time nor skips one;
* a kept trigger whose schedule changes (``cron``, ``timezone``, ``at``, ``start_at``, ``end_at``,
  ``max_firings``, ``jitter_seconds``: `RESCHEDULING`) gets a new version (its firings not yet
  started are dropped) and its next run computed afresh from now; none left (an ``end_at`` or
  ``at`` already past) writes the trigger without a schedule entry: it is ended;
* any other change (url, method, payload, headers, enabled, position, and the delivery policy:
  ``timeout_seconds``, ``retry``, ``final_statuses``, ``success``, ``overlap``) keeps the version
  and the schedule entry: it applies to every firing not yet started;
* a trigger turned from disabled to enabled (by hand or auto-disabled) has its count of
  consecutive failed firings set back to 0 (scheduler_api.storage.workspace_settings);
* a one-off's ``at`` must be in the future when the trigger is created or its ``at`` changes; an
  unchanged ``at`` is kept as it is, even past (so the same list can be sent twice): otherwise
  `InvalidRequest` naming the field (``triggers[i].at``, ``at`` for one trigger);
* header values are compared in plain text (decrypted with the cipher when stored encrypted), so
  only a real change of a value is reported; a trigger that is written has its values sealed afresh
  with the current ``SECRETS_KEY``.

`apply` reads a snapshot, asks the planner for a `Plan`, and writes it; when the workspace changed
in between (a concurrent write) it plans again on a fresh snapshot, so concurrent changes of
different triggers all land. Failure rules: a stale If-Match is `PreconditionFailed` and nothing is
written; a change over the trigger limit is `InvalidRequest`; after `MAX_ATTEMPTS` conflicting
rounds `StoreUnavailable` (503, nothing written). A dry run plans and checks If-Match, writes
nothing.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis import Redis

from scheduler_api import cron as cronlib
from scheduler_api.errors import InvalidRequest, PreconditionFailed, SecretsError, StoreUnavailable
from scheduler_api.header_crypto import HeaderCipher
from scheduler_api.policy import POLICY_FIELDS, Policy, next_run
from scheduler_api.storage.triggers import EMPTY_ETAG, Snapshot, StoredTrigger, Write, WriteStatus, read, write
from scheduler_api.storage.workspace_settings import reset_failures
from scheduler_api.triggers import Trigger

MAX_ATTEMPTS = 50  # planning rounds against concurrent writes before giving up (503)
COMPARED = ("cron", "at", "timezone", "url", "method", "payload", "enabled")
RESCHEDULING = frozenset({"cron", "timezone", "at", "start_at", "end_at", "max_firings", "jitter_seconds"})


@dataclass(frozen=True)
class Diff:
    """What a change does, by trigger id. `changed` names fields; header *names* only."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[dict[str, Any]] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"added": self.added, "removed": self.removed, "changed": self.changed, "unchanged": self.unchanged}


@dataclass(frozen=True)
class Plan:
    """A change planned on `snapshot`: the write, the workspace's list after it, and its diff."""

    snapshot: Snapshot
    change: Write
    triggers: list[StoredTrigger]
    diff: Diff
    before: int = 0  # triggers the workspace had when the change was written
    etag: str = ""  # the workspace's ETag after the change (the snapshot's when nothing was written)


Planner = Callable[[Snapshot], Plan]


class Placer:
    """Builds the stored form of triggers for one plan: versions, next runs (memoised per schedule
    and bounds), headers sealed or kept."""

    def __init__(self, snapshot: Snapshot, *, now: float, cipher: HeaderCipher | None) -> None:
        self.snapshot = snapshot
        self.now = now
        self.cipher = cipher
        self.token = secrets.token_hex(5)
        self.placed = 0
        self._next_runs: dict[tuple[str | None, str, float | None, float | None, float | None], float | None] = {}

    def next_run(self, cron: str | None, tz: str, at: float | None, policy: Policy | None) -> float | None:
        """The trigger's first run time after now within its bounds; None: it has ended."""
        start, end = (policy.start_at, policy.end_at) if policy is not None else (None, None)
        key = (cron, tz, at, start, end)
        if key not in self._next_runs:
            schedule = cronlib.parse(cron, tz) if cron is not None else None
            self._next_runs[key] = next_run(schedule, at, policy, self.now)
        return self._next_runs[key]

    def plain_headers(self, stored: StoredTrigger) -> dict[str, str] | None:
        """The stored header values in plain text; None when they cannot be decrypted."""
        if self.cipher is None:
            return stored.headers
        try:
            return self.cipher.open(stored.headers, workspace_id=stored.workspace_id)
        except SecretsError:
            return None

    def sealed(self, headers: dict[str, str]) -> dict[str, str]:
        """The values as stored: sealed for this workspace and each header name, or kept."""
        return self.cipher.seal(headers, workspace_id=self.snapshot.workspace_id) if self.cipher else headers

    def place(
        self, trigger_id: str, t: Trigger, position: int, *, path: str = ""
    ) -> tuple[StoredTrigger, bool, list[str]]:
        """(The stored trigger, whether its schedule entry is written, the fields that changed).
        `path`: where the trigger is in the request (``triggers[2]``; "" for a lone one), for errors."""
        prev = self.snapshot.find(trigger_id)
        tz = t.timezone or "UTC"
        at = t.at.timestamp() if t.at is not None else None
        policy = Policy.from_dict(t.policy_dict())
        new_headers = dict(t.headers or {})
        self.placed += 1
        if at is not None and (prev is None or prev.at != at) and at <= self.now:
            where = f"{path}.at" if path else "at"
            raise InvalidRequest("Invalid request", [{"path": where, "message": "must be in the future"}])
        if prev is None:
            stored = StoredTrigger(
                workspace_id=self.snapshot.workspace_id,
                id=trigger_id,
                version=f"{self.token}{self.placed:x}",
                cron=t.cron,
                url=t.url,
                method=t.method,
                payload=t.payload,
                headers=self.sealed(new_headers),
                next_run_at=self.next_run(t.cron, tz, at, policy),
                timezone=tz,
                enabled=t.enabled,
                position=position,
                at=at,
                policy=policy,
            )
            return stored, True, []
        wanted: dict[str, Any] = {"cron": t.cron, "at": at, "timezone": tz, "url": t.url, "method": t.method}
        wanted |= {"payload": t.payload, "enabled": t.enabled}
        had: dict[str, Any] = {"cron": prev.cron, "at": prev.at, "timezone": prev.timezone, "url": prev.url}
        had |= {"method": prev.method, "payload": prev.payload, "enabled": prev.enabled}
        fields = [name for name in COMPARED if had[name] != wanted[name]]
        # Compared in the stored form, so that [404, "5xx"] and ["5xx", 404] are the same.
        old_policy = prev.policy.to_dict() if prev.policy is not None else {}
        new_policy = policy.to_dict() if policy is not None else {}
        fields += [name for name in POLICY_FIELDS if old_policy.get(name) != new_policy.get(name)]
        old_plain = self.plain_headers(prev)
        # Values are sealed afresh with the current key whenever the trigger is written.
        headers = self.sealed(new_headers)
        for name in sorted(set(new_headers) | set(prev.headers)):
            if old_plain is None or old_plain.get(name) != new_headers.get(name):
                fields.append(f"headers.{name}")
        reschedule = bool(RESCHEDULING & set(fields))
        stored = dataclasses.replace(
            prev,
            version=f"{self.token}{self.placed:x}" if reschedule else prev.version,
            cron=t.cron,
            url=t.url,
            method=t.method,
            payload=t.payload,
            headers=headers,
            next_run_at=self.next_run(t.cron, tz, at, policy) if reschedule else prev.next_run_at,
            timezone=tz,
            enabled=t.enabled,
            position=position,
            at=at,
            policy=policy,
        )
        return stored, reschedule, fields


def plan_replace(snapshot: Snapshot, triggers: Sequence[Trigger], *, now: float, cipher: HeaderCipher | None) -> Plan:
    """The whole list replaced by `triggers` (ids default to their index)."""
    placer = Placer(snapshot, now=now, cipher=cipher)
    diff = Diff()
    result: list[StoredTrigger] = []
    upserts: list[tuple[StoredTrigger, bool]] = []
    moved = False
    for i, t in enumerate(triggers):
        trigger_id = t.id if t.id is not None else str(i)
        stored, reschedule, fields = placer.place(trigger_id, t, i, path=f"triggers[{i}]")
        prev = snapshot.find(trigger_id)
        if prev is None:
            diff.added.append(trigger_id)
        elif fields:
            diff.changed.append({"id": trigger_id, "fields": fields})
        else:
            diff.unchanged.append(trigger_id)
            moved = moved or prev.position != i
        result.append(stored)
        upserts.append((stored, reschedule))
    kept = {t.id for t in result}
    diff.removed.extend(t.id for t in snapshot.triggers if t.id not in kept)
    if diff.added or diff.removed or diff.changed or moved:
        change = Write(upserts=upserts, whole_list=True, expect_etag=snapshot.etag)
    else:
        change = Write()  # nothing to write: the schedule and the ETag stay as they are
    return Plan(snapshot, change, result, diff)


def plan_delete_all(snapshot: Snapshot) -> Plan:
    """Every trigger removed, and the workspace's pause lifted."""
    diff = Diff(removed=[t.id for t in snapshot.triggers])
    return Plan(snapshot, Write(whole_list=True, expect_etag=snapshot.etag, unpause=True), [], diff)


def plan_put(snapshot: Snapshot, trigger_id: str, t: Trigger, *, now: float, cipher: HeaderCipher | None) -> Plan:
    """One trigger created (at the end of the list) or replaced (in its place)."""
    prev = snapshot.find(trigger_id)
    position = prev.position if prev else max((x.position for x in snapshot.triggers), default=-1) + 1
    stored, reschedule, fields = Placer(snapshot, now=now, cipher=cipher).place(trigger_id, t, position)
    if prev is None:
        diff = Diff(added=[trigger_id], unchanged=[x.id for x in snapshot.triggers])
        result = [*snapshot.triggers, stored]
    else:
        others = [x.id for x in snapshot.triggers if x.id != trigger_id]
        diff = Diff(changed=[{"id": trigger_id, "fields": fields}] if fields else [], unchanged=others)
        if not fields:
            diff.unchanged.append(trigger_id)
        result = [stored if x.id == trigger_id else x for x in snapshot.triggers]
    if prev is not None and not fields:
        change = Write()
    else:
        change = Write(upserts=[(stored, reschedule)], expect={trigger_id: snapshot.raws.get(trigger_id)})
    return Plan(snapshot, change, result, diff)


def plan_delete(snapshot: Snapshot, trigger_id: str) -> Plan:
    """One trigger removed; its future firings never start."""
    others = [x for x in snapshot.triggers if x.id != trigger_id]
    diff = Diff(removed=[trigger_id], unchanged=[x.id for x in others])
    return Plan(snapshot, Write(deletes=[trigger_id], expect={trigger_id: snapshot.raws.get(trigger_id)}), others, diff)


def etag_matches(etag: str, if_match: Sequence[str]) -> bool:
    """Whether `etag` is one of the ETags an If-Match names (none named: always)."""
    return not if_match or etag in if_match


def apply(
    conn: Redis,
    workspace_id: str,
    planner: Planner,
    *,
    if_match: Sequence[str] = (),
    max_triggers: int,
    dry_run: bool = False,
) -> Plan:
    """Plan on a fresh snapshot and write, again on a conflict (module docstring for the rules)."""
    for attempt in range(MAX_ATTEMPTS):
        snapshot = read(conn, workspace_id)
        plan = planner(snapshot)
        if dry_run or plan.change.empty:
            if not etag_matches(snapshot.etag, if_match):
                raise _stale(snapshot.etag)
            if len(plan.triggers) > max(max_triggers, len(snapshot.triggers)):  # as write.lua refuses it
                raise _too_many(max_triggers)
            return dataclasses.replace(plan, before=len(snapshot.triggers), etag=snapshot.etag)
        new_etag = secrets.token_hex(8)
        status, count = write(
            conn, workspace_id, plan.change, new_etag=new_etag, if_match=if_match, max_triggers=max_triggers
        )
        if status is WriteStatus.APPLIED:
            reset_failures(conn, workspace_id, _enabled_again(plan))
            # write.lua drops the ETag of a workspace left without triggers.
            return dataclasses.replace(plan, before=count, etag=new_etag if plan.triggers else EMPTY_ETAG)
        if status is WriteStatus.PRECONDITION_FAILED:
            raise _stale(read(conn, workspace_id).etag)
        if status is WriteStatus.TOO_MANY:
            raise _too_many(max_triggers)
        time.sleep(0.001 * attempt)  # a concurrent write won: plan again on what it left
    raise StoreUnavailable(f"workspace {workspace_id!r} kept changing under {MAX_ATTEMPTS} attempts; nothing written")


def _enabled_again(plan: Plan) -> list[str]:
    """The triggers the plan turns from disabled to enabled (their failure counts start again)."""
    changed = {c["id"] for c in plan.diff.changed if "enabled" in c["fields"]}
    return [t.id for t in plan.triggers if t.enabled and t.id in changed] if changed else []


def _too_many(max_triggers: int) -> InvalidRequest:
    return InvalidRequest(
        "Too many triggers", [{"path": "triggers", "message": f"at most {max_triggers} per workspace"}]
    )


def _stale(current: str) -> PreconditionFailed:
    return PreconditionFailed(
        "Precondition failed",
        [{"path": "headers.if-match", "message": f'the workspace changed: its ETag is now "{current}"; read it again'}],
    )


def replace(
    conn: Redis,
    workspace_id: str,
    triggers: Sequence[Trigger],
    *,
    now: Callable[[], float] = time.time,
    cipher: HeaderCipher | None = None,
    max_triggers: int = 1_000_000,
) -> tuple[int, list[StoredTrigger]]:
    """Replace the workspace's whole list; return (how many triggers it had, the new list)."""
    plan = apply(
        conn,
        workspace_id,
        lambda snapshot: plan_replace(snapshot, triggers, now=now(), cipher=cipher),
        max_triggers=max_triggers,
    )
    return plan.before, plan.triggers


def delete(conn: Redis, workspace_id: str) -> int:
    """Remove every trigger of the workspace, and its pause; return how many triggers there were.

    The workspace is gone: one created later under the same id starts unpaused (a replace, even
    with an empty list, keeps the pause)."""
    return apply(conn, workspace_id, plan_delete_all, max_triggers=1_000_000).before
