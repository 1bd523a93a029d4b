"""`scheduler_api.triggers`: the validation of one trigger and of a workspace id (no Redis)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from scheduler_api.triggers import MAX_URL_LENGTH, ReplaceTriggers, Trigger, check_workspace_id

VALID: dict[str, Any] = {"cron": "0 9 * * 1-5", "url": "https://api.example.com/report", "method": "GET"}


def trigger(**changes: Any) -> dict[str, Any]:
    return {**VALID, **changes}


def errors_of(data: dict[str, Any]) -> list[dict[str, Any]]:
    with pytest.raises(ValidationError) as info:
        Trigger.model_validate(data)
    return info.value.errors()


def only_error(data: dict[str, Any]) -> tuple[tuple[int | str, ...], str]:
    errs = errors_of(data)
    assert len(errs) == 1, errs
    return tuple(errs[0]["loc"]), errs[0]["msg"]


def test_minimal_trigger_and_defaults() -> None:
    t = Trigger.model_validate(VALID)
    assert (t.cron, t.url, t.method, t.payload, t.headers) == (VALID["cron"], VALID["url"], "GET", None, None)


def test_full_trigger_from_the_readme() -> None:
    t = Trigger.model_validate(
        {
            "cron": "0 */2 * * *",
            "url": "https://api.example.com/webhook",
            "method": "POST",
            "payload": {"event": "scheduled_task", "data": {}},
            "headers": {"Authorization": "Bearer YOUR_TOKEN", "Content-Type": "application/json"},
        }
    )
    assert t.payload == {"event": "scheduled_task", "data": {}}
    assert t.headers == {"Authorization": "Bearer YOUR_TOKEN", "Content-Type": "application/json"}


@pytest.mark.parametrize("cron", ["*/15 * * * *", "*/10 * * * * *", "@hourly", "@daily", "0 0 L * *"])
def test_cron_accepted(cron: str) -> None:
    assert Trigger.model_validate(trigger(cron=cron)).cron == cron


@pytest.mark.parametrize(
    ("cron", "fragment"),
    [
        ("0 0 1 1 * 2030 1", "5 fields"),
        ("H * * * *", "hashed or random"),
        ("R * * * *", "hashed or random"),
        ("0 0 31 2 *", "never matches"),
        ("not a cron", "5 fields"),
        ("", "empty"),
        (5, "valid string"),
        (["*", "*", "*", "*", "*"], "valid string"),
    ],
)
def test_cron_rejected(cron: Any, fragment: str) -> None:
    loc, msg = only_error(trigger(cron=cron))
    assert loc == ("cron",)
    assert fragment in msg


def test_cron_or_at_exactly_one() -> None:
    for fields in ({"cron": None}, {"at": "2030-01-01T00:00:00Z"}):
        loc, msg = only_error(trigger(**fields))
        assert loc == ()
        assert "exactly one of cron and at" in msg
    assert Trigger.model_validate({**trigger(cron=None), "at": "2030-01-01T00:00:00+01:00"}).at is not None


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com",
        "https://example.com/path?q=1#frag",
        "HTTPS://EXAMPLE.COM/",
        "http://127.0.0.1:8080/hook",
        "http://[::1]:8080/hook",
        "https://user:pw@example.com/x",
        "https://b\u00fccher.example/",  # an internationalised host is sent in its IDNA form
        "https://xn--bcher-kva.example/",
        "https://example.com/" + "a" * (MAX_URL_LENGTH - len("https://example.com/")),
    ],
)
def test_url_accepted(url: str) -> None:
    assert Trigger.model_validate(trigger(url=url)).url == url


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("ftp://example.com/file", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("javascript:alert(1)", "http:// or https://"),
        ("/relative/path", "http:// or https://"),
        ("example.com/path", "http:// or https://"),
        ("http://", "must have a host"),
        ("https:///path", "must have a host"),
        ("http://:8080/x", "must have a host"),
        ("http://exa mple.com/", "spaces or control characters"),
        ("http://example.com/a b", "spaces or control characters"),
        (" http://example.com/", "spaces or control characters"),
        ("http://example.com/\n", "spaces or control characters"),
        ("http://example.com/\x00", "spaces or control characters"),
        ("http://example.com/\t", "spaces or control characters"),
        ("http://example.com/\x7f", "spaces or control characters"),
        ("http://example.com:99999/", "not a valid URL"),
        ("http://example.com:0/", "port"),
        # Valid for urllib but not sendable by the worker's HTTP client (IDNA rules on the host).
        ("http://a\u200b.com/", "not a valid URL"),
        ("http://\uff21.com/", "not a valid URL"),
        ("https://example.com/" + "a" * (MAX_URL_LENGTH - len("https://example.com/") + 1), "at most 2048"),
        ("", "http:// or https://"),
        (42, "valid string"),
    ],
)
def test_url_rejected(url: Any, fragment: str) -> None:
    loc, msg = only_error(trigger(url=url))
    assert loc == ("url",)
    assert fragment in msg


@pytest.mark.parametrize(
    ("method", "stored"),
    [("GET", "GET"), ("post", "POST"), ("Put", "PUT"), ("pAtCh", "PATCH"), ("delete", "DELETE")],
)
def test_method_any_case_is_upper_cased(method: str, stored: str) -> None:
    assert Trigger.model_validate(trigger(method=method)).method == stored


@pytest.mark.parametrize("method", ["HEAD", "OPTIONS", "CONNECT", "TRACE", "", "GETT", " GET", 1, None, ["GET"]])
def test_method_rejected(method: Any) -> None:
    loc, _ = only_error(trigger(method=method))
    assert loc == ("method",)


def test_method_required() -> None:
    data = dict(VALID)
    del data["method"]
    loc, msg = only_error(data)
    assert loc == ("method",)
    assert "required" in msg.lower()


@pytest.mark.parametrize("payload", [None, {}, {"a": 1, "nested": {"list": [1, 2, None]}}])
def test_payload_object_or_null(payload: Any) -> None:
    assert Trigger.model_validate(trigger(method="POST", payload=payload)).payload == payload


@pytest.mark.parametrize("payload", [[1, 2], "text", 12, 1.5, True])
def test_payload_rejected(payload: Any) -> None:
    loc, _ = only_error(trigger(method="POST", payload=payload))
    assert loc == ("payload",)


@pytest.mark.parametrize(
    "headers",
    [None, {}, {"Authorization": "Bearer x"}, {"X-Api-Key": "k", "x_custom.thing~": "v"}, {"X-Empty": ""}],
)
def test_headers_accepted(headers: Any) -> None:
    assert Trigger.model_validate(trigger(headers=headers)).headers == headers


@pytest.mark.parametrize(
    ("headers", "loc"),
    [
        ({"X-Number": 1}, ("headers", "X-Number")),
        ({"X-Null": None}, ("headers", "X-Null")),
        ({"X-List": ["a"]}, ("headers", "X-List")),
        ({"Bad Name": "v"}, ("headers",)),
        ({"Bad:Name": "v"}, ("headers",)),
        ({"": "v"}, ("headers",)),
        ({"Näme": "v"}, ("headers",)),
        ({"X-Injected": "a\r\nSet-Cookie: x"}, ("headers",)),
        ({"X-Lf": "a\nb"}, ("headers",)),
        ({"X-Cr": "a\rb"}, ("headers",)),
        ({"X-Nul": "a\x00b"}, ("headers",)),
        (["Authorization", "x"], ("headers",)),
        ("Authorization: x", ("headers",)),
    ],
)
def test_headers_rejected(headers: Any, loc: tuple[str, ...]) -> None:
    assert only_error(trigger(headers=headers))[0] == loc


def test_header_value_is_not_in_the_error() -> None:
    secret = "s3cr3t-token-value"
    errs = errors_of(trigger(headers={"Authorization": f"Bearer {secret}\r\nX: y"}))
    assert secret not in str([e["msg"] for e in errs])


@pytest.mark.parametrize("field", ["header", "Cron", "body", "extra"])
def test_unknown_fields_rejected(field: str) -> None:
    loc, msg = only_error(trigger(**{field: {"a": "b"}}))
    assert loc == (field,)
    assert "Extra inputs" in msg


def test_required_fields() -> None:
    locs = {tuple(e["loc"]) for e in errors_of({})}
    assert locs == {("url",), ("method",)}  # and exactly one of cron and at, checked once these are valid


def test_replace_body() -> None:
    body = ReplaceTriggers.model_validate({"triggers": [VALID, trigger(method="post")]})
    assert [t.method for t in body.triggers] == ["GET", "POST"]
    assert ReplaceTriggers.model_validate({"triggers": []}).triggers == []
    with pytest.raises(ValidationError):
        ReplaceTriggers.model_validate({"triggers": [VALID], "workspace": "x"})
    with pytest.raises(ValidationError):
        ReplaceTriggers.model_validate({})
    with pytest.raises(ValidationError) as info:
        ReplaceTriggers.model_validate({"triggers": [VALID, VALID, trigger(url="ftp://x")]})
    assert [tuple(e["loc"]) for e in info.value.errors()] == [("triggers", 2, "url")]


@pytest.mark.parametrize("workspace_id", ["a", "workspace-123", "A.b_c-9", "x" * 128, "..", "-"])
def test_workspace_id_accepted(workspace_id: str) -> None:
    assert check_workspace_id(workspace_id) is None


@pytest.mark.parametrize("workspace_id", ["", "x" * 129, "a:b", "a b", "a/b", "a\nb", "é", "a*", "a%20b", "ws\n"])
def test_workspace_id_rejected(workspace_id: str) -> None:
    problem = check_workspace_id(workspace_id)
    assert problem is not None and "1-128 characters" in problem
