"""The templates escape what they show: a workspace id, payload or search containing markup is text."""

from __future__ import annotations

from fastapi.testclient import TestClient
from markupsafe import Markup

from scheduler_api.storage.series import Minute
from scheduler_api.storage.workspace_index import WorkspaceSummary
from scheduler_api.ui.charts import deliveries_chart
from scheduler_api.ui.web import environment

SCRIPT = "<script>alert(1)</script>"


def test_a_workspace_id_is_shown_as_text() -> None:
    """Ids cannot hold `<` (the API's alphabet), but the template does not rely on it."""
    summary = WorkspaceSummary(triggers=1, paused=False, failing=0, delivered_24h=0, failed_24h=0, next_run=None)
    html = (
        environment()
        .get_template("workspaces.html")
        .render(page=None, rows=[(SCRIPT, summary)], q=SCRIPT, total=1, after=None, more=None)
    )
    assert SCRIPT not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'href="/ui/workspaces/%3Cscript%3Ealert%281%29%3C%2Fscript%3E"' in html


def test_a_payload_and_a_search_are_shown_as_text(client: TestClient) -> None:
    body = {"cron": "0 9 * * *", "url": "https://example.com/h", "method": "POST", "payload": {"x": SCRIPT}}
    assert client.put("/api/workspaces/ws/triggers/t", json=body).status_code == 201
    page = client.get("/ui/workspaces/ws/triggers/t").text
    assert SCRIPT not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    search = client.get("/ui/workspaces", params={"q": SCRIPT}).text
    assert SCRIPT not in search and "&lt;script&gt;" in search
    missing = client.get("/ui/workspaces/%3Cscript%3E")
    assert missing.status_code == 404 and SCRIPT not in missing.text


def test_chart_titles_are_escaped() -> None:
    svg = deliveries_chart([Minute(start=0.0, counts={"delivered": 2}, lateness_p50=None, lateness_p99=None)])
    assert isinstance(svg, Markup) and "<title>00:00 UTC: 2 delivered</title>" in svg
