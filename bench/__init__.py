"""Benchmarks of scheduler-api: programs that print figures (CI does not run them).

* ``python -m bench.firing``   end to end: redis-server, API, scheduler and workers started with the
  production commands; triggers registered through the HTTP API; every delivery recorded by a
  local receiver (`bench.receiver`, its own process).
* ``python -m bench.api``      the HTTP API alone: replace of a 100-trigger workspace, and GET.
* ``python -m bench.ceiling``  the machine's raw HTTP ceiling against the same receiver, with plain
  aiohttp and with the worker's own httpx client, so other figures can be quoted as ratios of it.

Each prints a table and appends one JSON line to ``bench/results.jsonl``. Everything listens on
127.0.0.1 and uses a private redis-server on a free port, never a shared one.
"""
