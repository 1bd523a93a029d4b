"""`scheduler_api.api.docs`: /docs (Swagger UI) and /redoc load every script, stylesheet and icon
from the app itself, so the API docs render with no internet; the assets answer with JS/CSS types."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from scheduler_api.api import create_app
from tests.support.factories import make_settings

ASSET = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url:\s*["']([^"']+)["']|spec-url=["']([^"']+)["']""")


def urls_in(html: str) -> list[str]:
    return [next(g for g in m.groups() if g) for m in ASSET.finditer(html)]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_pages_name_only_local_urls(client: TestClient, page: str) -> None:
    r = client.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    urls = urls_in(r.text)
    assert urls, r.text
    assert all(u.startswith("/") and not u.startswith("//") for u in urls), urls
    assert not re.search(r"https?://", r.text.replace("http://www.w3.org", "")), r.text  # nothing outside at all
    assert "/openapi.json" in urls


def test_every_asset_is_served_with_its_content_type(client: TestClient) -> None:
    kinds = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
    seen = set()
    for page in ("/docs", "/redoc"):
        for url in urls_in(client.get(page).text):
            if url == "/openapi.json":
                continue
            r = client.get(url)
            suffix = url[url.rindex(".") :]
            assert r.status_code == 200 and r.headers["content-type"].startswith(kinds[suffix]), (url, r.headers)
            assert len(r.content) > 1000
            seen.add(suffix)
    assert seen == set(kinds)
    assert "SwaggerUIBundle" in client.get("/docs/assets/swagger-ui-bundle.js").text
    assert client.get("/docs/assets/nothing.js").status_code == 404


def test_the_docs_open_without_a_key_and_the_oauth2_redirect_page_is_served(redis_url: str) -> None:
    settings = make_settings(redis_url, api_keys="admin-key-0123456789_abc")  # keys are needed for /api/ only
    with TestClient(create_app(settings)) as client:
        for path in ("/docs", "/redoc", "/docs/assets/swagger-ui.css", "/docs/oauth2-redirect", "/openapi.json"):
            assert client.get(path).status_code == 200, path
        assert client.get("/api/workspaces/ws/triggers").status_code == 401
        spec = client.get("/openapi.json").json()
    assert "/api/workspaces/{workspace_id}/triggers" in spec["paths"]
    assert not any(p.startswith("/docs") or p == "/redoc" for p in spec["paths"])  # not API endpoints
