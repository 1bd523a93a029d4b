"""A workspace's signing secret (Standard Webhooks, scheduler_api.signing): read it, rotate it.

The secret is created the first time it is read (or a delivery of the workspace is signed). A
rotation answers the new secret; the previous one keeps signing, as a second signature, for
``SIGNING_ROTATION_SECONDS`` (its ``expires_at``). Both routes are the workspace's: a key scoped to
another workspace gets 403, like every workspace route; a rotation counts as a write call
(``WRITES_PER_MINUTE``). Redis unavailable -> 503.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request

from scheduler_api import cron as cronlib
from scheduler_api.api import quotas
from scheduler_api.api.deps import WorkspaceId, cipher_of, redis_of, settings_of
from scheduler_api.api.schemas import ERRORS, SigningSecretResponse
from scheduler_api.storage import signing_keys
from scheduler_api.storage.signing_keys import SigningKey

router = APIRouter()


def _view(key: SigningKey) -> dict[str, Any]:
    expires = key.previous_expires_at
    return {
        "success": True,
        "workspace_id": key.workspace_id,
        "secret": key.secret,
        "created_at": cronlib.iso(key.created_at),
        "previous": {"expires_at": cronlib.iso(expires)} if expires is not None else None,
    }


@router.get(
    "/api/workspaces/{workspace_id}/signing-secret",
    response_model=SigningSecretResponse,
    responses=ERRORS,
    summary="The workspace's signing secret (created on first use)",
)
def get_secret(request: Request, workspace_id: str = WorkspaceId) -> dict[str, Any]:
    """The secret every delivery of the workspace is signed with (headers `webhook-id`,
    `webhook-timestamp`, `webhook-signature`; verify with the `standardwebhooks` package)."""
    key = signing_keys.get(redis_of(request), cipher_of(request), workspace_id, now=time.time())
    return _view(key)


@router.post(
    "/api/workspaces/{workspace_id}/signing-secret/rotate",
    response_model=SigningSecretResponse,
    responses=ERRORS,
    summary="A new signing secret; the previous one keeps signing for SIGNING_ROTATION_SECONDS",
)
def rotate_secret(request: Request, workspace_id: str = WorkspaceId) -> dict[str, Any]:
    """Make a new secret. Deliveries not yet started are signed with it (and with the previous
    one until `previous.expires_at`) within about a second."""
    quotas.count_write(request, workspace_id)  # a write call: 429 beyond WRITES_PER_MINUTE
    settings = settings_of(request)
    key = signing_keys.rotate(
        redis_of(request),
        cipher_of(request),
        workspace_id,
        now=time.time(),
        rotation_seconds=settings.signing_rotation_seconds,
    )
    return _view(key)
