"""What every route takes from the request: the app's Redis client and settings, and the path
parameters shared by several routes."""

from __future__ import annotations

from fastapi import Path, Request
from redis import Redis

from scheduler_api.header_crypto import HeaderCipher
from scheduler_api.settings import Settings
from scheduler_api.ssrf import TargetPolicy
from scheduler_api.triggers import WORKSPACE_ID

WorkspaceId = Path(
    min_length=1,
    max_length=128,
    pattern=WORKSPACE_ID.pattern,
    description="1-128 characters of A-Z a-z 0-9 _ . -",
)
TriggerIndex = Path(ge=0, le=1_000_000, description="The trigger's index in its workspace's list.")


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
