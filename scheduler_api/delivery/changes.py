"""Trigger changes as the workers hear of them: the API publishes one message per replace or
delete (on ``sa:changed``, from the same Lua script that makes the change, so the message is out
before the API answers), and `ChangeWatch` counts them in a thread of the worker process.

A batch being delivered compares the count before each firing it starts and, when it moved,
reads again the definitions of the workspaces that changed (scheduler_api.delivery.batch), so a firing
not yet started when a replace or delete returns is dropped, not sent: the window is the
message's way to the worker (about a millisecond), where reading the definitions every 0.25 s
alone left up to 0.25 s. A change to another workspace costs a batch the comparison and a
look at which of its waiting firings belong to the changed workspaces (no Redis round trip).

Failure rules: the watch never raises. Losing its connection counts as a change (messages may
have been missed) and it subscribes again after half a second; meanwhile, and in processes
without a watch (the plain `rq worker`), batches still read the definitions every 0.25 s.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any, cast

import redis
from redis import Redis

from scheduler_api.storage import keys

log = logging.getLogger("scheduler_api.changes")

RESUBSCRIBE_AFTER_SECONDS = 0.5
POLL_SECONDS = 0.5  # how long a wait for a message lasts; `stop` takes effect within it


KEPT_CHANGES = 10_000  # changes remembered for `changed_since`; older ones read as "anything"


class ChangeWatch:
    """`generation` grows by one with every change heard of; `changed_since` says which
    workspaces changed (module docstring)."""

    def __init__(self, conn: Redis) -> None:
        self.conn = conn
        self.generation = 0
        self._changes: deque[tuple[int, str | None]] = deque(maxlen=KEPT_CHANGES)  # None: anything
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def changed_since(self, generation: int) -> tuple[set[str] | None, int]:
        """(The workspaces changed after `generation`, or None when that is not known; the
        generation this answer is up to)."""
        with self._lock:
            now = self.generation
            changed: set[str] = set()
            oldest = now + 1
            for gen, workspace_id in reversed(self._changes):
                if gen <= generation:
                    break
                if workspace_id is None:
                    return None, now
                changed.add(workspace_id)
                oldest = gen
            if now > generation and oldest > generation + 1:  # forgotten: too many since
                return None, now
            return changed, now

    def _heard(self, workspace_id: str | None) -> None:
        with self._lock:
            self.generation += 1
            self._changes.append((self.generation, workspace_id))

    def start(self) -> ChangeWatch:
        self._thread = threading.Thread(target=self._run, name="trigger-changes", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop within `POLL_SECONDS` (not waited for: the thread is a daemon and only reads)."""
        self._stop.set()

    def _run(self) -> None:
        pubsub = None
        while not self._stop.is_set():
            try:
                if pubsub is None:
                    # Through Any: redis-py types pubsub() in some releases and not in others.
                    pubsub = cast(Any, self.conn).pubsub()
                    pubsub.subscribe(keys.CHANGED)  # its confirmation reads as "anything changed"
                message = pubsub.get_message(timeout=POLL_SECONDS)
                if message is not None:
                    data = message.get("data")
                    is_change = message.get("type") == "message" and isinstance(data, bytes)
                    self._heard(data.decode().removesuffix(":") if is_change else None)
            except Exception as e:  # a lost connection, or one closed under us by the pool's owner
                self._heard(None)
                if self._stop.is_set():
                    break
                log.warning("trigger changes: subscription lost (%s); subscribing again", e)
                _close(pubsub)
                pubsub = None
                self._stop.wait(RESUBSCRIBE_AFTER_SECONDS)
        _close(pubsub)


def _close(pubsub: redis.client.PubSub | None) -> None:
    if pubsub is not None:
        try:
            pubsub.close()
        except Exception:  # closing a broken connection: nothing left to do
            pass
