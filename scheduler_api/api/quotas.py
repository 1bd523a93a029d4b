"""The API's quotas (README "Security", Quotas), counted in Redis by scheduler_api.storage.quotas so
that they hold across API replicas.

* Per workspace and minute: write calls (`WRITES_PER_MINUTE`: every write of its triggers, dry runs
  included) and run-now calls (`RUN_NOW_PER_MINUTE`). One too many -> 429 `RateLimited` with
  ``Retry-After`` (seconds until the window ends).
* Per key scope (``*`` for a key of every workspace and for the open API without API_KEYS, else the
  key's ``name`` or ``prefix*``): workspaces that have triggers (`MAX_WORKSPACES_PER_SCOPE`) and
  triggers in all (`MAX_TRIGGERS_PER_SCOPE`). A write that would grow the caller's scope past one
  -> 403 `QuotaExceeded`, nothing written. Only growth is refused: deleting, or a write that adds
  nothing, always passes. The counts of every configured scope covering a workspace follow each
  write, whichever key made it; the limit is checked on the caller's scope.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import Request

from scheduler_api.api.deps import redis_of, settings_of
from scheduler_api.api.middleware import KEY_SCOPE
from scheduler_api.auth import ALL, ApiKey
from scheduler_api.errors import QuotaExceeded, RateLimited
from scheduler_api.storage import quotas
from scheduler_api.storage.edits import Plan, Planner
from scheduler_api.storage.triggers import Snapshot


def caller_scope(request: Request) -> str:
    """The scope of the key the request carries (``*`` without API_KEYS)."""
    scope: str = request.scope.get(KEY_SCOPE, ALL)
    return scope


def covering_scopes(request: Request, workspace_id: str) -> list[str]:
    """Every configured key scope that includes the workspace, the caller's first."""
    configured: list[ApiKey] = request.app.state.api_keys
    scopes = [caller_scope(request)]
    for key in configured:
        if key.covers(workspace_id) and key.scope not in scopes:
            scopes.append(key.scope)
    return scopes


def count_write(request: Request, workspace_id: str) -> None:
    """Count one write call on the workspace; `RateLimited` beyond WRITES_PER_MINUTE."""
    _take(request, "write", workspace_id, settings_of(request).writes_per_minute, "WRITES_PER_MINUTE", "write")


def count_run_now(request: Request, workspace_id: str) -> None:
    """Count one run-now call on the workspace; `RateLimited` beyond RUN_NOW_PER_MINUTE."""
    _take(request, "run", workspace_id, settings_of(request).run_now_per_minute, "RUN_NOW_PER_MINUTE", "run-now")


def _take(request: Request, kind: str, workspace_id: str, limit: int, setting: str, what: str) -> None:
    wait = quotas.take(redis_of(request), kind, workspace_id, limit=limit)
    if wait is not None:
        retry_after = max(1, math.ceil(wait))
        raise RateLimited(
            "Too many requests",
            [
                {
                    "path": "workspace_id",
                    "message": f"{setting}: at most {limit} {what} calls a minute on workspace "
                    f"{workspace_id!r}; retry in {retry_after} s",
                }
            ],
            retry_after=retry_after,
        )


@contextmanager
def sized(request: Request, workspace_id: str, planner: Planner, *, dry_run: bool) -> Iterator[Planner]:
    """`planner`, checked against the caller's scope quotas each time it plans (room reserved unless
    `dry_run`); on leaving, the workspace's counts are set to what was stored, whatever happened."""
    conn = redis_of(request)
    settings = settings_of(request)
    scope = caller_scope(request)

    def checked(snapshot: Snapshot) -> Plan:
        plan = planner(snapshot)
        full = quotas.reserve(
            conn,
            scope,
            workspace_id,
            len(plan.triggers),
            max_workspaces=settings.max_workspaces_per_scope,
            max_triggers=settings.max_triggers_per_scope,
            dry_run=dry_run,
        )
        if full is not None:
            raise _refusal(full, scope, settings.max_workspaces_per_scope, settings.max_triggers_per_scope)
        return plan

    try:
        yield checked
    finally:
        if not dry_run:
            quotas.sync(conn, workspace_id, covering_scopes(request, workspace_id))


def _refusal(full: quotas.Full, scope: str, max_workspaces: int, max_triggers: int) -> QuotaExceeded:
    if full.quota is quotas.Refusal.WORKSPACES:
        message = (
            f"MAX_WORKSPACES_PER_SCOPE: the workspaces of this key (scope {scope!r}) already number "
            f"{full.held} with triggers, the most allowed is {max_workspaces}; remove one first"
        )
        return QuotaExceeded("Quota exceeded", [{"path": "workspace_id", "message": message}])
    message = (
        f"MAX_TRIGGERS_PER_SCOPE: the workspaces of this key (scope {scope!r}) hold {full.held} "
        f"triggers; this write would take them over {max_triggers}"
    )
    return QuotaExceeded("Quota exceeded", [{"path": "triggers", "message": message}])
