"""Per-(workspace, host) rate limits in Redis, decided for every worker at once.

A workspace's settings may bound the requests to a host (scheduler_api.storage.workspace_settings,
`RateLimit`): ``per_second`` and ``concurrency``. Both are kept in Redis, by one Lua script per
request (``lua/host_acquire.lua``), so any number of workers share them exactly:

* ``per_second``: a token bucket of one token refilled continuously, i.e. requests start at least
  ``SPACING / per_second`` seconds apart, so no sliding second holds more than ``per_second`` of
  them (a bucket holding ``per_second`` tokens would let twice that through in the second after an
  idle spell: a full bucket, then a second's refill). `SPACING` is 1.01: the 1 % leaves 10 ms in
  every second for the time between a start and its arrival, which varies by a few milliseconds
  (a worker's timer, the network), so the receiver too counts at most ``per_second`` in any second;
* ``concurrency``: a sorted set of in-flight leases, each with an expiry (the attempt's timeout
  plus `LEASE_MARGIN_SECONDS`), so the slot of a worker killed mid-request frees itself; a lease is
  let go (`release`) when its attempt ends;
* a 429 or 503 answer with ``Retry-After`` from such a host holds that workspace's requests to it
  back until then (`hold`), for every worker.

Times are Redis's clock (``TIME`` in the scripts), not the workers'. Over ``per_second``, `acquire`
reserves the next free start for the caller (with its in-flight lease, if any), so each waiting
request asks twice, not once per free start; while every ``concurrency`` slot is taken it takes
nothing and the caller asks again after `FULL_POLL_SECONDS`.

Failure rules: Redis errors are raised unchanged (the worker's batch fails, and another worker
delivers the firings it had not recorded).
"""

from __future__ import annotations

from redis import Redis

from scheduler_api.storage import keys, scripts
from scheduler_api.storage.workspace_settings import RateLimit

SPACING = 1.01  # starts are this many times 1 / per_second apart (module docstring)
LEASE_MARGIN_SECONDS = 5.0  # an in-flight lease outlives its attempt's timeout by this much
FULL_POLL_SECONDS = 0.02  # while every slot is taken, ask again after this long


def acquire(
    conn: Redis, workspace_id: str, limit: RateLimit, lease_id: str, *, lease_seconds: float, reserved: bool = False
) -> tuple[float, bool]:
    """Let one request to `limit.host` start now: (0.0, False), its in-flight lease taken when
    `limit.concurrency` is set. Else (seconds to wait, whether a start that far ahead is reserved
    for it): after the wait the caller asks again, with `reserved` as answered (``lua/host_acquire.lua``)."""
    limit_key, flight_key = keys.host_limit(workspace_id, limit.host)
    args = [
        repr(SPACING / limit.per_second) if limit.per_second else "",
        limit.concurrency or "",
        lease_id,
        repr(lease_seconds),
        repr(FULL_POLL_SECONDS),
        "1" if reserved else "",
    ]
    wait, reserved_now = scripts.run(conn, "host_acquire", [limit_key, flight_key], args)
    return float(wait), bool(reserved_now)


def release(conn: Redis, workspace_id: str, host: str, lease_id: str) -> None:
    """Let go of an in-flight lease (its request ended)."""
    conn.zrem(keys.host_limit(workspace_id, host)[1], lease_id)


def hold(conn: Redis, workspace_id: str, host: str, seconds: float) -> float:
    """Hold the workspace's requests to `host` back for `seconds` (a Retry-After); return until
    when (Redis's clock). An earlier, longer hold stays."""
    return float(scripts.run(conn, "host_hold", [keys.host_limit(workspace_id, host)[0]], [repr(seconds)]))
