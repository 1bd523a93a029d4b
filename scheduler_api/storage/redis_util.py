"""What every storage module shares about talking to Redis: its errors, and compact JSON.

Failure rules: `redis_errors` turns Redis being unreachable, slow or refusing writes into
`StoreUnavailable` (the API answers 503; the scheduler and the workers log it and try again);
any other Redis error (a bug: a wrong type, a script error) is raised unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis

from scheduler_api.errors import StoreUnavailable

# Answers of a Redis that works but cannot take the command now: out of memory, a replica after a
# failover, loading its data, no good replicas, failing to persist. (Loading, BusyLoadingError, is
# a ConnectionError in redis-py: it reads as unreachable.)
REFUSALS = (redis.exceptions.OutOfMemoryError, redis.exceptions.ReadOnlyError)
REFUSAL_CODES = {"OOM", "READONLY", "LOADING", "MASTERDOWN", "NOREPLICAS", "MISCONF", "TRYAGAIN", "BUSY"}


@contextmanager
def redis_errors() -> Iterator[None]:
    """Turn Redis being unreachable, slow or refusing writes into `StoreUnavailable` (a 503).

    A timeout is not a refusal: the command may have been carried out (`StoreUnavailable.maybe_done`).
    """
    try:
        yield
    except redis.TimeoutError as e:
        raise StoreUnavailable(f"Redis did not answer in time: {e}", maybe_done=True) from e
    except redis.ConnectionError as e:
        raise StoreUnavailable(f"Redis is unreachable: {e}") from e
    except redis.ResponseError as e:
        if isinstance(e, REFUSALS) or str(e).split(" ", 1)[0] in REFUSAL_CODES:
            raise StoreUnavailable(f"Redis refused the command: {str(e)[:200]}", refused=True) from e
        raise


_COMPACT = json.JSONEncoder(separators=(",", ":"))


def compact_json(value: Any) -> str:
    """JSON without spaces, from one shared encoder (`json.dumps` with options builds an encoder per
    call, and the scheduler and the workers write thousands of these a second)."""
    return _COMPACT.encode(value)
