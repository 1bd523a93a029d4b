"""Signed-out dashboard sessions: a session's nonce is kept as revoked until the session would have
expired, so a copied cookie stops working at sign-out (scheduler_api.ui.session).

Failure rules: `revoke` and `is_revoked` raise Redis being unreachable, slow or refusing as
`StoreUnavailable` (the dashboard answers 503); nothing is assumed when Redis cannot say.
"""

from __future__ import annotations

import math

from redis import Redis

from scheduler_api.storage import keys
from scheduler_api.storage.redis_util import redis_errors


def revoke(conn: Redis, nonce: str, *, seconds_left: float) -> None:
    """Mark the session `nonce` as signed out for the `seconds_left` it had (nothing when none)."""
    ttl = math.ceil(seconds_left)
    if ttl <= 0:
        return
    with redis_errors():
        conn.set(keys.ui_revoked(nonce), "1", ex=ttl)


def is_revoked(conn: Redis, nonce: str) -> bool:
    """Whether the session `nonce` was signed out (one GET)."""
    with redis_errors():
        return conn.get(keys.ui_revoked(nonce)) is not None
