"""The router: forwards each /files and /meta request to the files-API backend owning its shard.

The shard comes from the layout (the same validation as the files API, so a malformed name is a
400 here too); the owner and its failover come from the consistent-hash ring. The proxy streams:
headers that matter go through (Range, If-None-Match, Authorization), hop-by-hop ones do not (with
``web.api_tokens`` set, the router checks the token itself before asking any backend), and the
backend's status, headers and body come back unchanged and unbuffered over pooled keep-alive
connections. A connect error or a 503 from the owner sends the request to the next choice.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import urllib3
from flask import Blueprint, Flask, Response, current_app, jsonify, request
from prometheus_client import Counter

from desq.files import BadRequest
from desq.mode import mode_for
from desq.layout import LayoutError, shard_hex
from desq.settings import Settings
from web.errors import error_response
from web.files import require_token
from web.registry import Backends

router = Blueprint("router", __name__)

FORWARDED = ("Range", "If-Match", "If-Unmodified-Since", "If-None-Match", "If-Range", "If-Modified-Since", "Authorization", "Accept", "User-Agent")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade"}
PROXIED = Counter("desq_router_requests_total", "Requests forwarded", ["backend", "status"])
ERRORS = Counter("desq_router_errors_total", "Backends that failed a forwarded request", ["backend"])
FAILOVERS = Counter("desq_router_failovers_total", "Requests sent to a second choice")


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
