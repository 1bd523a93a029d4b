"""API keys for the management API (``/api/...``) and the workspaces each one serves (its scope).

``API_KEYS`` is a comma-separated list; each entry is one of

* ``<key>``            every workspace (scope ``*``);
* ``<key>:<name>``     exactly the workspace ``<name>``;
* ``<key>:<prefix>*``  the workspaces whose id starts with ``<prefix>``, which must end in ``-``,
                       ``_`` or ``.`` so that ``acme-*`` never covers ``acmecorp``.

Keys are 16 or more characters of ``A-Z a-z 0-9 _ -``; names and prefixes follow the workspace-id
alphabet. Clients send ``Authorization: Bearer <key>``. An entry that is none of these (an empty
scope ``key:``, ``key:acme*`` without a separator, a ``*`` elsewhere) or a key listed twice is a
`ValueError` naming the entry by its number, never quoting the key: the settings validator turns it
into a `SettingsError` and the service does not start. (Before, ``key:acme`` meant every workspace
starting with ``acme``; it now means exactly ``acme``.)

Rules: no or unknown key -> 401; a known key used on a workspace outside its scope -> 403.
Keys are compared in constant time against every configured key (no early exit). ``/health``,
``/ready`` and the docs stay open. In production the API refuses to start without keys; in
development with none it runs open and says so loudly at start-up.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass

from scheduler_api.errors import Forbidden, Unauthorized

ALL = "*"  # the scope of a key that serves every workspace (and of the open API, without keys)
_KEY = re.compile(r"^[A-Za-z0-9_-]{16,}$")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_PREFIX = re.compile(r"^[A-Za-z0-9_.-]{0,127}[-_.]\*$")


@dataclass(frozen=True)
class ApiKey:
    """A key and its scope: ``*``, an exact workspace id, or ``prefix*``."""

    key: str
    scope: str = ALL

    def covers(self, workspace_id: str) -> bool:
        return scope_covers(self.scope, workspace_id)


def scope_covers(scope: str, workspace_id: str) -> bool:
    """Whether `scope` (``*``, ``name`` or ``prefix*``) includes `workspace_id`."""
    if scope == ALL:
        return True
    if scope.endswith("*"):
        return workspace_id.startswith(scope[:-1])
    return workspace_id == scope


def parse_scope(scope: str) -> str:
    """Check one entry's scope (the part after ``:``); raise ValueError saying how to write it."""
    if not scope:
        raise ValueError("the scope after ':' is empty; write 'key' for every workspace, 'key:name' or 'key:prefix-*'")
    if scope.endswith("*"):
        if not _PREFIX.match(scope):
            raise ValueError(
                "a prefix scope is 'prefix*' where the prefix is A-Z a-z 0-9 _ . - and ends in '-', '_' or '.' "
                "(e.g. 'acme-*', so that it never covers 'acmecorp'); '*' only at the end"
            )
        return scope
    if not _NAME.match(scope):
        raise ValueError("a workspace name is 1-128 characters of A-Z a-z 0-9 _ . - ('*' only ends a prefix)")
    return scope


def parse_api_keys(raw: str) -> list[ApiKey]:
    """Parse ``API_KEYS``; raise ValueError naming the bad entry by number (never echoing a key)."""
    keys: list[ApiKey] = []
    seen: dict[str, int] = {}
    for n, entry in enumerate((e.strip() for e in raw.split(",")), 1):
        if not entry:
            continue
        key, colon, scope = entry.partition(":")
        if not _KEY.match(key):
            raise ValueError(f"entry {n}: a key must be 16+ characters of A-Z a-z 0-9 _ -")
        try:
            checked = parse_scope(scope) if colon else ALL
        except ValueError as e:
            raise ValueError(f"entry {n}: {e}") from None
        if key in seen:
            raise ValueError(f"entry {n}: the same key as entry {seen[key]}; a key has one scope")
        seen[key] = n
        keys.append(ApiKey(key, checked))
    return keys


def authorize(keys: list[ApiKey], authorization: str | None, workspace_id: str | None) -> ApiKey:
    """The key `authorization` carries, if it is allowed on `workspace_id`; else raise `Unauthorized`
    (401) or `Forbidden` (403)."""
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
    if workspace_id is not None and not matched.covers(workspace_id):
        raise Forbidden(
            "Forbidden",
            [{"path": "workspace_id", "message": f"this key is restricted to workspaces {describe(matched.scope)}"}],
        )
    return matched


def describe(scope: str) -> str:
    """``acme-*`` -> "starting with 'acme-'"; ``acme`` -> "named 'acme'"."""
    if scope == ALL:
        return "of any name"
    if scope.endswith("*"):
        return f"starting with {scope[:-1]!r}"
    return f"named {scope!r}"
