"""`scheduler-api rotate-secrets`: stored header values move to the first SECRETS_KEY key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cryptography.fernet import Fernet
from redis import Redis

from scheduler_api.header_crypto import HeaderCipher
from scheduler_api.storage import edits, keys
from scheduler_api.storage import triggers as store
from scheduler_api.triggers import Trigger

ROOT = Path(__file__).resolve().parents[2]


def test_rotate_secrets_command_reencrypts_with_the_new_key(conn: Redis, redis_url: str, tmp_path: Path) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    trigger = Trigger(cron="0 * * * *", url="https://example.com/h", method="GET", headers={"Authorization": "tok-1"})
    edits.replace(conn, "w", [trigger], cipher=HeaderCipher(old))
    edits.replace(conn, "plain", [trigger])  # stored before SECRETS_KEY existed: gets encrypted too
    before = store.load_definitions(conn, ["w:0"])["w:0"]

    env = dict(os.environ, REDIS_URL=redis_url, SECRETS_KEY=f"{new},{old}", PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-m", "scheduler_api.cli", "rotate-secrets"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "2 trigger(s)" in done.stdout

    only_new = HeaderCipher(new)
    for ws in ("w", "plain"):
        stored = store.load_definitions(conn, [f"{ws}:0"])[f"{ws}:0"]
        assert only_new.open(stored.headers) == {"Authorization": "tok-1"}
    after = store.load_definitions(conn, ["w:0"])["w:0"]
    assert after.version == before.version  # firings already scheduled stay valid
    assert b"tok-1" not in b"".join(v for v in conn.hvals(keys.workspace("w")))


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
