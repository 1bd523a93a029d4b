"""The health page: scheduler and worker processes with their last heartbeat, the queue's depth, and
the last hour per minute (deliveries by outcome, lateness p50 / p99) as server-drawn SVG and a table.
Only for a key that serves every workspace (scope ``*``): the numbers are every tenant's together,
which the API keeps from tenants too (``/metrics`` behind METRICS_KEY); any other key gets a 403 page."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse

from scheduler_api.api.deps import redis_of, settings_of
from scheduler_api.storage import processes, series
from scheduler_api.ui.charts import COLOURS, deliveries_chart, lateness_chart
from scheduler_api.ui.web import Page, signed_in

router = APIRouter()


@router.get("/ui/health", response_class=HTMLResponse)
def health_page(page: Annotated[Page, Depends(signed_in)]) -> HTMLResponse:
    page.require_all()
    conn = redis_of(page.request)
    now = time.time()
    minutes = series.read(conn, now=now, minutes=60)
    shown = [m for m in minutes if sum(m.counts.values()) or m.lateness_p50 is not None]
    return page.render(
        "health.html",
        title="Health",
        now=now,
        procs=processes.live_processes(conn, now=now),
        depth=processes.queue_depth(conn, settings_of(page.request).queue_name),
        deliveries_svg=deliveries_chart(minutes),
        lateness_svg=lateness_chart(minutes),
        minutes=shown,
        outcomes=list(COLOURS),
    )
