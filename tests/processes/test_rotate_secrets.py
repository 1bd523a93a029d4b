"""`scheduler-api rotate-secrets`: stored header values move to the first SECRETS_KEY key, bound to their
workspace and header name (first-version `enc:` Fernet values and plain ones included)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cryptography.fernet import Fernet
from redis import Redis
from rq import Queue

from scheduler_api.delivery import worker
from scheduler_api.engine import tick as ticking
from scheduler_api.header_crypto import FERNET_PREFIX, PREFIX, HeaderCipher
from scheduler_api.storage import edits, firings, keys
from scheduler_api.storage import triggers as store
from scheduler_api.triggers import Trigger
from tests.support.clock import T
from tests.support.factories import make_settings
from tests.support.receiver import Receiver

ROOT = Path(__file__).resolve().parents[2]


def run_rotate(redis_url: str, secrets_key: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, REDIS_URL=redis_url, SECRETS_KEY=secrets_key, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "scheduler_api.cli", "rotate-secrets"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_rotate_secrets_command_reencrypts_with_the_new_key(conn: Redis, redis_url: str, tmp_path: Path) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    trigger = Trigger(cron="0 * * * *", url="https://example.com/h", method="GET", headers={"Authorization": "tok-1"})
    edits.replace(conn, "w", [trigger], cipher=HeaderCipher(old))
    edits.replace(conn, "plain", [trigger])  # stored before SECRETS_KEY existed: gets encrypted too
    before = store.load_definitions(conn, ["w:0"])["w:0"]

    done = run_rotate(redis_url, f"{new},{old}", tmp_path)
    assert done.returncode == 0, done.stderr
    assert "2 trigger(s)" in done.stdout and "(1 held unbound or plain values)" in done.stdout

    only_new = HeaderCipher(new)
    for ws in ("w", "plain"):
        stored = store.load_definitions(conn, [f"{ws}:0"])[f"{ws}:0"]
        assert stored.headers["Authorization"].startswith(PREFIX)
        assert only_new.open(stored.headers, workspace_id=ws) == {"Authorization": "tok-1"}
    after = store.load_definitions(conn, ["w:0"])["w:0"]
    assert after.version == before.version  # firings already scheduled stay valid
    assert b"tok-1" not in b"".join(v for v in conn.hvals(keys.workspace("w")))


def test_rotate_secrets_migrates_fernet_era_values_which_still_deliver(
    conn: Redis, redis_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    url = receiver.url + "/legacy"
    headers = {"Authorization": "x", "X-Api-Key": "x"}
    edits.replace(conn, "legacy", [Trigger(cron="* * * * * *", url=url, method="GET", headers=headers)], now=lambda: T)
    # Values as the first version stored them: `enc:<Fernet token>`, bound to nothing.
    raw = conn.hget(keys.workspace("legacy"), "0")
    assert raw is not None
    data = json.loads(raw)
    plain = {"Authorization": "Bearer legacy-tok", "X-Api-Key": "legacy-key"}
    data["headers"] = {n: FERNET_PREFIX + Fernet(old.encode()).encrypt(v.encode()).decode() for n, v in plain.items()}
    conn.hset(keys.workspace("legacy"), "0", json.dumps(data))
    before = store.load_definitions(conn, ["legacy:0"])["legacy:0"]

    done = run_rotate(redis_url, f"{new},{old}", tmp_path)
    assert done.returncode == 0, done.stderr
    assert "1 trigger(s)" in done.stdout and "(1 held unbound or plain values)" in done.stdout

    after = store.load_definitions(conn, ["legacy:0"])["legacy:0"]
    assert after.version == before.version
    assert set(after.headers) == set(plain)
    for value in after.headers.values():
        assert value.startswith(PREFIX)
        assert "legacy-tok" not in value and "legacy-key" not in value
    assert HeaderCipher(new).open(after.headers, workspace_id="legacy") == plain

    # A second run has nothing unbound left.
    again = run_rotate(redis_url, new, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "(0 held unbound or plain values)" in again.stdout

    # The old key dropped: the migrated values still deliver.
    settings = make_settings(redis_url, secrets_key=new)
    assert ticking.tick(conn, Queue(settings.queue_name, connection=conn), settings, now=T + 1.2).fired >= 1
    worker.run_worker(settings, conn, burst=True)
    (got,) = receiver.to("/legacy")
    sent = {k.lower(): v for k, v in got.headers.items()}
    assert sent["authorization"] == "Bearer legacy-tok" and sent["x-api-key"] == "legacy-key"
    rec = firings.get_record(conn, "legacy:0@2027-01-15T08:00:01Z")
    assert rec is not None and rec["outcome"] == "delivered"


def test_rotate_secrets_without_a_key_refuses(redis_url: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SECRETS_KEY"}
    env.update(REDIS_URL=redis_url, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-m", "scheduler_api.cli", "rotate-secrets"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "SECRETS_KEY is not set" in done.stderr
