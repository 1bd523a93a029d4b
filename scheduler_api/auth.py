"""API keys for the management API (``/api/...``).

``API_KEYS`` is a comma-separated list. Each entry is ``<key>`` (every workspace) or
``<key>:<prefix>`` (only workspaces whose id starts with ``<prefix>``). Keys are 16 or more
characters of ``A-Z a-z 0-9 _ -``; the prefix follows the workspace-id alphabet. Clients send
``Authorization: Bearer <key>``.

Rules: no or unknown key -> 401; a known key used on a workspace outside its prefix -> 403.
Keys are compared in constant time against every configured key (no early exit). ``/health``,
``/ready`` and the docs stay open. In production the API refuses to start without keys; in
development with none it runs open and says so loudly at start-up.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass

from scheduler_api.errors import Forbidden, Unauthorized

_KEY = re.compile(r"^[A-Za-z0-9_-]{16,}$")
_PREFIX = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


@dataclass(frozen=True)
class ApiKey:
    key: str
    prefix: str | None = None


def parse_api_keys(raw: str) -> list[ApiKey]:
    """Parse ``API_KEYS``; raise ValueError naming the bad entry (never echoing a whole key)."""
    keys = []
    for n, entry in enumerate((e.strip() for e in raw.split(",")), 1):
        if not entry:
            continue
        key, _, prefix = entry.partition(":")
        if not _KEY.match(key):
            raise ValueError(f"entry {n}: a key must be 16+ characters of A-Z a-z 0-9 _ -")
        if prefix and not _PREFIX.match(prefix):
            raise ValueError(f"entry {n}: the workspace prefix must be 1-128 characters of A-Z a-z 0-9 _ . -")
        keys.append(ApiKey(key, prefix or None))
    return keys


def authorize(keys: list[ApiKey], authorization: str | None, workspace_id: str | None) -> None:
    """Raise `Unauthorized` (401) or `Forbidden` (403) unless `authorization` carries a key allowed on
    `workspace_id`."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    matched: ApiKey | None = None
    for candidate in keys:  # compare against every key, so timing does not tell which matched
        if hmac.compare_digest(candidate.key.encode(), token.encode()) and scheme.lower() == "bearer":
            matched = candidate
    if matched is None:
        raise Unauthorized(
            "Unauthorized",
            [{"path": "headers.authorization", "message": "send Authorization: Bearer <api key>"}],
        )
    if matched.prefix and workspace_id is not None and not workspace_id.startswith(matched.prefix):
        raise Forbidden(
            "Forbidden",
            [
                {
                    "path": "workspace_id",
                    "message": f"this key is restricted to workspaces starting with {matched.prefix!r}",
                }
            ],
        )
