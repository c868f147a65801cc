"""Prometheus metrics, correct under gunicorn with several workers (multiprocess mode).

With ``PROMETHEUS_MULTIPROC_DIR`` set (``deploy/gunicorn.conf.py`` sets it), every worker writes its
samples to files there and ``/metrics`` adds them up; without it, this process's own registry.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any

from flask import Blueprint, Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess

REQUESTS = Counter("desq_http_requests_total", "HTTP requests answered", ["endpoint", "status"])
LATENCY = Histogram("desq_http_request_seconds", "Time to the first byte of the answer", ["endpoint"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
BYTES = Counter("desq_bytes_served_total", "File bytes sent")
CACHE = Counter("desq_index_cache_total", "Container index lookups in the cache", ["result"])
STORAGE = Counter("desq_storage_requests_total", "Requests sent to the archive storage", ["op"])

metrics = Blueprint("metrics", __name__)


@functools.cache
def _child(metric: Counter | Histogram, *values: str) -> Any:
    """A labelled series, looked up once: ``labels()`` takes a lock and builds a key on every call."""
    return metric.labels(*values)


def storage_request(op: str) -> None:
    _child(STORAGE, op).inc()


def cache_event(hit: bool) -> None:
    _child(CACHE, "hit" if hit else "miss").inc()


@metrics.get("/metrics")
def render() -> Response:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def instrument(app: Flask) -> None:
    """Count and time every request by endpoint (the route, never the name asked for)."""

    @app.before_request
    def _start() -> None:
        g.desq_started = time.perf_counter()

    @app.after_request
    def _done(response: Response) -> Response:
        endpoint = request.endpoint or "unknown"
        _child(REQUESTS, endpoint, str(response.status_code)).inc()
        started = g.get("desq_started")
        if started is not None:
            _child(LATENCY, endpoint).observe(time.perf_counter() - started)
        return response
