"""The router: forwards each /files and /meta request to the files-API backend owning its shard.

The shard comes from the layout (the same validation as the files API, so a malformed name is a
400 here too); the owner and its failover come from the consistent-hash ring. The proxy streams:
headers that matter go through (Range, If-None-Match, Authorization), hop-by-hop ones do not (with
``web.api_tokens`` set, the router checks the token itself before asking any backend), and the
backend's status, headers and body come back unchanged and unbuffered over pooled keep-alive
connections. A connect error or a 503 from the owner sends the request to the next choice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote

import urllib3
from flask import Blueprint, Flask, Response, current_app, jsonify, request
from prometheus_client import Counter

from desq.files import BadRequest
from desq.mode import mode_for
from desq.layout import LayoutError, shard_hex
from desq.ownership import Ring
from desq.settings import Settings
from web.errors import error_response
from web.files import require_token

router = Blueprint("router", __name__)

FORWARDED = ("Range", "If-None-Match", "If-Range", "If-Modified-Since", "Authorization", "Accept", "User-Agent")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade"}
PROXIED = Counter("desq_router_requests_total", "Requests forwarded", ["backend", "status"])
ERRORS = Counter("desq_router_errors_total", "Backends that failed a forwarded request", ["backend"])
FAILOVERS = Counter("desq_router_failovers_total", "Requests sent to a second choice")


@dataclass
class Health:
    """A backend's circuit breaker: open (down) after ``threshold`` failures in a row, until it answers."""

    healthy: bool = True
    failures: int = 0
    checked: float = 0.0
    threshold: int = 2

    def ok(self) -> None:
        self.healthy, self.failures, self.checked = True, 0, time.time()

    def failed(self) -> None:
        self.failures += 1
        self.checked = time.time()
        if self.failures >= self.threshold:
            self.healthy = False


REGISTRY_PREFIX = "desq:backend:"


def registered(url: str) -> list[str]:
    """Backends announced in the registry and not yet expired."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
    try:
        return sorted(k.decode()[len(REGISTRY_PREFIX) :] for k in client.scan_iter(match=REGISTRY_PREFIX + "*", count=1000))
    finally:
        client.close()


def announce(registry_url: str, advertise_url: str, interval: float, stop: threading.Event) -> threading.Thread:
    """A files-API instance's heartbeat: its URL in the registry, expiring after 3 missed beats."""
    import redis

    def beat() -> None:
        client = redis.Redis.from_url(registry_url, socket_timeout=1.0, socket_connect_timeout=1.0)
        while True:
            try:
                client.set(REGISTRY_PREFIX + advertise_url, "1", ex=max(3, int(interval * 3)))
            except redis.RedisError:
                pass  # the registry is down: routers keep their last view, and static backends
            if stop.wait(interval):
                client.delete(REGISTRY_PREFIX + advertise_url)
                return

    thread = threading.Thread(target=beat, name="registry-heartbeat", daemon=True)
    thread.start()
    return thread


class Backends:
    """The ring over the static and registered backends, with their health (checked in the background)."""

    def __init__(self, settings: Settings, *, interval: float = 5.0, timeout: float = 30.0) -> None:
        self.settings = settings
        self.bits = settings.shard_bits
        self.health: dict[str, Health] = {}
        self.ring = Ring([])
        self._set_members(list(settings.web.backends))
        self.pool = urllib3.PoolManager(num_pools=16, maxsize=64, retries=False, timeout=urllib3.Timeout(connect=2.0, read=timeout))
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._check_loop, name="router-health", daemon=True)
        self.refresh()
        self._thread.start()

    def _set_members(self, members: list[str]) -> None:
        if sorted(set(members)) != self.ring.backends:
            self.ring = Ring(members)
            self.health = {b: self.health.get(b, Health()) for b in self.ring.backends}

    def refresh(self) -> None:
        """Static backends plus live registrations (a backend that stops beating leaves the ring)."""
        members = list(self.settings.web.backends)
        if self.settings.web.registry_url:
            try:
                members += registered(self.settings.web.registry_url)
            except Exception:  # noqa: BLE001 - the registry is down: keep the current ring
                return
        self._set_members(members)

    def _check_loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.refresh()
            self.check_all()

    def check_all(self) -> None:
        for backend, health in self.health.items():
            try:
                answer = self.pool.request("GET", f"{backend}/healthz", timeout=urllib3.Timeout(total=2.0))
                health.ok() if answer.status == 200 else health.failed()
            except urllib3.exceptions.HTTPError:
                health.failed()

    def order(self, shard: int) -> list[str]:
        """Where to send a request for ``shard``: healthy choices first, in ring order."""
        choices = self.ring.choices(shard, self.bits, count=len(self.ring.backends))
        return [b for b in choices if self.health[b].healthy] + [b for b in choices if not self.health[b].healthy]

    def close(self) -> None:
        self._stop.set()


def backends() -> Backends:
    return current_app.extensions["desq.backends"]


def _shard_of(name: str) -> int:
    settings: Settings = current_app.extensions["desq.settings"]
    try:
        return mode_for(settings.layout).shard_of(name)
    except LayoutError as exc:
        raise BadRequest(str(exc)) from None


def _forward(path: str, name: str) -> Response:
    denied = require_token()  # the router's own web.api_tokens, checked before any backend is asked
    if denied is not None:
        return denied
    try:
        shard = _shard_of(name)
    except BadRequest as exc:
        return error_response(400, "bad_request", str(exc))
    group = backends()
    order = group.order(shard)
    if not order:
        return error_response(503, "unavailable", "the router has no files-API backends")
    target = f"/{path}/{quote(name, safe='')}" + (f"?{request.query_string.decode('latin-1')}" if request.query_string else "")
    headers = {h: request.headers[h] for h in FORWARDED if h in request.headers}
    for attempt, backend in enumerate(order):
        try:
            answer = _send(group, backend + target, headers)
        except urllib3.exceptions.HTTPError:
            group.health[backend].failed()
            ERRORS.labels(backend=backend).inc()
            if attempt == 0:
                FAILOVERS.inc()
            continue
        if answer.status == 503 and attempt + 1 < len(order):
            answer.release_conn()
            ERRORS.labels(backend=backend).inc()
            FAILOVERS.inc()
            continue
        group.health[backend].ok()
        PROXIED.labels(backend=backend, status=str(answer.status)).inc()
        return _relay(answer)
    return error_response(503, "unavailable", f"no backend for shard {shard_hex(shard, group.bits)} answered")


def _send(group: Backends, url: str, headers: dict[str, str]) -> urllib3.BaseHTTPResponse:
    """Forward the request; once more on a new connection if the pooled keep-alive one was closed by
    the backend before any answer (its idle timeout raced our reuse). GET and HEAD are idempotent."""
    try:
        return group.pool.request(request.method, url, headers=headers, preload_content=False, redirect=False)
    except urllib3.exceptions.ProtocolError:
        return group.pool.request(request.method, url, headers=headers, preload_content=False, redirect=False)


def _relay(answer: urllib3.BaseHTTPResponse) -> Response:
    def body() -> Iterator[bytes]:
        try:
            yield from answer.stream(64 * 1024, decode_content=False)
        finally:
            answer.release_conn()

    headers = [(k, v) for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP]
    if request.method == "HEAD":  # no body; and not b"", which would reset Content-Length to 0
        answer.release_conn()
        return Response(None, status=answer.status, headers=headers)
    return Response(body(), status=answer.status, headers=headers, direct_passthrough=True)


@router.route("/files/<path:name>", methods=["GET", "HEAD"])
def files(name: str) -> Response:
    return _forward("files", name)


@router.get("/meta/<path:name>")
def meta(name: str) -> Response:
    return _forward("meta", name)


@router.get("/routing")
def routing() -> Response:
    group = backends()
    owned: dict[str, list[str]] = {b: [] for b in group.ring.backends}
    for shard, backend in group.ring.assignment(group.bits).items():
        owned[backend].append(shard_hex(shard, group.bits))
    return jsonify(
        backends=[{"url": b, "healthy": group.health[b].healthy, "shards": owned[b], "failures": group.health[b].failures} for b in group.ring.backends],
        vnodes=group.ring.vnodes,
        shard_bits=group.bits,
    )


@router.get("/readyz")
def readyz() -> Response:
    if any(h.healthy for h in backends().health.values()):
        return jsonify(status="ready")
    return error_response(503, "unavailable", "no files-API backend is healthy")


def install(app: Flask, settings: Settings) -> None:
    app.extensions["desq.backends"] = Backends(settings, interval=settings.web.health_interval)
    app.register_blueprint(router)
