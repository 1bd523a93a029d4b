"""Per-(workspace, host) rate limits as one batch applies them (`BatchLimits`).

A batch reads the rate limits of its workspaces once, when it starts, after its definitions and
signing secrets (one round trip; scheduler_api.storage.workspace_settings.rate_limits_of), so a settings
change applies to the batches that start after it. The host of a request is its url's host as
httpx parses it (``raw_host``: lower case, IDNA-encoded, no port), compared with the hosts of the
settings, which are normalised the same way.

Rules:
* a firing to a host without a limit in its workspace's settings, and every firing of a workspace
  without rate limits, goes through no check at all: no Redis round trip, no wait;
* a firing to a limited host asks Redis (scheduler_api.storage.host_limits.acquire) before it is
  sent; over the limit, its lane waits as long as Redis says and asks again, as long as needed
  (over ``per_second`` Redis reserves the lane's start, so it asks twice, not once per free start). A
  firing over the limit is delayed, never failed or dropped; its attempt's record shows the wait
  as ``waited_ms`` (only when it waited). While it waits the batch's lease keeper keeps renewing
  the lease; a worker that stops (SIGTERM) while a firing waits leaves that firing unsent, and the
  batch hands it back to the outbox;
* with ``concurrency`` the request holds a lease in Redis while in flight, let go when its attempt
  ends (or, if the worker dies, when the lease runs out: the attempt's timeout and a margin);
* a 429 or 503 with ``Retry-After`` from a limited host holds back the workspace's other firings to
  that host, in every worker, until then (`BatchLimits.end_turn`). Only hosts with a limit in the
  workspace's settings are held back: the issue asks that a workspace without rate limits costs
  nothing measurable, and checking a hold on every host would cost a round trip per delivery. A
  workspace that wants a host held back on Retry-After gives it a limit (a generous
  ``concurrency`` is enough). Other workspaces to the same host are never held back; the firing
  that got the 429/503 is retried as its retry policy says (scheduler_api.delivery.retry).

Failure rules: Redis errors are raised unchanged (the batch fails; another worker delivers the
firings it had not recorded).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from redis import Redis

from scheduler_api.delivery.attempt import Attempt, parsed_url
from scheduler_api.storage import host_limits
from scheduler_api.storage.triggers import StoredTrigger
from scheduler_api.storage.workspace_settings import RateLimit, rate_limits_of


@dataclass
class Turn:
    """A limited firing's turn to be sent: its limit, its in-flight lease (if any) and how long it
    waited for it (seconds)."""

    limit: RateLimit
    lease_id: str | None
    waited: float


class BatchLimits:
    """The rate limits of one batch's workspaces (module docstring)."""

    def __init__(self, conn: Redis, workspace_ids: list[str], *, timeout: float) -> None:
        """`timeout`: the worker's delivery timeout (a trigger's own ``timeout_seconds`` replaces it)."""
        self.conn = conn
        self.timeout = timeout
        self.by_workspace = rate_limits_of(conn, workspace_ids) if workspace_ids else {}

    def limit_of(self, trigger: StoredTrigger) -> RateLimit | None:
        """The limit on the host of `trigger`'s url in its workspace's settings, or None."""
        limits = self.by_workspace.get(trigger.workspace_id)
        if not limits:
            return None
        return limits.get(parsed_url(trigger.url).raw_host.decode("ascii"))

    async def take_turn(self, trigger: StoredTrigger, limit: RateLimit, stopping: Callable[[], bool]) -> Turn | None:
        """Wait until a request to `limit.host` may start (module docstring); None when the worker
        started stopping meanwhile (nothing is held then)."""
        policy = trigger.policy
        timeout = self.timeout if policy is None or policy.timeout_seconds is None else policy.timeout_seconds
        lease_id = uuid.uuid4().hex if limit.concurrency else None
        lease_seconds = timeout + host_limits.LEASE_MARGIN_SECONDS
        started = time.monotonic()
        slept = reserved = False
        while True:
            wait, reserved = host_limits.acquire(
                self.conn, trigger.workspace_id, limit, lease_id or "", lease_seconds=lease_seconds, reserved=reserved
            )
            if wait <= 0:
                return Turn(limit, lease_id, time.monotonic() - started if slept else 0.0)
            if not stopping():
                await asyncio.sleep(wait)
                slept = True
            if stopping():  # nothing more starts: let go of a reserved start's lease
                if reserved and lease_id is not None:
                    host_limits.release(self.conn, trigger.workspace_id, limit.host, lease_id)
                return None

    def end_turn(self, trigger: StoredTrigger, turn: Turn, attempt: Attempt | None) -> None:
        """Let go of the turn's lease; hold the host back when `attempt` got a Retry-After."""
        limit = turn.limit
        if turn.lease_id is not None:
            host_limits.release(self.conn, trigger.workspace_id, limit.host, turn.lease_id)
        if attempt is not None and attempt.retry_after:
            host_limits.hold(self.conn, trigger.workspace_id, limit.host, attempt.retry_after)
