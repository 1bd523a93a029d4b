"""A Hypothesis strategy over the cron grammar: valid, nearly valid and broken expressions (values,
names, ranges, steps, lists, L, W, #, ?, macros, 5 and 6 fields)."""

from __future__ import annotations

from hypothesis import strategies as st

from scheduler_api import cron_syntax

MONTHS = "JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split()
DAYS = "SUN MON TUE WED THU FRI SAT".split()
SPAN = {"second": (0, 59), "minute": (0, 59), "hour": (0, 23), "dom": (1, 31), "month": (1, 12), "dow": (0, 7)}


@st.composite
def value(draw: st.DrawFn, field: str) -> str:
    low, high = SPAN[field]
    v = draw(st.integers(low, high + 1) if draw(st.integers(0, 19)) == 0 else st.integers(low, high))
    if field == "month" and 1 <= v <= 12 and draw(st.booleans()):
        return MONTHS[v - 1]
    if field == "dow" and v < 7 and draw(st.booleans()):
        return DAYS[v]
    return str(v)


@st.composite
def item(draw: st.DrawFn, field: str) -> str:
    kind = draw(st.sampled_from(["value", "range", "star-step", "value-step", "range-step", "star"] * 3 + ["special"]))
    step = str(draw(st.integers(0, 70) if draw(st.integers(0, 9)) == 0 else st.integers(1, 12)))
    if kind == "value":
        return draw(value(field))
    if kind == "range":
        return f"{draw(value(field))}-{draw(value(field))}"
    if kind == "star-step":
        return f"{draw(st.sampled_from(['*', '?']))}/{step}"
    if kind == "value-step":
        return f"{draw(value(field))}/{step}"
    if kind == "range-step":
        return f"{draw(value(field))}-{draw(value(field))}/{step}"
    if kind == "star":
        return draw(st.sampled_from(["*", "?"]))
    if field == "dom":
        return draw(st.sampled_from(["L", f"{draw(value(field))}W", "LW", "L-2"]))
    if field == "dow":
        return draw(
            st.sampled_from(
                [
                    f"{draw(value(field))}L",
                    f"L{draw(value(field))}",
                    f"{draw(value(field))}#{draw(st.integers(0, 6))}",
                    "L",
                ]
            )
        )
    return draw(st.sampled_from(["H", "*/", "-", ""]))


@st.composite
def field_text(draw: st.DrawFn, field: str) -> str:
    if draw(st.integers(0, 2)) == 0:
        return "*"
    return ",".join(draw(st.lists(item(field), min_size=1, max_size=2)))


@st.composite
def expressions(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 20)) == 0:
        return draw(st.sampled_from(sorted(cron_syntax.MACROS) + ["@reboot", "@DAILY"]))
    names = ["minute", "hour", "dom", "month", "dow"]
    if draw(st.booleans()):
        names = ["second", *names]
    return " ".join(draw(field_text(n)) for n in names)
