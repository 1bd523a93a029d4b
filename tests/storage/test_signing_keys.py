"""`scheduler_api.storage.signing_keys`: one secret per workspace, created once however many callers
race for it, rotated with a window for the previous one."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from redis import Redis

from scheduler_api.storage import keys, signing_keys
from scheduler_api.storage.connection import connect


def test_racing_first_uses_create_one_secret(conn: Redis, redis_url: str) -> None:
    callers = 8
    barrier = threading.Barrier(callers)
    clients = [connect(redis_url, timeout=5) for _ in range(callers)]

    def first_use(client: Redis) -> str:
        barrier.wait()
        return signing_keys.get(client, None, "fresh", now=time.time()).secret

    try:
        with ThreadPoolExecutor(callers) as pool:
            secrets = set(pool.map(first_use, clients))
    finally:
        for client in clients:
            client.close()
    assert len(secrets) == 1
    assert conn.hget(keys.signing("fresh"), "secret") == secrets.pop().encode()


def test_rotation_keeps_the_previous_one_for_its_window_only(conn: Redis) -> None:
    now = time.time()
    first = signing_keys.get(conn, None, "ws", now=now)
    assert first.previous is None and first.previous_expires_at is None
    second = signing_keys.rotate(conn, None, "ws", now=now + 1, rotation_seconds=100)
    assert second.secret != first.secret and second.previous == first.secret
    assert second.previous_expires_at == now + 101 and second.created_at == now + 1
    assert signing_keys.get(conn, None, "ws", now=now + 100).previous == first.secret
    later = signing_keys.get(conn, None, "ws", now=now + 101)
    assert later.secret == second.secret and later.previous is None and later.previous_expires_at is None
