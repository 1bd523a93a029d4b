"""JSON Merge Patch (RFC 7396) of a stored trigger, for ``PATCH .../triggers/{id}``.

The patch applies to the trigger as a client would send it (`trigger_as_input`), then the result is
validated as a whole like any new trigger. Rules:
* a member set to ``null`` is removed (so it takes its default, or is missing and refused);
* objects merge recursively (``payload`` as RFC 7396 says); anything else replaces;
* ``headers`` merge by name, case-insensitively: a header the patch does not name keeps its stored
  (secret) value, ``"Name": null`` removes it, ``"headers": null`` removes them all;
* the policy fields are patched like any other: ``"retry": {"max_retries": 5}`` keeps the stored
  backoff, ``"retry": null`` returns to the settings' defaults; a one-off's ``at`` and the times
  ``start_at`` / ``end_at`` are given back in ISO 8601 UTC, so an untouched one is unchanged.
A rule that involves several fields (exactly one of ``cron`` and ``at``; ``end_at`` after
``start_at``) is reported at the first field its message names (`located`).
Failure rule: stored header values that cannot be decrypted (``SECRETS_KEY`` rotated too early)
make the patch a 400 that says so; nothing is changed.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from scheduler_api import cron as cronlib
from scheduler_api.api.views import policy_view
from scheduler_api.errors import InvalidRequest, SecretsError
from scheduler_api.header_crypto import HeaderCipher
from scheduler_api.storage.triggers import StoredTrigger
from scheduler_api.triggers import Trigger

_FIELD_NAMES = re.compile(r"\b(" + "|".join(sorted(Trigger.model_fields, key=len, reverse=True)) + r")\b")


def merge_patch(target: Any, patch: Any, *, top: bool = True) -> Any:
    """RFC 7396 section 2, with the `headers` rule of the module docstring at the top level."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            out.pop(name, None)
        elif name == "headers" and top and isinstance(value, dict):
            out[name] = _merge_headers(out.get(name) or {}, value)
        else:
            out[name] = merge_patch(out.get(name), value, top=False)
    return out


def _merge_headers(stored: dict[str, str], patch: dict[str, Any]) -> dict[str, Any]:
    """Linear in the names of both (a patch may name tens of thousands: the limits are checked after)."""
    merged: dict[str, Any] = dict(stored)
    spelled = {name.lower(): name for name in merged}  # lower-cased name -> its spelling in `merged`
    for name, value in patch.items():
        existing = spelled.pop(name.lower(), None)
        if existing is not None:
            del merged[existing]
        if value is not None:
            merged[name] = value
            spelled[name.lower()] = name
    return merged


def moves_headers_elsewhere(stored_url: str, merged: dict[str, Any], patch: dict[str, Any]) -> bool:
    """Whether the patch sends the stored header values to another origin (scheme, host or port)
    without naming them: then the client must send the headers again (README "Trigger identity")."""
    if "headers" in patch or not merged.get("headers") or not isinstance(merged.get("url"), str):
        return False
    return _origin(stored_url) != _origin(merged["url"])


def _origin(url: str) -> tuple[str, str, int | None]:
    try:
        parts = urlsplit(url)
        return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port
    except ValueError:
        return ("", url, None)


def trigger_as_input(stored: StoredTrigger, cipher: HeaderCipher | None) -> dict[str, Any]:
    """The stored trigger as a client would send it (header values decrypted)."""
    try:
        ws = stored.workspace_id
        headers = cipher.open(stored.headers, workspace_id=ws) if cipher is not None else dict(stored.headers)
    except SecretsError as e:
        raise InvalidRequest(
            "Invalid request",
            [{"path": "headers", "message": f"the stored values cannot be read: {e}; PUT the trigger"}],
        ) from None
    body: dict[str, Any] = {"url": stored.url, "method": stored.method}
    if stored.cron is not None:
        body["cron"] = stored.cron
    if stored.at is not None:
        body["at"] = cronlib.iso(stored.at)
    if stored.payload is not None:
        body["payload"] = stored.payload
    if headers:
        body["headers"] = headers
    body["timezone"] = stored.timezone
    body["enabled"] = stored.enabled
    return body | policy_view(stored)
