"""The health page's charts, drawn by the server as inline SVG: no script, no chart library.

Each bar and point carries a ``<title>`` (the browser shows it on hover) and the page shows the same
numbers in a table beside the chart. Every text is escaped (markupsafe).
"""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

from scheduler_api import cron as cronlib
from scheduler_api.storage.series import Minute

WIDTH, HEIGHT, PAD = 720, 180, 30
COLOURS = {
    "delivered": "#1a7f37",
    "failed": "#cf222e",
    "retrying": "#bf8700",
    "missed": "#8250df",
    "blocked": "#57606a",
    "skipped": "#0969da",
}


def _label(minute: Minute) -> str:
    return cronlib.iso(minute.start)[11:16] + " UTC"


def _frame(title: str, body: list[str], top: float, unit: str) -> Markup:
    axis = (
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH}" y2="{HEIGHT - PAD}" stroke="#8c959f"/>'
        f'<text x="2" y="{PAD - 6}" font-size="11" fill="#424a53">{escape(f"{top:g}")} {escape(unit)}</text>'
        f'<text x="2" y="{HEIGHT - PAD + 4}" font-size="11" fill="#424a53">0</text>'
    )
    return Markup(
        f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" class="chart" role="img" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>{axis}{''.join(body)}</svg>"
    )


def deliveries_chart(minutes: Sequence[Minute]) -> Markup:
    """Stacked bars: each minute's firings by outcome."""
    top = max([sum(m.counts.values()) for m in minutes] + [1])
    step = (WIDTH - PAD) / max(len(minutes), 1)
    scale = (HEIGHT - 2 * PAD) / top
    body = []
    for i, m in enumerate(minutes):
        y = float(HEIGHT - PAD)
        for outcome, colour in COLOURS.items():
            n = m.counts.get(outcome, 0)
            if not n:
                continue
            h = n * scale
            y -= h
            tip = escape(f"{_label(m)}: {n} {outcome}")
            body.append(
                f'<rect x="{PAD + i * step + 1:.1f}" y="{y:.1f}" width="{max(step - 2, 1):.1f}" height="{h:.1f}" '
                f'fill="{colour}"><title>{tip}</title></rect>'
            )
    return _frame("Deliveries per minute by outcome, last hour", body, top, "per minute")


def lateness_chart(minutes: Sequence[Minute]) -> Markup:
    """Two lines: each minute's lateness p50 and p99, in seconds."""
    values = [v for m in minutes for v in (m.lateness_p50, m.lateness_p99) if v is not None]
    top = max(values + [1.0])
    step = (WIDTH - PAD) / max(len(minutes), 1)
    scale = (HEIGHT - 2 * PAD) / top
    body = []
    for name, colour in (("p50", "#0969da"), ("p99", "#cf222e")):
        points = []
        for i, m in enumerate(minutes):
            v = m.lateness_p50 if name == "p50" else m.lateness_p99
            if v is None:
                continue
            x, y = PAD + (i + 0.5) * step, HEIGHT - PAD - v * scale
            points.append(f"{x:.1f},{y:.1f}")
            tip = escape(f"{_label(m)}: lateness {name} {v:g} s")
            body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"><title>{tip}</title></circle>')
        if len(points) > 1:
            body.insert(0, f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{" ".join(points)}"/>')
    return _frame("Lateness per minute, p50 and p99, last hour", body, top, "s")
