"""A real Redis Sentinel set: a primary, one replica and one sentinel, each a process on a free port."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from redis import Redis

from scheduler_api.embedded_redis import RedisServer, find_binary, free_port
from tests.support.processes import wait_until

SERVICE = "svc"


def _answers(call: Any) -> Any:
    try:
        return call()
    except Exception:
        return None


class SentinelSet:
    """A primary, one replica and one sentinel (quorum 1, down after 1 s), each a real process."""

    REPLICATION = ("--repl-diskless-sync-delay", "0")

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        # Their own directories: a replica writes the primary's snapshot to its working directory.
        (tmp / "primary").mkdir()
        (tmp / "replica").mkdir()
        self.primary = RedisServer(extra_args=(*self.REPLICATION, "--dir", str(tmp / "primary"))).start()
        self.replica = RedisServer(
            extra_args=(
                *self.REPLICATION,
                "--dir",
                str(tmp / "replica"),
                "--replicaof",
                "127.0.0.1",
                str(self.primary.port),
            )
        ).start()
        wait_until(lambda: self.client(self.replica).info("replication")["master_link_status"] == "up", 10, "sync")
        self.port = free_port()
        conf = tmp / "sentinel.conf"
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {tmp}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary.port} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 5000\n"
        )
        with (tmp / "sentinel.log").open("wb") as log:
            self.sentinel = subprocess.Popen(
                [find_binary(), str(conf), "--sentinel"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        sentinel = Redis(port=self.port, socket_timeout=1)
        wait_until(lambda: _answers(lambda: sentinel.sentinel_slaves(SERVICE)), 10, "the sentinel to see the replica")

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.port}/{SERVICE}/0"

    @staticmethod
    def client(server: RedisServer) -> Redis:
        return Redis(port=server.port, socket_timeout=2)

    def log(self) -> str:
        return (self.tmp / "sentinel.log").read_text(errors="replace")[-3000:]

    def master_port(self) -> int:
        _, port = Redis(port=self.port, socket_timeout=1).sentinel_get_master_addr_by_name(SERVICE)
        return int(port)

    def kill_primary(self) -> None:
        """SIGKILL the primary once the replica has everything it acknowledged."""
        assert self.client(self.primary).wait(1, 2000) == 1
        assert self.primary.process is not None
        self.primary.process.kill()
        self.primary.process.wait()

    def stop(self) -> None:
        self.sentinel.kill()
        self.sentinel.wait()
        self.replica.stop()
        self.primary.stop()
