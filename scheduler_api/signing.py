"""Signed requests in the Standard Webhooks format (standardwebhooks.com), one secret per workspace.

Every delivery carries three headers:

* ``webhook-id``: the firing id, the same as its ``Idempotency-Key`` (the same for every attempt);
* ``webhook-timestamp``: unix seconds when the attempt is sent;
* ``webhook-signature``: ``v1,<base64 of HMAC-SHA256(key, "{id}.{timestamp}.{body}")>``, where the
  key is the base64-decoded part of the workspace's secret after ``whsec_``. While a rotated-out
  secret is still in its window (``SIGNING_ROTATION_SECONDS``) a second ``v1,...`` signed with it
  follows, separated by a space, as the spec allows; after the window it is not sent.

The signature itself is the `standardwebhooks` package's (`Webhook.sign`), so receivers verify
with that package (PyPI, npm) or Svix's libraries, unchanged::

    from standardwebhooks import Webhook

    def handle(body: bytes, headers: dict[str, str]) -> None:
        Webhook(SECRET).verify(body, headers)  # raises WebhookVerificationError

`verify` here is a thin wrapper for Python receivers that want a bool and their own tolerance.
Secrets are made by `new_secret` (``whsec_`` + base64 of 32 random bytes) and stored per workspace
by scheduler_api.storage.signing_keys. Nothing here logs or shows a secret.
"""

from __future__ import annotations

import base64
import hmac
import os
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache

from standardwebhooks import Webhook

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"


def new_secret() -> str:
    """A new secret: ``whsec_`` + base64 of `SECRET_BYTES` random bytes."""
    return SECRET_PREFIX + base64.b64encode(os.urandom(SECRET_BYTES)).decode("ascii")


@lru_cache(maxsize=4096)
def webhook(secret: str) -> Webhook:
    """The `Webhook` of a secret, its base64 decoded once per secret (not per delivery)."""
    return Webhook(secret)


@lru_cache(maxsize=4)
def _moment(timestamp: int) -> tuple[datetime, str]:
    """The datetime `Webhook.sign` takes and the header value of one second (built once a second)."""
    return datetime.fromtimestamp(timestamp, UTC), str(timestamp)


class Signer:
    """Signs the deliveries of one workspace: with its current secret, and with the previous one
    until `previous_until` (unix seconds)."""

    __slots__ = ("current", "previous", "previous_until")

    def __init__(self, current: str, previous: str | None = None, previous_until: float = 0.0) -> None:
        self.current = webhook(current)
        self.previous = webhook(previous) if previous else None
        self.previous_until = previous_until

    def headers(self, msg_id: str, body: bytes, now: float) -> list[tuple[str, str]]:
        """The three headers of a request with id `msg_id` and `body`, sent at `now`."""
        moment, stamp = _moment(int(now))
        signature = self.current.sign(msg_id, moment, body)
        if self.previous is not None and now < self.previous_until:
            signature += " " + self.previous.sign(msg_id, moment, body)
        return [(ID_HEADER, msg_id), (TIMESTAMP_HEADER, stamp), (SIGNATURE_HEADER, signature)]


def verify(
    secret: str, headers: Mapping[str, str], body: bytes, tolerance: float = 300, *, now: float | None = None
) -> bool:
    """True when `headers` (any case) carry a Standard Webhooks signature of `body` by `secret`, made
    within `tolerance` seconds of `now` (the clock by default). Never raises on what a sender sent:
    missing, malformed or stale headers, or a secret that is not base64, are False."""
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id = lower.get("webhook-id")
    stamp = lower.get("webhook-timestamp")
    signatures = lower.get("webhook-signature")
    if not (msg_id and stamp and signatures) or not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12):
        return False
    timestamp = int(stamp)
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    try:
        expected = webhook(secret).sign(msg_id, datetime.fromtimestamp(timestamp, UTC), body).encode()
    except Exception:  # a secret that is not base64, or empty: nothing it signed can match
        return False
    # As bytes: compare_digest raises TypeError on a str with non-ASCII characters.
    return any(hmac.compare_digest(expected, sig.encode("utf-8", "replace")) for sig in signatures.split(" "))
