"""Prometheus metrics, correct under gunicorn with several workers (multiprocess mode).

With ``PROMETHEUS_MULTIPROC_DIR`` set (``deploy/gunicorn.conf.py`` sets it), every worker writes its
samples to files there and ``/metrics`` adds them up; without it, this process's own registry.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily

from desq.errors import DesqError
from desq.files import FileService
from desq.published import UNREPORTED
from desq.days import target_day

REQUESTS = Counter("desq_http_requests_total", "HTTP requests answered", ["endpoint", "status"])
LATENCY = Histogram("desq_http_request_seconds", "Time to the first byte of the answer", ["endpoint"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
BYTES = Counter("desq_bytes_served_total", "File bytes sent")
CACHE = Counter("desq_index_cache_total", "Container index lookups in the cache", ["result"])
STORAGE = Counter("desq_storage_requests_total", "Requests sent to the archive storage", ["op"])
S3_REQUESTS = Counter("desq_s3_requests_total", "S3 API requests answered, by S3 operation", ["operation", "status"])
EC_DEGRADED = Counter("desq_ec_degraded_reads_total", "Erasure-coded archive: reads decoded from other fragments because one was missing, damaged or its node down")
EC_FRAGMENT_ERRORS = Counter("desq_ec_fragment_errors_total", "Erasure-coded archive: fragment reads that failed, by kind (missing, damaged, unreachable)", ["kind"])
S3_LISTING = Counter("desq_s3_listing_storage_requests_total", "Storage requests made to list the S3 bucket", ["op"])

metrics = Blueprint("metrics", __name__)


@functools.cache
def _child(metric: Counter | Histogram, *values: str) -> Any:
    """A labelled series, looked up once: ``labels()`` takes a lock and builds a key on every call."""
    return metric.labels(*values)


def storage_request(op: str) -> None:
    _child(STORAGE, op).inc()


def s3_request(operation: str, status: int) -> None:
    _child(S3_REQUESTS, operation, str(status)).inc()


def s3_listing_request(op: str) -> None:
    _child(S3_LISTING, op).inc()


def ec_event(event: str, detail: str) -> None:
    if event == "degraded_read":
        EC_DEGRADED.inc()
    elif event == "fragment_error":
        _child(EC_FRAGMENT_ERRORS, detail).inc()


def cache_event(hit: bool) -> None:
    _child(CACHE, "hit" if hit else "miss").inc()


class ArchiveCollector:
    """Gauges of the archive's state, from the documents the night publishes beside the containers:
    how many days the uid-mode cutoff is behind its target, and what the last night rewrote."""

    def __init__(self, service: FileService) -> None:
        self.service = service

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = self.service.published()
        settings = self.service.settings
        if self.service.mode.has_cutoff:
            cutoff = state.cutoff_date
            if cutoff is not None:
                target = target_day(datetime.now(settings.zone).date(), settings.archive.after_days)
                lag = GaugeMetricFamily("desq_cutoff_lag_days", "Days the archive cutoff is behind today - after_days - 1")
                lag.add_metric([], max(0, (target - cutoff).days))
                yield lag
            blocked = GaugeMetricFamily("desq_cutoff_blocked", "1 when the last cutoff step found a day with files missing from their containers")
            blocked.add_metric([], 1 if state.blocked_day else 0)
            yield blocked
        night = state.night
        if night:
            by_status = night.get("by_status") if isinstance(night.get("by_status"), dict) else {}
            failed_tasks = sum(float(by_status.get(s) or 0) for s in ("failed", UNREPORTED))
            for value, name, text in (
                (night.get("rewritten"), "desq_night_rewritten_containers", "Containers the last night replaced"),
                (night.get("files"), "desq_night_files", "Files the last night packed"),
                (night.get("unplaced"), "desq_night_unplaced_rows", "Rows the last night could not place on a day (created_at NULL or not a time)"),
                (night.get("failed_rows"), "desq_night_failed_rows", "Rows the last night could not pack (their originals unreadable); the next night tries them again"),
                (failed_tasks, "desq_night_failed_tasks", "pack_shard tasks of the last night that failed or left no report"),
            ):
                gauge = GaugeMetricFamily(name, text)
                gauge.add_metric([], float(value or 0))
                yield gauge


@metrics.get("/metrics")
def render() -> Response:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    body = generate_latest(registry)
    service = current_app.extensions.get("desq.files")
    if service is not None:
        state = CollectorRegistry(auto_describe=False)
        state.register(ArchiveCollector(service))  # type: ignore[arg-type]
        try:
            body += generate_latest(state)
        except DesqError:
            pass  # the archive does not answer now: /readyz says so; the request counters still render
    return Response(body, mimetype=CONTENT_TYPE_LATEST)


def answered(endpoint: str, status: int, seconds: float) -> None:
    """Count one answer of ``endpoint`` and the time to its first byte."""
    _child(REQUESTS, endpoint, str(status)).inc()
    _child(LATENCY, endpoint).observe(seconds)


def instrument(app: Flask) -> None:
    """Count and time every request by endpoint (the route, never the name asked for)."""

    @app.before_request
    def _start() -> None:
        g.desq_started = time.perf_counter()

    @app.after_request
    def _done(response: Response) -> Response:
        endpoint = request.endpoint or "unknown"
        started = g.get("desq_started")
        if started is None:
            _child(REQUESTS, endpoint, str(response.status_code)).inc()
        else:
            answered(endpoint, response.status_code, time.perf_counter() - started)
        return response
