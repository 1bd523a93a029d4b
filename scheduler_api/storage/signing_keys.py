"""Each workspace's signing secret (scheduler_api.signing) in Redis, ``sa:sign:{workspace id}``.

The hash holds ``secret``, ``created_at`` (unix seconds) and, after a rotation, ``previous`` and
``previous_expires_at``. Secrets are sealed like header values (scheduler_api.header_crypto:
AES-GCM with ``SECRETS_KEY``, bound to the workspace and the name `SEALED_AS`); without
``SECRETS_KEY`` they are stored as given, as header values are then.

* A workspace gets its secret the first time anything needs one (the API's GET, or a worker
  signing a delivery): ``signing_create.lua`` sets it only if none is there, so two workers or API
  replicas racing create one secret and all of them use it.
* `rotate` makes a new one; the current one becomes ``previous`` and keeps signing until
  ``previous_expires_at`` (now + ``SIGNING_ROTATION_SECONDS``); after that it is ignored (never
  shown, never used) until the next rotation overwrites it. The rotation is announced on the
  changes channel, so workers read the secrets again before their next firing.

Failure rules: the API's calls (`get`, `rotate`) raise Redis being unreachable, slow or refusing
writes as `StoreUnavailable` (a 503). The workers' `read_many` raises redis-py's errors unchanged
(the batch fails like on any Redis error, and another worker takes it). A stored secret that
cannot be decrypted (``SECRETS_KEY`` changed too early, or the value moved to another workspace)
raises `SecretsError` when opened (`open_key`); the API answers it as a server error and the
worker fails that workspace's firings with error ``secrets``, sending nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from redis import Redis

from scheduler_api import signing
from scheduler_api.header_crypto import HeaderCipher, open_headers
from scheduler_api.storage import keys, scripts
from scheduler_api.storage.redis_util import redis_errors

SEALED_AS = "signing-secret"  # the name a sealed secret is bound to, with its workspace

# The stored hash as read: (secret, created_at, previous, previous_expires_at), each '' if absent.
Stored = tuple[str, str, str, str]


@dataclass(frozen=True)
class SigningKey:
    """A workspace's secrets, decrypted. `previous` is None once its window is over."""

    workspace_id: str
    secret: str
    created_at: float
    previous: str | None
    previous_expires_at: float | None

    def signer(self) -> signing.Signer:
        return signing.Signer(self.secret, self.previous, self.previous_expires_at or 0.0)


def _seal(cipher: HeaderCipher | None, workspace_id: str, secret: str) -> str:
    if cipher is None:
        return secret
    return cipher.seal({SEALED_AS: secret}, workspace_id=workspace_id)[SEALED_AS]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _stored(raw: Sequence[bytes | str] | dict[bytes | str, bytes | str]) -> Stored:
    """`Stored` from HGETALL's answer: a dict through redis-py, a flat list from a script."""
    pairs = raw.items() if isinstance(raw, dict) else zip(raw[::2], raw[1::2], strict=True)
    fields = {_text(k): _text(v) for k, v in pairs}
    return (
        fields.get("secret", ""),
        fields.get("created_at", ""),
        fields.get("previous", ""),
        fields.get("previous_expires_at", ""),
    )


def open_key(cipher: HeaderCipher | None, workspace_id: str, stored: Stored, *, now: float) -> SigningKey:
    """The secrets of `stored`, decrypted; the previous one only while `now` is inside its window.
    Raises `SecretsError` when a value cannot be decrypted (module docstring)."""
    secret, created_at, previous, expires = stored
    in_window = bool(previous) and bool(expires) and now < float(expires)
    sealed = {SEALED_AS: secret}
    opened = open_headers(cipher, sealed, workspace_id=workspace_id)[SEALED_AS]
    opened_previous = None
    if in_window:
        opened_previous = open_headers(cipher, {SEALED_AS: previous}, workspace_id=workspace_id)[SEALED_AS]
    return SigningKey(
        workspace_id,
        opened,
        float(created_at or 0.0),
        opened_previous,
        float(expires) if in_window else None,
    )


def _create(conn: Redis, cipher: HeaderCipher | None, workspace_id: str, *, now: float) -> Stored:
    sealed = _seal(cipher, workspace_id, signing.new_secret())
    return _stored(scripts.run(conn, "signing_create", [keys.signing(workspace_id)], [sealed, repr(now)]))


def read_many(
    conn: Redis, cipher: HeaderCipher | None, workspace_ids: Sequence[str], *, now: float
) -> dict[str, Stored]:
    """The stored secrets of `workspace_ids` (still sealed), in one round trip; a workspace without
    one gets one first (one more round trip each, once in its life)."""
    pipe = conn.pipeline(transaction=False)
    for workspace_id in workspace_ids:
        pipe.hgetall(keys.signing(workspace_id))
    found: dict[str, Stored] = {}
    for workspace_id, raw in zip(workspace_ids, pipe.execute(), strict=True):
        found[workspace_id] = _stored(raw) if raw else _create(conn, cipher, workspace_id, now=now)
    return found


def get(conn: Redis, cipher: HeaderCipher | None, workspace_id: str, *, now: float) -> SigningKey:
    """The workspace's secrets, created if it has none."""
    with redis_errors():
        stored = read_many(conn, cipher, [workspace_id], now=now)[workspace_id]
    return open_key(cipher, workspace_id, stored, now=now)


def rotate(
    conn: Redis, cipher: HeaderCipher | None, workspace_id: str, *, now: float, rotation_seconds: float
) -> SigningKey:
    """A new secret for the workspace; the current one signs too until now + `rotation_seconds`."""
    sealed = _seal(cipher, workspace_id, signing.new_secret())
    args = [sealed, repr(now), repr(now + rotation_seconds), keys.CHANGED, keys.job_id(workspace_id, "")]
    with redis_errors():
        raw = scripts.run(conn, "signing_rotate", [keys.signing(workspace_id)], args)
    return open_key(cipher, workspace_id, _stored(raw), now=now)
