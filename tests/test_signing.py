"""`scheduler_api.signing`: Standard Webhooks signatures (``webhook-id``, ``webhook-timestamp``,
``webhook-signature: v1,<base64 HMAC-SHA256("id.timestamp.body")>``), checked with the real
`standardwebhooks` package, and `signing.verify`, the thin wrapper for receivers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from scheduler_api import signing

MSG = "ws:t1@2026-01-01T00:00:00Z"
BODY = b'{"\xc3\xa9":[1,2.5,null]}'


def as_dict(pairs: list[tuple[str, str]]) -> dict[str, str]:
    return dict(pairs)


def test_new_secrets_are_whsec_base64_of_32_random_bytes() -> None:
    a, b = signing.new_secret(), signing.new_secret()
    assert a != b
    for secret in (a, b):
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32


def test_the_signature_is_the_spec_s_and_verifies_with_standardwebhooks() -> None:
    secret = signing.new_secret()
    now = time.time()
    headers = as_dict(signing.Signer(secret).headers(MSG, BODY, now))
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-id"] == MSG and headers["webhook-timestamp"] == str(int(now))
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{MSG}.{int(now)}.".encode() + BODY, hashlib.sha256).digest()
    assert headers["webhook-signature"] == "v1," + base64.b64encode(mac).decode()
    assert Webhook(secret).verify(BODY, headers) == {"é": [1, 2.5, None]}
    assert signing.verify(secret, headers, BODY)


def test_tampered_body_stale_timestamp_or_another_secret_fail() -> None:
    secret, other = signing.new_secret(), signing.new_secret()
    now = time.time()
    headers = as_dict(signing.Signer(secret).headers(MSG, BODY, now))
    for body in (BODY + b" ", b"", BODY[:-1]):
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(body, headers)
        assert not signing.verify(secret, headers, body)
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(BODY, headers)
    assert not signing.verify(other, headers, BODY)
    stale = as_dict(signing.Signer(secret).headers(MSG, BODY, now - 301))
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(secret).verify(BODY, stale)
    assert not signing.verify(secret, stale, BODY)
    assert signing.verify(secret, stale, BODY, tolerance=400)
    # The id is signed: the same signature under another id fails.
    moved = {**headers, "webhook-id": MSG + "x"}
    assert not signing.verify(secret, moved, BODY)


def test_rotation_window_two_signatures_then_only_the_current_one() -> None:
    old, new = signing.new_secret(), signing.new_secret()
    now = time.time()
    signer = signing.Signer(new, old, previous_until=now + 10)
    during = as_dict(signer.headers(MSG, BODY, now))
    assert len(during["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        Webhook(secret).verify(BODY, during)
        assert signing.verify(secret, during, BODY)
    after = as_dict(signer.headers(MSG, BODY, now + 10))
    assert len(after["webhook-signature"].split(" ")) == 1
    Webhook(new).verify(BODY, after)
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(BODY, after)
    assert signing.verify(new, after, BODY, now=now + 10)
    assert not signing.verify(old, after, BODY, now=now + 10)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"webhook-id": MSG, "webhook-timestamp": "{t}"},
        {"webhook-id": MSG, "webhook-signature": "{sig}"},
        {"webhook-timestamp": "{t}", "webhook-signature": "{sig}"},
        {"webhook-id": MSG, "webhook-timestamp": "abc", "webhook-signature": "{sig}"},
        {"webhook-id": MSG, "webhook-timestamp": "1.5", "webhook-signature": "{sig}"},
        {"webhook-id": MSG, "webhook-timestamp": "-{t}", "webhook-signature": "{sig}"},
        {"webhook-id": MSG, "webhook-timestamp": "9" * 5000, "webhook-signature": "{sig}"},
        {"webhook-id": MSG, "webhook-timestamp": "{t}", "webhook-signature": ""},
        {"webhook-id": MSG, "webhook-timestamp": "{t}", "webhook-signature": "v1,é{sig}"},
        {"webhook-id": MSG, "webhook-timestamp": "{t}", "webhook-signature": "v2,{mac}"},
        {"webhook-id": MSG, "webhook-timestamp": "{t}", "webhook-signature": "{sig}\x00"},
    ],
)
def test_missing_or_malformed_headers_are_false_never_an_exception(headers: dict[str, str]) -> None:
    secret = signing.new_secret()
    now = int(time.time())
    good = as_dict(signing.Signer(secret).headers(MSG, BODY, now))
    sig = good["webhook-signature"]
    filled = {
        k: v.replace("{t}", str(now)).replace("{sig}", sig).replace("{mac}", sig.removeprefix("v1,"))
        for k, v in headers.items()
    }
    assert signing.verify(secret, filled, BODY) is False
    assert signing.verify("not base64!", good, BODY) is False
    assert signing.verify("", good, BODY) is False


def test_header_names_are_case_insensitive_and_any_listed_signature_may_match() -> None:
    secret = signing.new_secret()
    good = as_dict(signing.Signer(secret).headers(MSG, BODY, time.time()))
    upper = {k.upper(): v for k, v in good.items()}
    upper["WEBHOOK-SIGNATURE"] = "v1,AAAA " + good["webhook-signature"]
    assert signing.verify(secret, upper, BODY)
