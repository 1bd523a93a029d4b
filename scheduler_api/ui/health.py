"""The health page: scheduler and worker processes with their last heartbeat, the queue's depth, and
the last hour per minute (deliveries by outcome, lateness p50 / p99) as server-drawn SVG and a table.
Open to every signed-in key: it shows no workspace's data."""

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
        colours=COLOURS,
    )
