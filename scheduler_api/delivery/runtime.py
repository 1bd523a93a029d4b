"""A worker process's delivery runtime: one event loop and one shared HTTP client, kept across jobs.

Under `scheduler-api worker` one `DeliveryRuntime` lives as long as the process, so up to
`WORKER_MAX_IN_FLIGHT` requests are in flight with connection reuse across batches; under the plain
`rq worker` command each job builds its own (scheduler_api.delivery.dispatch.run_batch).

The client connects only to addresses the SSRF guard allows (scheduler_api.ssrf, checked on the
addresses DNS returned), keeps no cookies (one client serves every workspace: a cookie one target
set must never travel with another tenant's request) and never labels a bodyless request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection
from typing import Any

import aiohttp
from redis import Redis

from scheduler_api.delivery.attempt import SendOptions, warm
from scheduler_api.delivery.changes import ChangeWatch
from scheduler_api.delivery.http import DeliveryClient, DeliveryTransport
from scheduler_api.delivery.retry import RetryPolicy
from scheduler_api.errors import SecretsError
from scheduler_api.header_crypto import HeaderCipher
from scheduler_api.settings import Settings
from scheduler_api.ssrf import GuardedResolver
from scheduler_api.storage import signing_keys
from scheduler_api.storage.firings import Retention
from scheduler_api.storage.triggers import StoredTrigger


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop where it is installed (it is a dependency on Linux and macOS), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class DeliveryRuntime:
    """An event loop and one shared HTTP client that live as long as the worker process, with what
    every batch of the process shares: settings, send options, the default retry policy (a
    trigger's own retry fields override it, scheduler_api.delivery.retry), header cipher,
    retention, the change watch, the workspaces' signers, and the `stopping` flag."""

    def __init__(self, settings: Settings, *, resolver: Any = None) -> None:
        """`resolver`: an aiohttp resolver to ask instead of the system's (tests control DNS with it);
        the SSRF guard always wraps it."""
        self.settings = settings
        self.options = SendOptions.from_settings(settings)
        self.retry = RetryPolicy.from_settings(settings)
        self.cipher = HeaderCipher(settings.secrets_key) if settings.secrets_key else None
        self.retention = Retention.from_settings(settings)
        self.resolver = resolver
        self.loop = new_event_loop()
        self.stopping = False  # set on SIGTERM: batches start no new request
        self.changes: ChangeWatch | None = None  # set by `scheduler-api worker`
        self._client: DeliveryClient | None = None
        # Workspace id -> its secrets as stored when last read, and why they cannot be opened (if so).
        self._signing_read: dict[str, signing_keys.Stored] = {}
        self.signing_errors: dict[str, SecretsError] = {}

    def client(self) -> DeliveryClient:
        """The shared client: httpx over aiohttp, whose connector resolves through the SSRF guard."""
        if self._client is None:
            concurrency = self.settings.max_in_flight
            guard = GuardedResolver(self.options.policy, self.resolver)

            def session() -> aiohttp.ClientSession:  # built lazily, inside the running loop
                return aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=concurrency, resolver=guard),
                    cookie_jar=aiohttp.DummyCookieJar(),
                    # A request with a body always names its type (attempt.build_request); a
                    # bodyless POST gets none, not aiohttp's "application/octet-stream".
                    skip_auto_headers=("Content-Type",),
                )

            self._client = DeliveryClient(
                DeliveryTransport(timeout=self.settings.delivery_timeout_seconds, client=session),
                timeout=self.settings.delivery_timeout_seconds,
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self.loop.run_until_complete(self._client.aclose())
            self._client = None
        self.loop.run_until_complete(asyncio.sleep(0))  # let aiohttp close its sockets
        self.loop.close()

    def warm(self, trigger: StoredTrigger) -> None:
        """Prefetching's hook (scheduler_api.storage.prefetch): `attempt.warm` with this worker's options."""
        warm(trigger, self.options)

    def load_signers(self, conn: Redis, workspace_ids: Collection[str]) -> None:
        """Read the signing secrets of `workspace_ids` (one round trip; created where missing) into
        `options.signers`, decrypting only those that changed since the last read. A workspace whose
        secrets cannot be decrypted is left out of the signers and named in `signing_errors`.
        Redis errors are raised unchanged (the batch fails and another worker takes it)."""
        if not workspace_ids:
            return
        stored = signing_keys.read_many(conn, self.cipher, sorted(workspace_ids), now=time.time())
        signers = self.options.signers
        for workspace_id, found in stored.items():
            if self._signing_read.get(workspace_id) == found and workspace_id in signers:
                continue
            self._signing_read[workspace_id] = found
            try:
                key = signing_keys.open_key(self.cipher, workspace_id, found, now=time.time())
            except SecretsError as e:
                signers.pop(workspace_id, None)
                self.signing_errors[workspace_id] = e
                continue
            self.signing_errors.pop(workspace_id, None)
            signers[workspace_id] = key.signer()

    def changes_seen(self) -> int:
        """How many trigger changes this process has heard of (0 without a change watch)."""
        return self.changes.generation if self.changes is not None else 0
