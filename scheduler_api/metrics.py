"""Prometheus metrics, counted in Redis so they are correct across processes and pods.

Counters and histogram buckets are HINCRBY'd in Redis by the process that sees the event (the
scheduler's tick, the worker's outcome flush - inside the same Lua script as the outcome, so a
count never disagrees with the records). `GET /metrics` reads them at scrape time through a
prometheus-client collector; any API replica answers the same. Series:

  scheduler_firings_enqueued_total            firings written into batches by the scheduler
  scheduler_firings_missed_total              firings skipped beyond MISFIRE_GRACE_SECONDS
  scheduler_deliveries_total{outcome}         final outcomes: delivered, failed, blocked
  scheduler_attempts_total{result}            every attempt: ok, error
  scheduler_retries_scheduled_total           failed attempts that will be retried
  scheduler_delivery_duration_seconds         histogram of attempt durations
  scheduler_lateness_seconds                  histogram of first-attempt start - scheduled time
  scheduler_tick_duration_seconds             histogram of scheduler tick durations
  scheduler_queue_depth                       RQ jobs waiting, batches in the outbox, retries due later
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from redis import Redis
from redis.client import Pipeline

from scheduler_api.storage import keys, series
from scheduler_api.storage.counters import Counter

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
LATENESS_BUCKETS = series.LATENESS_BUCKETS  # the dashboard's per-minute histogram uses them too
TICK_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

HISTOGRAMS = {
    "delivery_duration_seconds": (DURATION_BUCKETS, "Duration of one delivery attempt."),
    "lateness_seconds": (LATENESS_BUCKETS, "Start of a firing's first attempt minus its scheduled time."),
    "tick_duration_seconds": (TICK_BUCKETS, "Duration of one scheduler tick."),
}
# Histogram name -> the labels of its buckets (computed once, not per observed value).
_LABELS = {name: series.bucket_labels(bounds) for name, (bounds, _) in HISTOGRAMS.items()}


def observe(pipe: Pipeline | Redis, name: str, values: Iterable[float]) -> None:
    """Add `values` to the Redis-held histogram `name` (non-cumulative buckets; `+Inf` included)."""
    values = list(values)
    if not values:
        return
    key = keys.metric_histogram(name)
    counts = series.bucket_counts(values, HISTOGRAMS[name][0], _LABELS[name])
    total, n = sum(values), len(values)
    for le, c in counts.items():
        pipe.hincrby(key, le, c)
    pipe.hincrbyfloat(key, "sum", total)
    pipe.hincrby(key, "count", n)


class RedisCollector(Collector):
    """Reads the service's counters from Redis at scrape time."""

    def __init__(self, conn: Redis, queue_name: str) -> None:
        self.conn = conn
        self.queue_name = queue_name

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        pipe = self.conn.pipeline(transaction=False)
        pipe.hgetall(keys.METRICS)
        for name in HISTOGRAMS:
            pipe.hgetall(keys.metric_histogram(name))
        pipe.llen(f"rq:queue:{self.queue_name}")
        pipe.zcard(keys.OUTBOX)
        pipe.hlen(keys.PUSHED)  # in the outbox until a worker claims them, but already in RQ's queue
        pipe.zcard(keys.RETRIES)
        results = pipe.execute()
        counters = {k.decode(): int(float(v)) for k, v in results[0].items()}
        yield _counter("scheduler_firings_enqueued", "Firings written into batches.", counters.get(Counter.ENQUEUED, 0))
        yield _counter("scheduler_firings_missed", "Firings skipped as missed.", counters.get(Counter.MISSED, 0))
        yield _counter("scheduler_retries_scheduled", "Failed attempts to be retried.", counters.get(Counter.RETRY, 0))
        deliveries = CounterMetricFamily("scheduler_deliveries", "Final delivery outcomes.", labels=["outcome"])
        for outcome, counter in (
            ("delivered", Counter.OUTCOME_DELIVERED),
            ("failed", Counter.OUTCOME_FAILED),
            ("blocked", Counter.OUTCOME_BLOCKED),
            ("skipped", Counter.OUTCOME_SKIPPED),
        ):
            deliveries.add_metric([outcome], counters.get(counter, 0))
        yield deliveries
        attempts = CounterMetricFamily("scheduler_attempts", "Delivery attempts.", labels=["result"])
        attempts.add_metric(["ok"], counters.get(Counter.ATTEMPT_OK, 0))
        attempts.add_metric(["error"], counters.get(Counter.ATTEMPT_ERROR, 0))
        yield attempts
        for (name, (buckets, doc)), raw in zip(HISTOGRAMS.items(), results[1 : 1 + len(HISTOGRAMS)], strict=True):
            yield _histogram(f"scheduler_{name}", doc, buckets, {k.decode(): float(v) for k, v in raw.items()})
        depth = GaugeMetricFamily("scheduler_queue_depth", "Work waiting.", labels=["where"])
        queued, outbox, pushed, retries = results[1 + len(HISTOGRAMS) :]
        depth.add_metric(["rq_queue"], queued)
        depth.add_metric(["outbox"], max(outbox - pushed, 0))
        depth.add_metric(["retries"], retries)
        yield depth


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc)
    family.add_metric([], value)
    return family


def _histogram(name: str, doc: str, buckets: Sequence[float], raw: dict[str, float]) -> HistogramMetricFamily:
    cumulative = []
    running = 0.0
    for b in buckets:
        running += raw.get(f"{b:g}", 0)
        cumulative.append((repr(float(b)), running))  # le="1.0", as prometheus-client writes it
    running += raw.get("+Inf", 0)
    cumulative.append(("+Inf", running))
    family = HistogramMetricFamily(name, doc)
    family.add_metric([], cumulative, sum_value=raw.get("sum", 0.0))
    return family
