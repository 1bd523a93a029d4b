"""A local HTTP receiver that records every request: ``python -m bench.receiver --port P``.

It answers 200 to any method on any path (after ``--delay-ms``, like a slow remote webhook; paths
starting with ``--slow-prefix`` after ``--slow-ms`` instead) and
records ``[arrived, answered, X-Scheduler-Scheduled-At, Idempotency-Key]`` (unix seconds) for
each request. Its own endpoints, for the benchmark:

* ``GET /__bench/stats``                 ``{"count": n}``
* ``GET /__bench/records?offset=k``      up to 50,000 records from the k-th: ``{"records", "next", "count"}``

It runs in its own process, so it does not share a GIL with what it measures, and by default it
is a plain asyncio protocol over httptools (the HTTP/1.1 parser uvicorn uses) on uvloop: on the
2 cores it shares with the service it costs a fraction of the CPU per request of an aiohttp.web
server (``--server aiohttp``, the receiver of earlier figures), whose CPU would otherwise be
taken from the workers being measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httptools
from aiohttp import web

PAGE = 50_000
BODY = b'{"ok":true}'


class Recorder:
    def __init__(self, delay_seconds: float, slow_prefix: str = "", slow_seconds: float = 0.0) -> None:
        self.delay = delay_seconds
        self.slow_prefix = slow_prefix.encode()
        self.slow = slow_seconds
        self.records: list[tuple[float, float, str, str]] = []

    def delay_of(self, path: bytes) -> float:
        return self.slow if self.slow_prefix and path.startswith(self.slow_prefix) else self.delay

    async def hook(self, request: web.Request) -> web.Response:
        arrived = time.time()
        await request.read()
        delay = self.delay_of(request.path.encode())
        if delay > 0:
            await asyncio.sleep(delay)
        headers = request.headers
        self.records.append(
            (arrived, time.time(), headers.get("X-Scheduler-Scheduled-At", ""), headers.get("Idempotency-Key", ""))
        )
        return web.Response(body=BODY, content_type="application/json")

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({"count": len(self.records)})

    async def records_page(self, request: web.Request) -> web.Response:
        offset = max(int(request.query.get("offset", "0")), 0)
        page: list[Any] = self.records[offset : offset + PAGE]
        return web.json_response({"records": page, "next": offset + len(page), "count": len(self.records)})


ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)


class RecordingProtocol(asyncio.Protocol):
    """One connection of the httptools server: HTTP/1.1 with keep-alive, one request at a time."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.scheduled_at = b""
        self.key = b""
        self.arrived = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.arrived = time.time()
        self.url, self.scheduled_at, self.key = b"", b"", b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        lower = name.lower()
        if lower == b"x-scheduler-scheduled-at":
            self.scheduled_at = value
        elif lower == b"idempotency-key":
            self.key = value

    def on_message_complete(self) -> None:
        keep_alive = self.parser.should_keep_alive()
        if self.url.startswith(b"/__bench/"):
            self._write(self._bench_answer(), keep_alive)
            return
        arrived, scheduled_at, key = self.arrived, self.scheduled_at.decode(), self.key.decode()

        def answer() -> None:
            self.recorder.records.append((arrived, time.time(), scheduled_at, key))
            self._write(ANSWER, keep_alive)

        delay = self.recorder.delay_of(self.url)
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, answer)
        else:
            answer()

    def _bench_answer(self) -> bytes:
        parts = urlsplit(self.url.decode())
        records = self.recorder.records
        if parts.path == "/__bench/stats":
            body: dict[str, Any] = {"count": len(records)}
        else:
            offset = max(int(parse_qs(parts.query).get("offset", ["0"])[0]), 0)
            page = records[offset : offset + PAGE]
            body = {"records": page, "next": offset + len(page), "count": len(records)}
        data = json.dumps(body).encode()
        return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
            len(data),
            data,
        )

    def _write(self, data: bytes, keep_alive: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(data)
        if not keep_alive:
            self.transport.close()


def serve_httptools(port: int, recorder: Recorder) -> None:
    import uvloop

    async def run() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: RecordingProtocol(recorder), "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    uvloop.run(run())


def make_app(recorder: Recorder) -> web.Application:
    app = web.Application(client_max_size=2 * 1024 * 1024)
    app.router.add_get("/__bench/stats", recorder.stats)
    app.router.add_get("/__bench/records", recorder.records_page)
    app.router.add_route("*", "/{tail:.*}", recorder.hook)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.receiver", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=0.0, help="answer each request after this long")
    parser.add_argument("--slow-prefix", default="", help="paths starting with this answer after --slow-ms")
    parser.add_argument("--slow-ms", type=float, default=0.0)
    parser.add_argument("--server", choices=["httptools", "aiohttp"], default="httptools", help="see the docstring")
    args = parser.parse_args(argv)
    recorder = Recorder(args.delay_ms / 1000, args.slow_prefix, args.slow_ms / 1000)
    if args.server == "httptools":
        serve_httptools(args.port, recorder)
        return
    web.run_app(
        make_app(recorder),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        backlog=1024,
    )


if __name__ == "__main__":
    main()
