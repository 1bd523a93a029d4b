"""Helpers shared by the tests: import them from here (`tests.support.<module>`), never from conftest.py.

receiver     a real local HTTP server that records every request (`Receiver`, `Received`)
processes    the service's commands as child processes (`Procs`, `Child`) and waits on them
factories    test settings and trigger builders
clock        the injected clock's instants (`T`) and cron expressions that match one second
engine       tick the scheduler in-process and deliver with a burst worker
assertions   the API's error shape (`assert_error`)
api          calls to the API many tests make (`post_triggers`, `jobs`, `deliveries`, `expected_runs`)
metrics      `GET /metrics` parsed into samples (`scrape`, `v`, `check_histogram`)
asgi         requests driven at the ASGI level
sentinel     a real Redis Sentinel set (a primary, a replica and a sentinel)
"""
