"""Dashboard sessions: a signed cookie that names a key's scope and fingerprint, never the key.

The cookie is ``<payload>.<signature>``: the payload is base64url JSON ``{"s": scope, "f": fingerprint,
"e": expiry, "n": nonce}``, the signature HMAC-SHA256 of it under the UI secret (`ui_secret`). It is
HttpOnly, SameSite=Strict, Path=/ui, and Secure when the request came over https.

Rules (`Sessions.read`): a cookie whose signature does not verify, that has expired
(``UI_SESSION_SECONDS``) or whose fingerprint matches no key of ``API_KEYS`` with the same scope is no
session (the caller shows the sign-in page): removing a key from ``API_KEYS`` ends its sessions at
their next request. Without API_KEYS (development) every visitor gets an open session of scope ``*``.
A CSRF token is the HMAC of the session's nonce: a form posted with another session's token, or none,
is refused (`Sessions.csrf_ok`). The sign-in form has its own token, bound to a nonce cookie set
with the form (`login_token`), so another site cannot sign a browser in with its own key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
from dataclasses import dataclass

from scheduler_api.auth import ALL, ApiKey
from scheduler_api.settings import Settings

log = logging.getLogger("scheduler_api.ui")
COOKIE = "scheduler_ui"
LOGIN_COOKIE = "scheduler_ui_login"  # the sign-in form's nonce, before there is a session


def ui_secret(settings: Settings) -> bytes:
    """The key sessions are signed with: ``UI_SECRET``; else derived from ``SECRETS_KEY``; else random
    for this process (sessions then end when it restarts and are not shared between replicas)."""
    if settings.ui_secret:
        return hashlib.sha256(b"ui-secret:" + settings.ui_secret.encode()).digest()
    if settings.secrets_key:
        return hmac.new(settings.secrets_key.encode(), b"scheduler-api ui sessions", hashlib.sha256).digest()
    if settings.app_env == "production":
        log.warning("UI_SECRET and SECRETS_KEY are not set: dashboard sessions end when this process restarts")
    return os.urandom(32)


@dataclass(frozen=True)
class Session:
    """Who is signed in: the scope of their key; `open` when the UI runs without API_KEYS."""

    scope: str
    fingerprint: str
    expires: float
    nonce: str
    open: bool = False


class Sessions:
    """Makes and checks session cookies and CSRF tokens against the app's keys."""

    def __init__(self, secret: bytes, keys: list[ApiKey], *, lifetime: int) -> None:
        self.secret = secret
        self.keys = keys
        self.lifetime = lifetime

    def _mac(self, data: bytes) -> str:
        return hmac.new(self.secret, data, hashlib.sha256).hexdigest()

    def fingerprint(self, key: str) -> str:
        return self._mac(b"key:" + key.encode())[:32]

    def issue(self, key: ApiKey | None, *, now: float) -> tuple[Session, str]:
        """A new session for `key` (None: the open UI) and its cookie value."""
        session = Session(
            scope=key.scope if key else ALL,
            fingerprint=self.fingerprint(key.key) if key else "",
            expires=now + self.lifetime,
            nonce=secrets.token_urlsafe(16),
            open=key is None,
        )
        body = {"s": session.scope, "f": session.fingerprint, "e": session.expires, "n": session.nonce}
        payload = base64.urlsafe_b64encode(json.dumps(body, separators=(",", ":")).encode()).decode().rstrip("=")
        return session, f"{payload}.{self._mac(payload.encode())}"

    def read(self, cookie: str | None, *, now: float) -> Session | None:
        """The session `cookie` holds, or None (module docstring: bad signature, expired, key gone)."""
        if not cookie or "." not in cookie:
            return None
        payload, _, signature = cookie.rpartition(".")
        if not _same(self._mac(payload.encode()), signature):
            return None
        try:
            body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            session = Session(str(body["s"]), str(body["f"]), float(body["e"]), str(body["n"]))
        except (ValueError, KeyError, TypeError):
            return None
        if session.expires <= now:
            return None
        if not self.keys:
            return Session(ALL, "", session.expires, session.nonce, open=True)
        found = False
        for key in self.keys:  # every key is compared: timing does not tell which matched
            same = _same(self.fingerprint(key.key), session.fingerprint)
            found = found or (same and key.scope == session.scope)
        return session if found else None

    def csrf_token(self, session: Session) -> str:
        return self._mac(b"csrf:" + session.nonce.encode())

    def csrf_ok(self, session: Session, token: str | None) -> bool:
        return token is not None and _same(self.csrf_token(session), token)

    def login_token(self, nonce: str) -> str:
        return self._mac(b"login:" + nonce.encode())

    def login_ok(self, nonce: str | None, token: str | None) -> bool:
        return bool(nonce) and token is not None and _same(self.login_token(nonce or ""), token)


def _same(expected: str, given: str) -> bool:
    """Constant-time comparison of a MAC with what the browser sent; any text (non-ASCII included)
    is compared as UTF-8 bytes, so a forged value is a mismatch, never an error."""
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", errors="replace"))
