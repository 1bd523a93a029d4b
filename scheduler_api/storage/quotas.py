"""Quotas counted in Redis, so that they hold across API replicas.

Two kinds (the API's rules and settings: scheduler_api.api.quotas):

* **Per-minute rates** of a workspace's calls (`take`): one counter per kind and workspace,
  ``sa:rate:{kind}:{ws}``, a fixed window that starts with its first call and expires 60 s later
  (``lua/rate.lua``). A client can therefore make up to twice the limit across a window's edge,
  never more.
* **Key-scope sizes** (`reserve`, `sync`): per scope (``*``, a workspace name or ``prefix*``, as
  in API_KEYS) a hash of its workspaces that have triggers, workspace id -> trigger count, and the
  sum of those counts (keys.quota_keys). Before a write, `reserve` checks that the write's planned
  trigger count fits and raises the workspace's entry to it (``lua/quota_reserve.lua``, one atomic
  step, so two replicas cannot both take the last place); after the write, whatever its outcome,
  `sync` sets the entry of every scope covering the workspace to the stored count
  (``lua/quota_sync.lua``), which gives back the room of a write that did not happen. A scope's
  counts are built from the stored workspaces (the workspace index) the first time a write of it is checked,
  so keys added to API_KEYS later, and workspaces written before quotas existed, are counted. A
  dry run only checks (it writes nothing, so before a scope's first real write it checks nothing).

Failure rules: Redis unreachable, slow or refusing is `StoreUnavailable` (503), as for every API
call. A process that dies between `reserve` and `sync` leaves its reservation counted until the
next write of that workspace syncs it (the counts err towards refusing, never towards allowing).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from redis import Redis

from scheduler_api.storage import keys, scripts, workspace_index
from scheduler_api.storage.redis_util import redis_errors

MINUTE_MS = 60_000


def take(conn: Redis, kind: str, workspace_id: str, *, limit: int, window_ms: int = MINUTE_MS) -> float | None:
    """Count one call of `kind` on the workspace; None when allowed, else the seconds until the window
    ends (the call is one too many)."""
    with redis_errors():
        allowed, left_ms = scripts.run(conn, "rate", [keys.rate(kind, workspace_id)], [limit, window_ms])
    return None if int(allowed) else max(int(left_ms), 0) / 1000


class Refusal(enum.Enum):
    WORKSPACES = "workspaces"
    TRIGGERS = "triggers"


@dataclass(frozen=True)
class Full:
    """Why `reserve` refused: which quota, and what the scope holds."""

    quota: Refusal
    held: int


def reserve(
    conn: Redis,
    scope: str,
    workspace_id: str,
    triggers: int,
    *,
    max_workspaces: int,
    max_triggers: int,
    dry_run: bool = False,
) -> Full | None:
    """Make room in `scope` for the workspace holding `triggers` triggers after a write (only check
    when `dry_run`); None when it fits, else what is full."""
    counted, total = keys.quota_keys(scope)
    args = [workspace_id, triggers, max_workspaces, max_triggers, int(not dry_run)]
    for _ in range(2):
        with redis_errors():
            answer = scripts.run(conn, "quota_reserve", [counted, total, keys.quota_built(scope)], args)
        status = _text(answer[0])
        if status == "unbuilt" and dry_run:
            return None  # a dry run writes nothing: the scope is checked from its first real write on
        if status == "unbuilt":
            build(conn, scope)
            continue
        if status == "ok":
            return None
        return Full(Refusal(status), int(answer[1]))
    raise AssertionError("quota_reserve: the scope's counts are still unbuilt after building them")


def sync(conn: Redis, workspace_id: str, scopes: Sequence[str], *, only_new: bool = False) -> int:
    """Set the workspace's entry in each scope's counts to its stored trigger count (`only_new`: only
    where it has none yet, as a build does); return the count."""
    quota_keys = [k for scope in scopes for k in keys.quota_keys(scope)]
    args = [workspace_id, int(only_new)]
    with redis_errors():
        return int(scripts.run(conn, "quota_sync", [keys.workspace(workspace_id), *quota_keys], args))


def build(conn: Redis, scope: str) -> None:
    """Count every stored workspace of `scope` (from the workspace index), then mark the scope built."""
    if scope == "*" or scope.endswith("*"):
        workspace_ids = workspace_index.scope_ids(conn, scope)
    else:
        workspace_ids = [scope]
    for workspace_id in workspace_ids:
        sync(conn, workspace_id, [scope], only_new=True)  # never undo a reservation in flight
    with redis_errors():
        conn.set(keys.quota_built(scope), "1")


def usage(conn: Redis, scope: str) -> tuple[int, int]:
    """(workspaces with triggers, triggers in all) counted for `scope`."""
    counted, total = keys.quota_keys(scope)
    with redis_errors():
        held, triggers = conn.hlen(counted), conn.get(total)
    return int(held), int(triggers or 0)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
