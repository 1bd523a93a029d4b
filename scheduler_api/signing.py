"""Signed requests: ``X-Scheduler-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">``.

With ``SIGNING_SECRETS`` set (``current`` or ``current,next`` during a rotation) every delivery
carries one ``v1=`` value per secret, so a receiver that knows either secret accepts it. A
receiver checks a request with `verify`::

    from scheduler_api.signing import verify

    def handle(request_body: bytes, headers) -> None:
        if not verify(SECRET, headers["X-Scheduler-Signature"], request_body, tolerance=300):
            raise PermissionError("bad signature")

`verify` rejects a tampered body, a missing or malformed header, a timestamp further than
`tolerance` seconds from now (replays), and compares in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence

HEADER = "X-Scheduler-Signature"


def _mac(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def sign(secrets: Sequence[str], body: bytes, *, timestamp: int | None = None) -> str:
    """The header value for `body`, with one ``v1=`` per secret."""
    ts = int(time.time()) if timestamp is None else timestamp
    return ",".join([f"t={ts}", *(f"v1={_mac(s, ts, body)}" for s in secrets)])


def verify(secret: str, header: str | None, body: bytes, tolerance: float = 300, *, now: float | None = None) -> bool:
    """True when `header` carries a valid signature of `body` by `secret`, made within `tolerance` s."""
    if not header:
        return False
    timestamp: int | None = None
    macs: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            if not (value.isascii() and value.isdigit() and len(value) <= 20):  # as `sign` writes it
                return False
            timestamp = int(value)
        elif key == "v1":
            macs.append(value)
    if timestamp is None or not macs:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        return False
    expected = _mac(secret, timestamp, body).encode()
    ok = False
    for mac in macs:
        # As bytes: compare_digest raises TypeError on a str with non-ASCII characters.
        ok |= hmac.compare_digest(expected, mac.encode("utf-8", "replace"))
    return ok
