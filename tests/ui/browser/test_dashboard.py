"""The dashboard in a real browser (Debian's Chromium through Playwright) against a real `serve`,
scheduler and worker: sign-in, the pages, the forms and their effect on deliveries, key scopes,
sign-out, /docs offline; axe-core finds no serious or critical violation on any page; the README's
screenshots (docs/ui-*.png) are taken from this seeded example.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.browser import screenshot, serious_violations
from tests.support.processes import wait_until
from tests.support.receiver import headers_of
from tests.support.ui import ACME_KEY, ADMIN_KEY

from .conftest import Stack

pytestmark = [pytest.mark.browser, pytest.mark.slow]
SECRET = "s3cret-header-value"
WS = "acme-shop"


@pytest.fixture(scope="module")
def seeded(browser: Any, stack: Stack) -> Stack:
    hook = stack.receiver.url
    triggers = {
        (WS, "nightly"): {
            "cron": "0 3 * * *",
            "url": f"{hook}/nightly",
            "method": "POST",
            "payload": {"report": "daily"},
        },
        (WS, "broken"): {"cron": "0 0 1 1 *", "url": f"{hook}/broken", "method": "POST", "retry": {"max_retries": 0}},
        ("globex", "t"): {"cron": "0 9 * * 1-5", "url": f"{hook}/globex", "method": "GET", "timezone": "Europe/Paris"},
    }
    for (ws, tid), body in triggers.items():
        r = stack.api.put(f"/api/workspaces/{ws}/triggers/{tid}", json=body)
        assert r.status_code == 201, r.text
    stack.receiver.on("/broken", (500, 0))  # the first delivery fails; its replay is answered 200
    return stack


@pytest.fixture(scope="module")
def admin(browser: Any, seeded: Stack) -> Iterator[Any]:
    """A page signed in with the admin key (the sign-in itself is tested below)."""
    context = browser.new_context(base_url=seeded.base, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto("/ui/sign-in")
    page.get_by_label("API key").fill(ADMIN_KEY)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/ui/workspaces")
    refused: list[str] = []  # what the pages' Content-Security-Policy blocked: nothing of their own
    page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
    yield page
    context.close()
    assert refused == []


def accessible(page: Any) -> None:
    assert serious_violations(page) == [], page.url


def test_sign_in_rejects_a_wrong_key_and_shows_the_workspaces(browser: Any, seeded: Stack) -> None:
    context = browser.new_context(base_url=seeded.base)
    page = context.new_page()
    page.goto("/ui/workspaces")
    assert "/ui/sign-in" in page.url
    accessible(page)
    page.get_by_label("API key").fill("wrong-key-0123456789abcdef")
    page.get_by_role("button", name="Sign in").click()
    assert "not one of this service" in page.inner_text("main")
    page.get_by_label("API key").fill(ADMIN_KEY)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/ui/workspaces")
    assert page.get_by_role("link", name=WS).is_visible() and page.get_by_role("link", name="globex").is_visible()
    accessible(page)
    screenshot(page, "ui-workspaces")
    context.close()


def test_a_trigger_made_with_the_form_fires_and_its_delivery_appears(admin: Any, seeded: Stack) -> None:
    page = admin
    page.goto(f"/ui/workspaces/{WS}/new-trigger")
    page.fill("#f-id", "every-2s")
    page.fill("#f-cron", "*/2 * * * * *")
    page.wait_for_function("() => document.getElementById('cron-preview').innerText.includes('Every 2 seconds')")
    assert page.locator("#cron-preview li").count() == 5  # the live preview's next 5 runs
    page.fill("#f-url", f"{seeded.receiver.url}/fired")
    page.fill("#h-new-name-0", "X-Secret")
    page.fill("#h-new-value-0", SECRET)
    page.get_by_role("button", name="Preview changes").click()
    assert "Preview of the change" in page.inner_text("main")
    accessible(page)
    screenshot(page, "ui-trigger-form")
    # the typed value is never sent back: its field is empty, with a hint to type it again
    assert page.input_value("#h-new-name-0") == "X-Secret" and page.input_value("#h-new-value-0") == ""
    assert SECRET not in page.content() and page.locator("#h-new-hint-0").is_visible()
    page.fill("#h-new-value-0", SECRET)
    page.get_by_role("button", name="Save").click()
    page.wait_for_url(f"**/ui/workspaces/{WS}?done=created")
    fired = seeded.receiver.wait_for(lambda rs: any(r.path == "/fired" for r in rs))
    assert [headers_of(r).get("x-secret") for r in fired if r.path == "/fired"][0] == SECRET

    def delivered() -> bool:
        page.goto(f"/ui/workspaces/{WS}/deliveries?trigger=every-2s&outcome=delivered")
        return page.locator(".record .outcome-delivered").count() > 0

    wait_until(delivered, 15, "a delivered record on the deliveries page", seeded.procs)
    page.goto(f"/ui/workspaces/{WS}")
    assert page.locator("text=every-2s").first.is_visible()
    accessible(page)
    screenshot(page, "ui-workspace")


def test_pause_and_resume(admin: Any, seeded: Stack) -> None:
    page = admin
    page.goto(f"/ui/workspaces/{WS}")
    page.get_by_role("button", name="Pause workspace").click()
    assert "The workspace is paused" in page.inner_text("main")
    assert {j["state"] for j in seeded.api.get(f"/api/workspaces/{WS}/triggers").json()["jobs"]} == {"paused"}
    page.get_by_role("button", name="Resume workspace").click()
    assert "The workspace is resumed" in page.inner_text("main")
    assert {j["state"] for j in seeded.api.get(f"/api/workspaces/{WS}/triggers").json()["jobs"]} == {"active"}


def test_editing_the_url_keeps_the_secret_header(admin: Any, seeded: Stack) -> None:
    page = admin
    page.goto(f"/ui/workspaces/{WS}/triggers/every-2s")
    assert SECRET not in page.content()  # header values are never shown
    page.fill("#f-url", f"{seeded.receiver.url}/edited")
    page.get_by_role("button", name="Save").click()
    page.wait_for_url(f"**/ui/workspaces/{WS}?done=saved")
    got = seeded.receiver.wait_for(lambda rs: any(r.path == "/edited" for r in rs))
    assert [headers_of(r).get("x-secret") for r in got if r.path == "/edited"][0] == SECRET
    page.get_by_role("button", name="Disable every-2s").click()  # quiet from here on
    assert "The trigger is disabled" in page.inner_text("main")


def test_a_failed_delivery_is_replayed(admin: Any, seeded: Stack) -> None:
    page = admin
    page.goto(f"/ui/workspaces/{WS}")
    page.get_by_role("button", name="Run broken now").click()
    assert "queued to fire now" in page.inner_text("main")

    def record_shows(selector: str) -> bool:
        page.goto(f"/ui/workspaces/{WS}/deliveries?trigger=broken")
        return page.locator(selector).count() > 0

    wait_until(lambda: record_shows(".record .outcome-failed"), 15, "the failed record", seeded.procs)
    assert "500" in page.inner_text(".attempts")
    accessible(page)
    screenshot(page, "ui-deliveries")
    page.locator(".record button", has_text="Replay").first.click()
    assert "Replay queued" in page.inner_text("main")
    wait_until(lambda: record_shows(".record .outcome-delivered"), 15, "the replay delivered", seeded.procs)
    assert "replayed 1" in page.inner_text(".record")
    assert len(seeded.receiver.to("/broken")) == 2


def test_a_scoped_key_cannot_open_or_post_another_tenants_pages(browser: Any, seeded: Stack) -> None:
    context = browser.new_context(base_url=seeded.base)
    page = context.new_page()
    page.goto("/ui/sign-in")
    page.get_by_label("API key").fill(ACME_KEY)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/ui/workspaces")
    assert page.get_by_role("link", name=WS).is_visible() and page.get_by_role("link", name="globex").count() == 0
    response = page.goto("/ui/workspaces/globex")
    assert response is not None and response.status == 403 and "Not allowed" in page.inner_text("main")
    page.goto(f"/ui/workspaces/{WS}")
    form = "document.querySelector('form[action$=\"/pause\"]')"
    page.evaluate(f"{form}.action = '/ui/workspaces/globex/pause'")  # a valid token, another tenant's form
    with page.expect_navigation() as posted:
        page.get_by_role("button", name="Pause workspace").click()
    assert posted.value is not None and posted.value.status == 403
    page.goto(f"/ui/workspaces/{WS}")
    page.evaluate(f"{form}.querySelector('[name=csrf]').value = 'forged'")
    with page.expect_navigation() as forged:
        page.get_by_role("button", name="Pause workspace").click()
    assert forged.value is not None and forged.value.status == 403 and "CSRF" in page.inner_text("main")
    for ws in ("globex", WS):
        assert {j["state"] for j in seeded.api.get(f"/api/workspaces/{ws}/triggers").json()["jobs"]} <= {
            "active",
            "disabled",
        }
    context.close()


def test_health_shows_processes_and_charts(admin: Any, seeded: Stack) -> None:
    page = admin
    page.goto("/ui/health")
    text = page.inner_text("main")
    assert "scheduler" in text and "worker" in text
    assert page.locator("svg.chart").count() == 2
    assert page.locator("svg.chart rect title").count() > 0  # the deliveries above, with hover numbers
    swatch = "getComputedStyle(document.querySelector('.key-delivered'), '::before').backgroundColor"
    assert page.evaluate(swatch) == "rgb(26, 127, 55)"  # the legend's colours, from the stylesheet (CSP)
    accessible(page)
    screenshot(page, "ui-health")


def test_usable_on_a_phone(browser: Any, seeded: Stack, admin: Any) -> None:
    context = browser.new_context(base_url=seeded.base, viewport={"width": 390, "height": 844})
    context.add_cookies(admin.context.cookies())
    page = context.new_page()
    page.goto(f"/ui/workspaces/{WS}")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # wide tables scroll in their box
    screenshot(page, "ui-workspace-phone")
    context.close()


def test_api_docs_render_offline(browser: Any, seeded: Stack) -> None:
    context = browser.new_context(base_url=seeded.base, offline=False)
    page = context.new_page()
    page.route("**/*", lambda route: route.abort() if "127.0.0.1" not in route.request.url else route.continue_())
    page.goto("/docs")
    page.wait_for_selector(".opblock", timeout=15_000)
    assert page.locator(".opblock").count() > 10
    context.close()


def test_sign_out(admin: Any, seeded: Stack) -> None:
    page = admin
    page.goto("/ui/workspaces")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/ui/sign-in")
    page.goto("/ui/workspaces")
    assert "/ui/sign-in" in page.url
