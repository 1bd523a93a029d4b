"""Reading `GET /metrics`: the Prometheus text format parsed into samples, and checks on them."""

from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(client: TestClient) -> Samples:
    """`GET /metrics` (200, text/plain), each sample keyed by its name and sorted labels."""
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def v(samples: Samples, name: str, **labels: str) -> float:
    """The value of the sample `name` with exactly these `labels`."""
    return samples[(name, tuple(sorted(labels.items())))]


def check_histogram(samples: Samples, name: str) -> None:
    """The histogram `name` has cumulative buckets ending at +Inf with its count, and a sum >= 0."""
    buckets = sorted(
        ((float(dict(lbl)["le"]), val) for (n, lbl), val in samples.items() if n == f"{name}_bucket"),
    )
    assert buckets, name
    counts = [c for _, c in buckets]
    assert counts == sorted(counts), f"{name} buckets are not cumulative"
    assert buckets[-1][0] == float("inf") and buckets[-1][1] == v(samples, f"{name}_count")
    assert v(samples, f"{name}_sum") >= 0
