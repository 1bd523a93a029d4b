"""`scheduler-api apply` and `get` against a real `scheduler-api serve` (API keys on): the plan, applying
it, drift, ${VAR} header values (delivered, never printed), a stale ETag, and `get` round trips."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from redis import Redis

from scheduler_api.apply import ApplyError, apply_plan, load_file, plan, run_apply, substitute
from scheduler_api.embedded_redis import free_port
from tests.support.processes import Child, Procs, clean_env, start_scheduler, start_worker
from tests.support.receiver import Receiver, headers_of

KEY = "apply-test-key-0123456789"
TOKEN = "s3cr3t-token-value-42"  # never printed
OLD_TOKEN = "old-token-value-17"


class Api:
    """A `scheduler-api serve` child with API_KEYS, and the CLI run against it."""

    def __init__(self, url: str, tmp_path: Path) -> None:
        self.url = url
        self.tmp_path = tmp_path
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=10)

    def cli(self, *args: str, key: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
        """`scheduler-api <args>` with the API's url in SCHEDULER_API_URL and `--key` unless `key=False`."""
        argv = [sys.executable, "-m", "scheduler_api.cli", *args, *(["--key", KEY] if key else [])]
        environ = clean_env(SCHEDULER_API_URL=self.url, **env)
        return subprocess.run(argv, env=environ, cwd=self.tmp_path, capture_output=True, text=True, timeout=60)

    def write(self, name: str, doc: Any) -> str:
        path = self.tmp_path / name
        path.write_text(json.dumps(doc) if name.endswith(".json") else yaml.safe_dump(doc, sort_keys=False))
        return str(path)

    def replace(self, workspace: str, triggers: list[dict[str, Any]]) -> None:
        self.http.post(f"/api/workspaces/{workspace}/triggers", json={"triggers": triggers}).raise_for_status()

    def jobs(self, workspace: str) -> list[dict[str, Any]]:
        r = self.http.get(f"/api/workspaces/{workspace}/triggers")
        r.raise_for_status()
        jobs: list[dict[str, Any]] = r.json()["jobs"]
        return jobs


@pytest.fixture
def api(tmp_path: Path, redis_url: str, conn: Redis, spawned: list[Child]) -> Iterator[Api]:
    port = free_port()
    env = clean_env(ALLOW_PRIVATE_TARGETS="true", PORT=str(port), HOST="127.0.0.1", REDIS_URL=redis_url, API_KEYS=KEY)
    server = Child([sys.executable, "-m", "scheduler_api.cli", "serve"], env=env, cwd=tmp_path, log=tmp_path / "serve")
    spawned.append(server)
    server.wait_http(f"http://127.0.0.1:{port}/health", timeout=20)
    a = Api(f"http://127.0.0.1:{port}", tmp_path)
    yield a
    a.http.close()


def trigger(id: str, cron: str, **more: Any) -> dict[str, Any]:
    return {"id": id, "cron": cron, "url": f"https://example.com/{id}", "method": "POST", **more}


BEFORE = [
    trigger("keep", "0 * * * *"),
    trigger("edit", "0 9 * * *", headers={"X-Token": OLD_TOKEN}),
    trigger("gone", "*/5 * * * *"),
]
AFTER = [
    trigger("keep", "0 * * * *"),
    trigger("edit", "30 9 * * *", headers={"X-Token": "${TOKEN}"}),
    trigger("leap", "0 0 29 2 *"),  # once every four years: a `rare` warning
]


def test_plan_apply_then_nothing_to_do(api: Api) -> None:
    api.replace("plan", BEFORE)
    path = api.write("triggers.yaml", {"triggers": AFTER})

    dry = api.cli("apply", path, "--workspace", "plan", "--dry-run", TOKEN=TOKEN)
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert lines[:3] == ["+ leap", "~ edit: cron, headers.X-Token", "- gone"], dry.stdout
    assert lines[3].startswith("warning: triggers[2] (leap): ") and lines[3].endswith("[rare]"), dry.stdout
    assert lines[4:] == [
        "Plan for workspace 'plan': 1 to add, 1 to change, 1 to remove, 1 unchanged.",
        "Dry run: nothing applied.",
    ]
    assert [j["id"] for j in api.jobs("plan")] == ["keep", "edit", "gone"]  # nothing applied

    applied = api.cli("apply", path, "--workspace", "plan", TOKEN=TOKEN)
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.splitlines()[:3] == lines[:3]
    assert applied.stdout.splitlines()[-1] == "Applied: 1 added, 1 changed, 1 removed."
    assert [(j["id"], j["cron"]) for j in api.jobs("plan")] == [
        ("keep", "0 * * * *"),
        ("edit", "30 9 * * *"),
        ("leap", "0 0 29 2 *"),
    ]

    again = api.cli("apply", path, "--workspace", "plan", TOKEN=TOKEN)
    assert again.returncode == 0, again.stderr
    assert "0 to add, 0 to change, 0 to remove, 3 unchanged." in again.stdout  # the warning is shown again
    assert again.stdout.splitlines()[-1] == f"No changes: workspace 'plan' already matches {path}."
    for out in (dry, applied, again):
        assert TOKEN not in out.stdout + out.stderr and OLD_TOKEN not in out.stdout + out.stderr


def test_drift_exit_code(api: Api) -> None:
    path = api.write("triggers.json", {"triggers": [trigger("a", "0 * * * *"), trigger("b", "0 0 * * *")]})
    assert api.cli("apply", path, "--workspace", "ci").returncode == 0
    same = api.cli("apply", path, "--workspace", "ci", "--dry-run", "--exit-code")
    assert (same.returncode, same.stdout.splitlines()) == (0, [f"No changes: workspace 'ci' already matches {path}."])

    # Changed behind its back: a url edited, a trigger added.
    api.http.patch(
        "/api/workspaces/ci/triggers/a",
        content=json.dumps({"url": "https://example.com/moved"}),
        headers={"Content-Type": "application/merge-patch+json"},
    ).raise_for_status()
    api.http.put("/api/workspaces/ci/triggers/extra", json=trigger("extra", "0 1 * * *")).raise_for_status()
    drift = api.cli("apply", path, "--workspace", "ci", "--dry-run", "--exit-code")
    assert drift.returncode == 2, drift.stderr
    assert drift.stdout.splitlines() == [
        "~ a: url",
        "- extra",
        "Plan for workspace 'ci': 0 to add, 1 to change, 1 to remove, 1 unchanged.",
        "Dry run: nothing applied.",
    ]
    assert api.cli("apply", path, "--workspace", "ci", "--dry-run").returncode == 0  # no --exit-code: 0
    assert api.cli("apply", path, "--workspace", "ci").returncode == 0
    assert api.cli("apply", path, "--workspace", "ci", "--dry-run", "--exit-code").returncode == 0


def test_env_header_value_is_delivered_and_never_printed(
    api: Api, conn: Redis, procs: Procs, receiver: Receiver
) -> None:
    doc = {
        "triggers": [
            {
                "id": "hook",
                "cron": "0 0 * * *",
                "url": f"{receiver.url}/hook",
                "method": "POST",
                "headers": {"Authorization": "Bearer ${TOKEN}", "X-Literal": "$${NOT_A_VAR}"},
            }
        ]
    }
    path = api.write("env.yaml", doc)
    out = api.cli("apply", path, "--workspace", "env", TOKEN=TOKEN)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "+ hook"
    assert api.jobs("env")[0]["header_names"] == ["Authorization", "X-Literal"]

    start_scheduler(procs, conn)
    start_worker(procs, conn)
    api.http.post("/api/workspaces/env/triggers/hook/run").raise_for_status()
    got = receiver.wait_for(lambda rs: any(r.path == "/hook" for r in rs), 20)
    sent = headers_of(next(r for r in got if r.path == "/hook"))
    assert sent["authorization"] == f"Bearer {TOKEN}" and sent["x-literal"] == "${NOT_A_VAR}"

    changed = api.cli("apply", path, "--workspace", "env", "--dry-run", TOKEN="another-token-value")
    assert changed.stdout.splitlines()[0] == "~ hook: headers.Authorization"
    for run in (out, changed):
        assert TOKEN not in run.stdout + run.stderr and "another-token-value" not in run.stdout + run.stderr


def test_missing_variable_is_named_and_nothing_is_sent(api: Api) -> None:
    path = api.write("t.yaml", {"triggers": [trigger("a", "0 * * * *", headers={"X-Key": "${MISSING_KEY}"})]})
    out = api.cli("apply", path, "--workspace", "miss")
    assert out.returncode == 1
    assert out.stderr.strip() == "scheduler-api: triggers[0].headers.X-Key: environment variable MISSING_KEY is not set"
    assert api.jobs("miss") == []


def test_api_errors_are_printed_and_values_masked(api: Api) -> None:
    bad = api.write("bad.yaml", {"triggers": [trigger("a", "61 * * * *", headers={"X-Key": TOKEN})]})
    out = api.cli("apply", bad, "--workspace", "bad")
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.startswith("scheduler-api: the API answered 400: Invalid request\n  triggers[0].cron: ")
    good = api.write("good.yaml", {"triggers": [trigger("a", "0 * * * *")]})
    unauthorized = api.cli("apply", good, "--workspace", "bad", key=False)
    assert unauthorized.returncode == 1
    assert unauthorized.stderr.splitlines() == [
        "scheduler-api: the API answered 401: Unauthorized",
        "  headers.authorization: send Authorization: Bearer <api key>",
        "  (send a key with --key or SCHEDULER_API_KEY)",
    ]
    refused = api.cli("apply", good, "--workspace", "bad", "--api", f"http://127.0.0.1:{free_port()}")
    assert refused.returncode == 1 and "cannot connect to the API at http://127.0.0.1:" in refused.stderr
    assert "Connection refused" in refused.stderr


def test_stale_etag_between_plan_and_apply(api: Api) -> None:
    api.replace("stale", [trigger("a", "0 * * * *")])
    triggers = [trigger("a", "0 * * * *"), trigger("b", "0 1 * * *")]
    with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {KEY}"}) as client:
        p = plan(client, "stale", triggers)
        assert (p.added, p.unchanged) == (["b"], ["a"])
        api.http.put("/api/workspaces/stale/triggers/c", json=trigger("c", "0 2 * * *")).raise_for_status()
        with pytest.raises(ApplyError) as caught:
            apply_plan(client, p)
    assert caught.value.status == 412
    assert str(caught.value).startswith("workspace 'stale' changed after the plan was made; nothing was applied.")
    assert [j["id"] for j in api.jobs("stale")] == ["a", "c"]

    # The whole command, the change landing while it prints the plan: exit 1, the message, nothing applied.
    def meanwhile(response: httpx.Response) -> None:
        if response.request.url.params.get("dry_run") == "true":
            api.http.delete("/api/workspaces/stale/triggers/c").raise_for_status()

    path = api.write("stale.yaml", {"triggers": triggers})
    out, err = io.StringIO(), io.StringIO()
    hooks = {"response": [meanwhile]}
    with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {KEY}"}, event_hooks=hooks) as client:
        assert run_apply(client, path, "stale", out=out, err=err) == 1
    assert out.getvalue().splitlines()[:2] == ["+ b", "- c"]
    assert err.getvalue().splitlines()[:2] == [
        "scheduler-api: workspace 'stale' changed after the plan was made; nothing was applied. "
        "Run apply again to plan against its current state.",
        "the API answered 412: Precondition failed",
    ]
    assert [j["id"] for j in api.jobs("stale")] == ["a"]


ROUND = [
    {"id": "plain", "cron": "*/15 * * * *", "url": "https://example.com/a", "method": "GET"},
    {
        "id": "full",
        "cron": "@daily",
        "url": "https://example.com/b",
        "method": "DELETE",
        "timezone": "Europe/Paris",
        "enabled": False,
        "headers": {"Authorization": "${TOKEN}", "X-Other": "${TOKEN}"},
    },
]


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_get_round_trips(api: Api, fmt: str) -> None:
    assert api.cli("apply", api.write("in.yaml", {"triggers": ROUND}), "--workspace", "rt", TOKEN=TOKEN).returncode == 0
    got = api.cli("get", "rt", "-o", fmt)
    assert got.returncode == 0, got.stderr
    assert TOKEN not in got.stdout
    doc = yaml.safe_load(got.stdout) if fmt == "yaml" else json.loads(got.stdout)
    secret = {"Authorization": "<secret>", "X-Other": "<secret>"}
    assert doc == {"triggers": [ROUND[0], {**ROUND[1], "headers": secret}]}
    if fmt == "yaml":
        assert got.stdout.startswith("# scheduler-api get rt: header values are written <secret>")

    # Fed back unedited: refused, naming the placeholders; edited (secrets put back): nothing to do.
    raw = api.tmp_path / f"got.{fmt}"
    raw.write_text(got.stdout)
    refused = api.cli("apply", str(raw), "--workspace", "rt")
    assert refused.returncode == 1
    assert "triggers[1].headers.Authorization is the placeholder <secret> that `get` writes" in refused.stderr
    raw.write_text(got.stdout.replace("<secret>", "${TOKEN}"))
    again = api.cli("apply", str(raw), "--workspace", "rt", TOKEN=TOKEN)
    assert (again.returncode, again.stdout.splitlines()) == (0, [f"No changes: workspace 'rt' already matches {raw}."])


def test_get_round_trips_a_payload(api: Api) -> None:
    t = trigger("p", "0 * * * *", payload={"report": "daily", "n": [1, 2.5, None, True]})
    api.replace("pay", [t])
    got = api.cli("get", "pay")
    assert got.returncode == 0, got.stderr
    assert yaml.safe_load(got.stdout) == {"triggers": [t]}


def test_file_rules(tmp_path: Path) -> None:
    """Reading and substituting, without the API."""
    path = tmp_path / "t.json"
    path.write_text('{"triggers": [{"cron": "0 * * * *", "headers": {"A": "x${V}y", "B": "${V}${W}"}}]}')
    assert substitute(load_file(str(path)), {"V": "1", "W": "2"})[0]["headers"] == {"A": "x1y", "B": "12"}
    with pytest.raises(ApplyError, match=r"environment variable W is not set"):
        substitute(load_file(str(path)), {"V": "1"})
    for text, message in [
        ("[]", 'must hold one key, "triggers"'),
        ("triggers: [1]", r"triggers\[0\] must be a mapping"),
        ("triggers: [{cron: *", "is not valid YAML"),
        ("{triggers: [], extra: 1}", 'must hold one key, "triggers"'),
    ]:
        (tmp_path / "t.yaml").write_text(text)
        with pytest.raises(ApplyError, match=message):
            load_file(str(tmp_path / "t.yaml"))
    (tmp_path / "t.yaml").write_text(f"triggers:\n- headers: {{A: {TOKEN}: x}}\n")  # a YAML error quoting the line
    with pytest.raises(ApplyError, match=r"is not valid YAML: .* at line 2, column \d+$") as caught:
        load_file(str(tmp_path / "t.yaml"))
    assert TOKEN not in str(caught.value)
    with pytest.raises(ApplyError, match=r"\$\{1X\} is not a variable name"):
        substitute([{"headers": {"A": "${1X}"}}], {})
