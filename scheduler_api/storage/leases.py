"""Batch leases: which worker holds a batch, until when (``sa:leases``), and by which token
(``sa:lease-owners``).

* `claim_lease` (the RQ job's first step): take the batch off the outbox and, unless another
  worker's lease on it still runs, hold it until now + the lease, under the worker's `token`;
* `renew_leases` (the worker, every third of the lease): extend the leases the worker still
  holds, and name the ones it does not any more - reaped after it stopped renewing (frozen,
  a stalled host), perhaps already claimed by another worker. The worker then starts none of
  those batches' firings and does not let go of them (scheduler_api.delivery.dispatch);
* `owns` / `let_go`: before a worker releases a batch (its last outcome, `firings.record` with
  ``finished``) it checks it still holds it, and forgets the owner afterwards;
* `reap_leases` (the scheduler, every tick): batches whose lease ran out go back to the outbox
  and lose their owner, so a worker that resumes after its lease finds the batch is not its own.

Failure rule: Redis errors are raised unchanged (the caller logs them and tries again; a lease
that cannot be renewed runs out, and the batch goes to another worker).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

from redis import Redis

from scheduler_api.storage import keys, scripts


class LeaseClaim(Enum):
    """The answer to a worker claiming a batch (`claim_lease`)."""

    CLAIMED = 1  # this worker now holds the batch, until its lease runs out
    EMPTY = 0  # nothing is left in the batch: every firing of it has an outcome
    HELD_ELSEWHERE = -1  # another worker's lease on it still runs


def claim_lease(conn: Redis, batch_id: str, *, now: float, lease_seconds: float, token: str) -> LeaseClaim:
    """Take the batch for the worker of `token` for `lease_seconds`. Whatever the answer, the
    batch is off the outbox: the RQ job that asks has taken it."""
    answer = scripts.run(
        conn,
        "claim_lease",
        [keys.LEASES, keys.batch(batch_id), keys.OUTBOX, keys.PUSHED, keys.LEASE_OWNERS],
        [batch_id, repr(now), repr(now + lease_seconds), token],
    )
    return LeaseClaim(int(answer))


def renew_leases(conn: Redis, batch_ids: Sequence[str], *, until: float, token: str) -> set[str]:
    """Extend to `until` the leases of `batch_ids` that the worker of `token` still holds; return
    the others (lost: reaped, or another worker's now)."""
    lost = scripts.run(conn, "renew_leases", [keys.LEASES, keys.LEASE_OWNERS], [repr(until), token, *batch_ids])
    return {b.decode() if isinstance(b, bytes) else str(b) for b in lost}


def owns(conn: Redis, batch_id: str, *, until: float, token: str) -> bool:
    """Whether the worker of `token` still holds the batch (its lease extended to `until` if so)."""
    return not renew_leases(conn, [batch_id], until=until, token=token)


def let_go(conn: Redis, batch_id: str) -> None:
    """Forget the owner of a batch its worker has just released."""
    conn.hdel(keys.LEASE_OWNERS, batch_id)


def reap_leases(conn: Redis, *, now: float) -> int:
    """Batches whose lease ran out go back to the outbox (and lose their owner); return how many."""
    answer = scripts.run(
        conn, "reap_leases", [keys.LEASES, keys.OUTBOX, keys.LEASE_OWNERS], [repr(now), keys.BATCH_PREFIX]
    )
    return int(answer)
