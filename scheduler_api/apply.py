"""`scheduler-api apply` and `get`: a workspace's triggers as a file, planned and applied over the HTTP API.

The file is YAML or JSON (``.json``: JSON; anything else, ``-`` for stdin: YAML), ``{"triggers": [...]}``
with the triggers exactly as ``POST /api/workspaces/{ws}/triggers`` takes them (a time YAML reads as a
date, such as an unquoted ``at``, is sent as the ISO 8601 text it was). Header values may
say ``${NAME}``, replaced with the environment variable NAME (only in header values; ``$${`` writes
a literal ``${``). `apply` plans with ``?dry_run=true``, prints the plan, then sends the same list
with ``If-Match`` set to the ETag the plan was made against. `get` writes the file back: ids
included, fields at their defaults left out (the delivery policy's too), one-offs with their ``at``
and no ``cron``, header values as the `SECRET` placeholder.

Failure rules: every failure is an `ApplyError` whose message is what the CLI prints (exit 1), and
nothing is applied: a file that cannot be read or is not ``{"triggers": [list]}``; a ``${NAME}``
whose variable is not set (named); a header value still the `SECRET` placeholder (so `get` output
never overwrites a real secret); the API unreachable; any HTTP error (its ``error`` and ``details``
printed). A stale ETag (412) says the workspace changed after the plan. Only a timeout while the
change itself is sent leaves it unknown, and the message says so. A plan without added, removed or
changed triggers is "no changes" and sends nothing (an order change alone is not applied).

Header values are never printed: the plan names headers only, and every header value of the file
(4 characters or longer) is replaced with ``***`` in anything printed, the API's messages included.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

import httpx
import yaml  # type: ignore[import-untyped]  # PyYAML ships no type hints

from scheduler_api.policy import POLICY_FIELDS

SECRET = "<secret>"  # what `get` writes for a header value; `apply` refuses it
DEFAULT_API = "http://127.0.0.1:3000"
MASK = "***"
_MIN_MASKED = 4  # shorter header values are not searched for in output (they would mangle words)
_VAR = re.compile(r"\$(\$?)\{([^}]*)\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DEFAULTS: dict[str, Any] = {"timezone": "UTC", "enabled": True, "payload": None, "headers": {}}
_FIELDS = ("id", "cron", "at", "url", "method", "timezone", "enabled", "headers", "payload")


class ApplyError(Exception):
    """A file, the environment or the API refused: the message is for the user. `status`: the API's
    HTTP status, when it answered with an error."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Plan:
    """What applying the file would do to the workspace (the API's dry-run diff), and the ETag it was planned on."""

    workspace: str
    etag: str
    triggers: list[dict[str, Any]]  # the file's triggers, variables substituted: what gets sent
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[dict[str, Any]] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    warnings: list[dict[str, str]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)


def open_client(api: str | None, key: str | None) -> httpx.Client:
    """A client for the API at `api` (default `$SCHEDULER_API_URL`, else `DEFAULT_API`) sending `key`
    (default `$SCHEDULER_API_KEY`) as ``Authorization: Bearer``."""
    key = key or os.environ.get("SCHEDULER_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=api or os.environ.get("SCHEDULER_API_URL") or DEFAULT_API, headers=headers, timeout=30)


def load_file(path: str) -> list[dict[str, Any]]:
    """The triggers of the file at `path` (``-``: stdin), as written (no substitution)."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ApplyError(f"cannot read {path}: {e}") from e
    try:
        doc = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except ValueError as e:  # its message quotes no text of the file
        raise ApplyError(f"{path} is not valid JSON: {e}") from e
    except yaml.YAMLError as e:  # its str() quotes the line, which may hold a header value: not printed
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ApplyError(f"{path} is not valid YAML: {getattr(e, 'problem', None) or 'cannot parse'}{where}") from e
    if not isinstance(doc, dict) or set(doc) != {"triggers"} or not isinstance(doc["triggers"], list):
        raise ApplyError(f'{path} must hold one key, "triggers", a list of triggers')
    for i, t in enumerate(doc["triggers"]):
        if not isinstance(t, dict):
            raise ApplyError(f"{path}: triggers[{i}] must be a mapping of the trigger's fields")
    return [_times_as_text(t) for t in doc["triggers"]]


def _times_as_text(trigger: dict[str, Any]) -> dict[str, Any]:
    """YAML reads an unquoted ``at: 2027-01-01T09:00:00Z`` as a date: sent as the ISO 8601 text it was
    (a date or a time without an offset is then refused by the API, as it would be in JSON)."""
    return {k: v.isoformat() if isinstance(v, date | datetime) else v for k, v in trigger.items()}


def substitute(triggers: list[dict[str, Any]], environ: Mapping[str, str]) -> list[dict[str, Any]]:
    """The triggers with each ``${NAME}`` in a header value replaced by ``environ[NAME]``.

    Raises `ApplyError` naming every variable not set (and where), or a header still `SECRET`."""
    problems: list[str] = []
    out = []
    for i, t in enumerate(triggers):
        if isinstance(t.get("headers"), dict):
            at = f"triggers[{i}].headers"
            t = {**t, "headers": {k: _expand(v, f"{at}.{k}", environ, problems) for k, v in t["headers"].items()}}
        out.append(t)
    if problems:
        raise ApplyError("\n".join(problems))
    return out


def _expand(value: Any, at: str, environ: Mapping[str, str], problems: list[str]) -> Any:
    """`value` with its variables replaced; what is wrong with it appended to `problems`."""
    if value == SECRET:
        problems.append(f"{at} is the placeholder {SECRET} that `get` writes: put the value or ${{VAR}} there")
    if not isinstance(value, str):
        return value  # the API says what is wrong with it

    def one(m: re.Match[str]) -> str:
        escaped, name = m.groups()
        if escaped:  # $${...}: a literal ${...}
            return "${" + name + "}"
        if not _NAME.fullmatch(name):
            problems.append(f"{at}: ${{{name}}} is not a variable name")
        elif name not in environ:
            problems.append(f"{at}: environment variable {name} is not set")
        return environ.get(name, "")

    return _VAR.sub(one, value)


def secrets_of(triggers: list[dict[str, Any]]) -> list[str]:
    """Every header value of `triggers`, longest first (for `mask`)."""
    values = {v for t in triggers if isinstance(t.get("headers"), dict) for v in t["headers"].values()}
    return sorted((v for v in values if isinstance(v, str) and len(v) >= _MIN_MASKED), key=len, reverse=True)


def mask(text: str, secrets: list[str]) -> str:
    for value in secrets:
        text = text.replace(value, MASK)
    return text


def _path(workspace: str) -> str:
    return f"/api/workspaces/{quote(workspace, safe='')}/triggers"


def _send(client: httpx.Client, method: str, url: str, *, writes: bool = False, **kw: Any) -> httpx.Response:
    """The response, if 2xx; else `ApplyError` with the API's error and details, or what failed on the way."""
    try:
        r = client.request(method, url, **kw)
    except httpx.ConnectError as e:
        raise ApplyError(f"cannot connect to the API at {client.base_url} ({e}); --api or SCHEDULER_API_URL") from e
    except httpx.TransportError as e:
        unknown = "; the change may or may not have been applied: run apply --dry-run" if writes else ""
        raise ApplyError(f"no answer from the API at {client.base_url} ({type(e).__name__}: {e}){unknown}") from e
    if r.is_success:
        return r
    try:
        body = r.json()
        lines = [f"the API answered {r.status_code}: {body['error']}"]
        lines += [f"  {d.get('path', '')}: {d.get('message', '')}" for d in body.get("details") or []]
    except (ValueError, KeyError, TypeError, AttributeError):
        lines = [f"the API answered {r.status_code}: {r.text[:300]}"]
    if r.status_code == 401:
        lines.append("  (send a key with --key or SCHEDULER_API_KEY)")
    raise ApplyError("\n".join(lines), status=r.status_code)


def plan(client: httpx.Client, workspace: str, triggers: list[dict[str, Any]]) -> Plan:
    """The API's dry run of replacing the workspace's triggers with `triggers` (substituted)."""
    r = _send(client, "POST", _path(workspace), params={"dry_run": "true"}, json={"triggers": triggers})
    etag, body = r.headers.get("ETag"), r.json()
    if not etag:
        raise ApplyError("the API's dry run carried no ETag: cannot apply without overwriting concurrent changes")
    diff = {k: body["diff"][k] for k in ("added", "removed", "changed", "unchanged")}
    return Plan(workspace, etag, triggers, **diff, warnings=body.get("warnings") or [])


def apply_plan(client: httpx.Client, p: Plan) -> None:
    """Send the plan's triggers if the workspace is still at the plan's ETag; else `ApplyError` (412)."""
    try:
        _send(
            client, "POST", _path(p.workspace), json={"triggers": p.triggers}, headers={"If-Match": p.etag}, writes=True
        )
    except ApplyError as e:
        if e.status == 412:
            raise ApplyError(
                f"workspace {p.workspace!r} changed after the plan was made; nothing was applied. "
                f"Run apply again to plan against its current state.\n{e}",
                status=412,
            ) from e
        raise


def render(p: Plan) -> str:
    """The plan as `terraform plan` shows one: ``+ id``, ``~ id: fields``, ``- id``, warnings, a summary."""
    ids = [t.get("id") if t.get("id") is not None else str(i) for i, t in enumerate(p.triggers)]
    lines = [f"+ {i}" for i in p.added]
    lines += [f"~ {c['id']}: {', '.join(c['fields'])}" for c in p.changed]
    lines += [f"- {i}" for i in p.removed]
    for w in p.warnings:
        where = w.get("path", "")
        m = re.fullmatch(r"triggers\[(\d+)\].*", where)
        if m and int(m.group(1)) < len(ids):
            where += f" ({ids[int(m.group(1))]})"
        lines.append(f"warning: {where}: {w.get('message', '')} [{w.get('code', '')}]")
    counts = f"{len(p.added)} to add, {len(p.changed)} to change, {len(p.removed)} to remove"
    lines.append(f"Plan for workspace {p.workspace!r}: {counts}, {len(p.unchanged)} unchanged.")
    return "\n".join(lines)


def run_apply(
    client: httpx.Client,
    path: str,
    workspace: str,
    *,
    dry_run: bool = False,
    exit_code: bool = False,
    environ: Mapping[str, str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """`scheduler-api apply`: 0 applied or nothing to do, 1 an `ApplyError` (printed to `err`),
    2 the plan has changes under `dry_run` and `exit_code` (drift)."""
    out, err = out or sys.stdout, err or sys.stderr
    secrets: list[str] = []
    try:
        triggers = substitute(load_file(path), os.environ if environ is None else environ)
        secrets = secrets_of(triggers)
        p = plan(client, workspace, triggers)
        if not p.empty or p.warnings:
            print(mask(render(p), secrets), file=out)
        if p.empty:
            print(f"No changes: workspace {workspace!r} already matches {path}.", file=out)
            return 0
        if dry_run:
            print("Dry run: nothing applied.", file=out)
            return 2 if exit_code else 0
        apply_plan(client, p)
    except ApplyError as e:
        print(f"scheduler-api: {mask(str(e), secrets)}", file=err)
        return 1
    print(f"Applied: {len(p.added)} added, {len(p.changed)} changed, {len(p.removed)} removed.", file=out)
    return 0


def fetch(client: httpx.Client, workspace: str) -> dict[str, Any]:
    """The workspace's triggers in the file format (`SECRET` for header values, defaults left out).

    A payload comes from the list, else from the one-trigger GET; when the API shows it in neither,
    `ApplyError` naming the triggers (the file would silently drop it)."""
    jobs = _send(client, "GET", _path(workspace)).json()["jobs"]
    triggers = []
    hidden = []
    for job in jobs:
        t: dict[str, Any] = {
            "id": job["id"],
            "cron": job.get("cron"),
            "at": job.get("at"),
            "url": job["url"],
            "method": job["method"],
            "timezone": job.get("timezone"),
            "enabled": job.get("enabled", True),
            "headers": {name: SECRET for name in job.get("header_names") or []},
        }
        if job.get("has_payload"):
            if "payload" not in job:  # not in the list: the one-trigger GET
                job = _send(client, "GET", f"{_path(workspace)}/{quote(job['id'], safe='')}").json()["job"]
            if "payload" not in job:
                hidden.append(job["id"])
            t["payload"] = job.get("payload")
        t |= {name: job[name] for name in POLICY_FIELDS if job.get(name) is not None}
        shown = [k for k in (*_FIELDS, *POLICY_FIELDS) if t.get(k) is not None]
        triggers.append({k: t[k] for k in shown if k not in _DEFAULTS or t[k] != _DEFAULTS[k]})
    if hidden:
        raise ApplyError(f"the API does not show the payload of {', '.join(hidden)}: get cannot write a faithful file")
    return {"triggers": triggers}


def dump(doc: dict[str, Any], fmt: str, *, workspace: str) -> str:
    """`doc` as ``yaml`` (with a comment on the placeholders) or ``json``."""
    if fmt == "json":
        return json.dumps(doc, indent=2, ensure_ascii=False)
    note = f"# scheduler-api get {workspace}: header values are written {SECRET}; put the value or ${{VAR}} there\n"
    text: str = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, default_flow_style=False)
    return note + text.rstrip("\n")


def run_get(
    client: httpx.Client, workspace: str, *, fmt: str = "yaml", out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """`scheduler-api get`: 0 with the file printed to `out`, 1 an `ApplyError` printed to `err`."""
    try:
        text = dump(fetch(client, workspace), fmt, workspace=workspace)
    except ApplyError as e:
        print(f"scheduler-api: {e}", file=err or sys.stderr)
        return 1
    print(text, file=out or sys.stdout)
    return 0
