"""`scheduler-api rotate-secrets`: every stored header value and signing secret re-encrypted with
the current key.

Failure rule: Redis being unreachable, slow or refusing is raised as `StoreUnavailable`; each
definition is swapped by one script only if it is still the one read, so a run that fails part way
leaves every definition either as it was or re-encrypted, and can be run again.
"""

from __future__ import annotations

import json
from typing import NamedTuple

from redis import Redis

from scheduler_api.header_crypto import PREFIX as BOUND_PREFIX
from scheduler_api.header_crypto import HeaderCipher
from scheduler_api.storage import keys, scripts
from scheduler_api.storage.redis_util import compact_json, redis_errors
from scheduler_api.storage.signing_keys import SEALED_AS


class Rotation(NamedTuple):
    rewritten: int  # triggers whose header values were re-encrypted
    unbound: int  # of those, triggers that held first-version `enc:` (Fernet, unbound) or plain values


def rotate_secrets(conn: Redis, cipher: HeaderCipher) -> Rotation:
    """Re-encrypt every stored header value with the first SECRETS_KEY key, bound to its workspace
    and header name (first-version Fernet values and plain ones included).

    Each definition is swapped only if it is still the one read (a concurrent replace wins), and its
    version is kept, so firings already scheduled are not dropped.
    """
    rewritten = unbound = 0
    with redis_errors():
        for key in conn.scan_iter(match=keys.WORKSPACE_PREFIX + "*", count=500):
            name = key.decode() if isinstance(key, bytes) else str(key)
            workspace_id = name[len(keys.WORKSPACE_PREFIX) :]
            for field, raw in conn.hgetall(key).items():
                data = json.loads(raw)
                if not data.get("headers"):
                    continue
                old = not all(v.startswith(BOUND_PREFIX) for v in data["headers"].values())
                data["headers"] = cipher.rotate(data["headers"], workspace_id=workspace_id)
                new = compact_json(data)
                swapped = int(scripts.run(conn, "swap", [key], [field, raw, new]))
                rewritten += swapped
                unbound += swapped if old else 0
        _rotate_signing_secrets(conn, cipher)
    return Rotation(rewritten, unbound)


def _rotate_signing_secrets(conn: Redis, cipher: HeaderCipher) -> None:
    """Each workspace's signing secrets (scheduler_api.storage.signing_keys) sealed afresh, each field
    swapped only if it still holds what was read (a rotation through the API meanwhile wins)."""
    for key in conn.scan_iter(match=keys.signing("*"), count=500):
        workspace_id = _text(key)[len(keys.signing("")) :]
        stored = {_text(k): _text(v) for k, v in conn.hgetall(key).items()}
        for name in ("secret", "previous"):
            if stored.get(name):
                fresh = cipher.rotate({SEALED_AS: stored[name]}, workspace_id=workspace_id)[SEALED_AS]
                scripts.run(conn, "swap", [key], [name, stored[name], fresh])


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
