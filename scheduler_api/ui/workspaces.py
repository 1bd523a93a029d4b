"""The workspaces page: every workspace the key may see, from the index (never a key scan), 50 a
page, searched by id prefix, with the counts of `workspace_index.summaries`."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse, RedirectResponse

from scheduler_api.api.deps import redis_of
from scheduler_api.auth import ALL
from scheduler_api.storage import workspace_index
from scheduler_api.ui.web import Page, signed_in

router = APIRouter()
PAGE_SIZE = 50


def visible_prefix(scope: str, search: str) -> str | None:
    """The index prefix to list for a prefix scope (``*`` or ``prefix*``) and a search; None: nothing
    the key may see starts with the search."""
    if scope == ALL:
        return search
    own = scope[:-1]
    if search.startswith(own):
        return search
    return own if own.startswith(search) else None


@router.get("/ui", response_class=HTMLResponse)
def index() -> RedirectResponse:
    return RedirectResponse("/ui/workspaces", status_code=303)


@router.get("/ui/workspaces", response_class=HTMLResponse)
def workspaces(
    page: Annotated[Page, Depends(signed_in)],
    q: Annotated[str, Query(max_length=128)] = "",
    after: Annotated[str | None, Query(max_length=128)] = None,
) -> HTMLResponse:
    conn = redis_of(page.request)
    scope = page.session.scope
    search = q.strip()
    if scope.endswith("*"):
        prefix = visible_prefix(scope, search)
        ids = workspace_index.page(conn, prefix=prefix, after=after, limit=PAGE_SIZE) if prefix is not None else []
        total = workspace_index.count(conn, prefix=prefix) if prefix is not None else 0
    else:  # a key of one workspace
        ids = [i for i in workspace_index.scope_ids(conn, scope) if i.startswith(search) and (after or "") < i]
        total = len(ids)
    now = time.time()
    found = workspace_index.summaries(conn, ids, now=now) if ids else {}
    rows = [(i, found.get(i)) for i in ids]
    more = ids[-1] if len(ids) == PAGE_SIZE else None
    return page.render("workspaces.html", rows=rows, q=search, total=total, after=after, more=more, title="Workspaces")
