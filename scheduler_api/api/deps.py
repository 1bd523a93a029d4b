"""What every route takes from the request: the app's Redis client and settings, and the path
parameters shared by several routes."""

from __future__ import annotations

from fastapi import Header, Path, Query, Request
from redis import Redis

from scheduler_api.header_crypto import HeaderCipher
from scheduler_api.settings import Settings
from scheduler_api.ssrf import TargetPolicy
from scheduler_api.triggers import TRIGGER_ID, WORKSPACE_ID

WorkspaceId = Path(
    min_length=1,
    max_length=128,
    pattern=WORKSPACE_ID.pattern,
    description="1-128 characters of A-Z a-z 0-9 _ . -",
)


def redis_of(request: Request) -> Redis:
    conn: Redis = request.app.state.redis
    return conn


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def cipher_of(request: Request) -> HeaderCipher | None:
    cipher: HeaderCipher | None = request.app.state.cipher
    return cipher


def target_policy_of(request: Request) -> TargetPolicy:
    policy: TargetPolicy = request.app.state.target_policy
    return policy


TriggerId = Path(
    min_length=1,
    max_length=64,
    pattern=TRIGGER_ID.pattern,
    description="The trigger's id: 1-64 of A-Z a-z 0-9 _ . -, not dots only (its index when none was given).",
)
DryRun = Query(False, description="Validate and plan the change, answer the diff and warnings, change nothing.")
IfMatch = Header(
    None,
    alias="If-Match",
    description='Apply only if the workspace\'s ETag is one of these ("..." as sent in ETag), or * (any).',
)
IfNoneMatch = Header(None, alias="If-None-Match", description="`*`: create only (412 if the trigger exists).")


NO_MATCH = "\x00"  # stands for a tag that can match no ETag of ours


def etags(if_match: str | None) -> tuple[str, ...]:
    """The ETags an If-Match header names, unquoted; () for none or `*`. If-Match compares strongly
    (RFC 9110): a weak tag (`W/"..."`), an empty one or one with white space matches nothing."""
    if if_match is None or if_match.strip() == "*":
        return ()
    tags = []
    for part in if_match.split(","):
        tag = part.strip()
        if len(tag) >= 2 and tag[0] == tag[-1] == '"':
            tag = tag[1:-1]
        tags.append(tag if tag and not tag.startswith("W/") and not any(c.isspace() for c in tag) else NO_MATCH)
    return tuple(tags) or (NO_MATCH,)


def quoted(etag: str) -> str:
    return f'"{etag}"'
