"""A local HTTP receiver that records every request: ``python -m bench.receiver --port P``.

It answers 200 to any method on any path (after ``--delay-ms``, like a slow remote webhook) and
records ``[arrived, answered, X-Scheduler-Scheduled-At, Idempotency-Key]`` (unix seconds) for
each request. Its own endpoints, for the benchmark:

* ``GET /__bench/stats``                 ``{"count": n}``
* ``GET /__bench/records?offset=k``      up to 50,000 records from the k-th: ``{"records", "next", "count"}``

It is an aiohttp.web server in its own process, so it does not share a GIL with what it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from aiohttp import web

PAGE = 50_000
BODY = b'{"ok":true}'


class Recorder:
    def __init__(self, delay_seconds: float) -> None:
        self.delay = delay_seconds
        self.records: list[tuple[float, float, str, str]] = []

    async def hook(self, request: web.Request) -> web.Response:
        arrived = time.time()
        await request.read()
        if self.delay > 0:
            await asyncio.sleep(self.delay)
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


def make_app(delay_seconds: float) -> web.Application:
    recorder = Recorder(delay_seconds)
    app = web.Application(client_max_size=2 * 1024 * 1024)
    app.router.add_get("/__bench/stats", recorder.stats)
    app.router.add_get("/__bench/records", recorder.records_page)
    app.router.add_route("*", "/{tail:.*}", recorder.hook)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.receiver", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=0.0, help="answer each request after this long")
    args = parser.parse_args(argv)
    web.run_app(
        make_app(args.delay_ms / 1000),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        backlog=1024,
    )


if __name__ == "__main__":
    main()
