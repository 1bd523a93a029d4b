"""Fuzzing the API: schemathesis against the app's own OpenAPI document, and Hypothesis properties of
trigger validation.

* Every operation, with generated valid and invalid input and a valid API key: no 5xx, every
  response (status, content type, body, headers, ``Allow``) matches the schema, invalid input is
  rejected, and the declared Bearer auth is enforced (schemathesis' ``ignored_auth``).
* What the API accepts (200) can be scheduled: its crons parse, have a next run, and a tick plans
  every enabled trigger. What it rejects (400) leaves the store exactly as it was.
"""

from __future__ import annotations

import string
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from redis import Redis
from rq import Queue
from schemathesis.specs.openapi.checks import positive_data_acceptance

from scheduler_api import cron
from scheduler_api.api import create_app
from scheduler_api.engine import tick as ticking
from scheduler_api.storage import keys
from tests.support.factories import make_settings
from tests.support.redis_state import workspace_state

KEY = "fuzz-key-0123456789abcdef"


# The schema is read from an app built like the real one (nothing connects to Redis to serve
# /openapi.json); the requests go to `fuzz_app`, which has the test's private Redis.
# Extra, undeclared query parameters are ignored by design (as by most APIs), so they are not
# generated as "invalid input"; the key is given per security scheme, so schemathesis knows it.
config = schemathesis.config.SchemathesisConfig.from_dict(
    {
        "generation": {"allow-extra-parameters": False},
        "auth": {"openapi": {"HTTPBearer": {"bearer": KEY}}},
    }
)


schema = schemathesis.openapi.from_asgi(
    "/openapi.json", create_app(make_settings("redis://127.0.0.1:1/0", api_keys=KEY)), config=config
)


@pytest.fixture
def fuzz_app(redis_url: str, conn: Redis) -> Iterator[FastAPI]:
    yield create_app(make_settings(redis_url, api_keys=KEY, allow_private_targets=False), redis_client=conn)


@pytest.mark.slow
@schema.parametrize()
@hsettings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_api_matches_its_schema(case: Any, fuzz_app: FastAPI) -> None:
    # Excluded: "schema-valid input must be accepted". A cron, a time zone or a url can be a valid
    # JSON string and still be refused (400): their rules are not expressible in JSON Schema.
    case.call_and_validate(app=fuzz_app, excluded_checks=[positive_data_acceptance])


CRON_FIELDS = [
    st.sampled_from(["*", "0", "59", "60", "*/15", "5-10", "10-5", "1,2,3", "*/0", "a", ""]),
    st.sampled_from(["*", "0", "23", "24", "*/6", "9-17", "2", "-1"]),
    st.sampled_from(["*", "1", "15", "31", "32", "0", "L", "1-7", "15W", "?"]),
    st.sampled_from(["*", "1", "2", "12", "13", "JAN", "feb", "*/3"]),
    st.sampled_from(["*", "0", "6", "7", "8", "MON-FRI", "sun", "1#2", "5L"]),
]


GOOD_CRON_FIELDS = [
    st.sampled_from(["*", "0", "59", "*/15", "5-10", "1,2,3"]),
    st.sampled_from(["*", "0", "23", "*/6", "9-17", "2"]),
    st.sampled_from(["*", "1", "15", "28", "L", "1-7"]),
    st.sampled_from(["*", "1", "12", "JAN", "*/3"]),
    st.sampled_from(["*", "0", "6", "MON-FRI", "sun", "1#2"]),
]


good_crons = st.one_of(
    st.sampled_from(
        [
            "* * * * *",
            "*/5 * * * *",
            "0 9 * * 1-5",
            "30 2 * * *",  # a local time DST skips in Europe/Paris
            "30 1 * * *",  # one DST repeats in America/New_York
            "*/10 * * * * *",
            "0 0 29 2 *",
            "@hourly",
            "@yearly",
        ]
    ),
    st.tuples(*GOOD_CRON_FIELDS).map(" ".join),
    st.tuples(st.sampled_from(["0", "30", "*/20"]), *GOOD_CRON_FIELDS).map(" ".join),
)


any_crons = st.one_of(
    st.sampled_from(["0 0 31 2 *", "0 0 30 2 *", "@reboot", "H * * * *", "* * * * * * *", "* * * *", "", " * "]),
    st.tuples(*CRON_FIELDS).map(" ".join),
    st.tuples(st.sampled_from(["0", "30", "*/20", "61"]), *CRON_FIELDS).map(" ".join),
    st.text(max_size=20),
)


good_urls = st.one_of(
    st.sampled_from(
        [
            "https://example.com/hook",
            "http://example.com:8080/a?b=c#d",
            "https://hooks.example.org",
            "HTTPS://EXAMPLE.COM/x",
        ]
    ),
    st.text(alphabet=string.ascii_lowercase + string.digits, min_size=1, max_size=20).map(
        lambda h: f"https://{h}.example/path"
    ),
)


any_urls = st.one_of(
    st.sampled_from(
        [
            "http://127.0.0.1/x",
            "http://[::1]/x",
            "http://169.254.169.254/latest/meta-data",
            "http://10.0.0.1/",
            "http://0x7f.1/",
            "ftp://example.com/",
            "http:///nohost",
            "http://example.com:0/",
            "http://example.com:99999/",
            "//example.com/x",
            "https://exa mple.com/",
            "https://example.com/\n",
            "",
        ]
    ),
    st.text(max_size=30),
)


good_methods = st.sampled_from(["GET", "POST", "put", "Patch", "delete"])


any_methods = st.sampled_from(["HEAD", "OPTIONS", "", "get ", 1, None])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)


good_payloads = st.one_of(st.none(), st.dictionaries(st.text(max_size=8), json_values, max_size=4))


any_payloads = json_values


good_headers = st.dictionaries(
    st.sampled_from(["Authorization", "X-Api-Key", "Content-Type", "x_custom.thing~"]),
    st.text(alphabet="\t" + "".join(map(chr, range(0x20, 0x7F))), max_size=12),
    max_size=3,
)


any_headers = st.dictionaries(
    st.sampled_from(
        ["authorization", "X-Scheduler-Attempt", "Idempotency-Key", "Host", "Transfer-Encoding", "Bad Name", "", "Näme"]
    ),
    st.one_of(st.sampled_from(["a\r\nb", "é", "\x01"]), st.text(max_size=12), st.integers()),
    min_size=1,
    max_size=3,
).map(lambda h: {"Authorization": "x", **h})


good_timezones = st.sampled_from(["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata", "Etc/GMT+12", None])


any_timezones = st.sampled_from(["Mars/Olympus", "", "utc", "+02:00", 3])


@st.composite
def trigger_dicts(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly valid triggers with, now and then, one or more invalid parts."""

    def pick(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> Any:
        return draw(bad if draw(st.integers(0, 99)) < 7 else good)

    t: dict[str, Any] = {
        "cron": pick(good_crons, any_crons),
        "url": pick(good_urls, any_urls),
        "method": pick(good_methods, any_methods),
    }
    if draw(st.booleans()):
        t["payload"] = pick(good_payloads, any_payloads)
    if draw(st.booleans()):
        t["headers"] = pick(good_headers, any_headers)
    if draw(st.booleans()):
        t["timezone"] = pick(good_timezones, any_timezones)
    if draw(st.integers(0, 2)) == 0:
        t["enabled"] = pick(st.booleans(), st.sampled_from(["yes", 0, None]))
    if draw(st.integers(0, 19)) == 0:
        t["header"] = {"X": "typo"}  # unknown field
    if draw(st.integers(0, 19)) == 0:
        del t[draw(st.sampled_from(["cron", "url", "method"]))]
    return t


@pytest.fixture
def prop_client(redis_url: str, conn: Redis) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(redis_url, allow_private_targets=False))) as c:
        yield c


@pytest.mark.slow
@given(triggers=st.lists(trigger_dicts(), max_size=3))
@hsettings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_accepted_triggers_can_be_scheduled_and_rejected_ones_change_nothing(
    triggers: list[dict[str, Any]], prop_client: TestClient, conn: Redis, redis_url: str
) -> None:
    conn.flushall()
    ws = "prop"
    prop_client.post(
        f"/api/workspaces/{ws}/triggers",
        json={"triggers": [{"cron": "0 0 1 1 *", "url": "https://example.com/keep", "method": "GET"}]},
    )
    before = workspace_state(conn, ws)
    r = prop_client.post(f"/api/workspaces/{ws}/triggers", json={"triggers": triggers})
    assert r.status_code in (200, 400), r.text

    if r.status_code == 400:
        body = r.json()
        assert body["success"] is False and body["details"]
        assert all(d["path"] and d["message"] for d in body["details"])
        assert workspace_state(conn, ws) == before
        return

    listed = prop_client.get(f"/api/workspaces/{ws}/triggers").json()
    assert listed["count"] == len(triggers)
    assert conn.zcard(keys.SCHEDULE) == len(triggers)
    now = 1_800_000_000.0
    next_runs = []
    for t, job in zip(triggers, listed["jobs"], strict=True):
        parsed = cron.parse(t["cron"], t.get("timezone") or "UTC")
        nxt = parsed.next_after(now)
        assert nxt > now
        assert parsed.last_at_or_before(nxt) == nxt
        assert job["next_run_at"] is not None
        next_runs.append(conn.zscore(keys.SCHEDULE, job["jobId"]))
    if not triggers:
        return
    # A tick once every trigger is due plans each of them: the enabled ones fire, none is lost.
    settings = make_settings(redis_url, misfire_grace_seconds=1e10)
    result = ticking.tick(conn, Queue(settings.queue_name, connection=conn), settings, now=max(next_runs) + 0.5)
    assert result.fired == sum(1 for t in triggers if t.get("enabled", True))
    assert result.missed == 0
    for job in listed["jobs"]:
        assert conn.zscore(keys.SCHEDULE, job["jobId"]) > max(next_runs)  # advanced past the tick


def test_property_strategies_reach_both_outcomes(prop_client: TestClient, conn: Redis) -> None:
    """The strategies above are not all-invalid: a sample contains accepted and refused lists."""
    seen: set[int] = set()

    @given(triggers=st.lists(trigger_dicts(), min_size=1, max_size=1))
    @hsettings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def probe(triggers: list[dict[str, Any]]) -> None:
        seen.add(prop_client.post("/api/workspaces/probe/triggers", json={"triggers": triggers}).status_code)

    probe()
    assert seen == {200, 400}, seen


url_hosts = st.text(
    alphabet=st.one_of(
        st.sampled_from(string.ascii_letters + string.digits + "-._~%!$&'()*+,;=[]:@"),
        st.characters(min_codepoint=0x80, max_codepoint=0x30000),
    ),
    min_size=1,
    max_size=15,
)


@given(host=url_hosts, path=st.text(max_size=10), scheme=st.sampled_from(["http", "https", "HTTP"]))
@hsettings(max_examples=400, deadline=None, database=None)
def test_every_url_the_api_accepts_is_one_the_worker_can_send(host: str, path: str, scheme: str) -> None:
    """The worker parses urls with httpx, whose host rules (IDNA) are stricter than urllib's:
    validation must not let through an url that would then fail at every firing."""
    from scheduler_api.delivery.http import aiohttp_url
    from scheduler_api.triggers import url_problem

    url = f"{scheme}://{host}/{path}"
    if url_problem(url) is None:
        parsed = httpx.URL(url)
        parsed.raw_host.decode("ascii")
        aiohttp_url(str(parsed))
