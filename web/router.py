"""The router: forwards each /files and /meta request to the files-API backend owning its shard.

The shard comes from the layout (the same validation as the files API, so a malformed name is a
400 here too); the owner and its failover come from the consistent-hash ring. Every end-to-end
request header goes through (Range, the conditional headers, Authorization, Accept-Encoding, ...);
hop-by-hop ones and Host do not, nor (no request body is forwarded) those describing a body. With
``web.api_tokens`` set, the router checks the token itself before asking any backend. The backend's
status, headers and body come back unchanged and unbuffered over keep-alive connections
(``web.upstream``). A connect error or a 503 from the owner sends the request to the next choice.

A forwarded GET or HEAD never enters Flask: ``Forwarder`` wraps the app's WSGI callable and answers
it with no request or response objects (on two cores the router shares the CPU with its backends,
so what it spends per request is what it costs in throughput). Anything it does not forward, every
refusal included, goes on to the Flask app, whose views below give the contract's answers.
"""

from __future__ import annotations

import functools
import hmac
import json
import logging
import re
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote

from flask import Blueprint, Flask, Response, current_app, jsonify
from prometheus_client import Counter

from desq.conditional import made_private
from desq.layout import LayoutError, shard_hex
from desq.mode import mode_for
from desq.settings import Settings
from web import metrics
from web.errors import error_response
from web.files import bearer_token, require_token
from web.registry import Backends
from web.upstream import HOP_BY_HOP, Answer, UpstreamError, connection_names

router = Blueprint("router", __name__)
log = logging.getLogger(__name__)

PROXIED = Counter("desq_router_requests_total", "Requests forwarded", ["backend", "status"])
ERRORS = Counter("desq_router_errors_total", "Backends that failed a forwarded request", ["backend"])
FAILOVERS = Counter("desq_router_failovers_total", "Requests sent to a second choice")
ROUTES = (("/files/", "router.files"), ("/meta/", "router.meta"))
NOT_FORWARDED = HOP_BY_HOP | {"host", "content-length", "content-type", "expect"}
"""Request headers kept back: hop-by-hop ones, Host (the backend's own is sent), and those that
describe a request body, which the router never forwards."""
NOT_RELAYED = HOP_BY_HOP | {"date", "server"}
"""Answer headers kept back: hop-by-hop ones, and the two the serving gunicorn writes itself (it would
drop the backend's after checking them)."""

StartResponse = Callable[..., Any]
_UNRESERVED = re.compile(r"[A-Za-z0-9._~-]+")
"""A name of these characters only needs no quoting (quote() costs more than the match)."""


@functools.cache
def _series(metric: Counter, *values: str) -> Any:
    return metric.labels(*values)


def forwarded_headers(environ: dict[str, Any]) -> list[tuple[str, str]]:
    """The request headers a backend gets, from a WSGI environ: every ``HTTP_*`` one but hop-by-hop
    ones (RFC 9110's and those the request's ``Connection`` names) and Host."""
    listed = environ.get("HTTP_CONNECTION")
    dropped = NOT_FORWARDED | {t.strip().lower() for t in listed.split(",")} if listed else NOT_FORWARDED
    headers = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = key[5:].replace("_", "-").title()
            if name.lower() not in dropped:
                headers.append((name, value))
    return headers


def relayed_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The backend's answer headers a client gets: all but hop-by-hop ones, Date and Server."""
    listed = connection_names(headers)
    dropped = NOT_RELAYED | listed if listed else NOT_RELAYED
    return [(name, value) for name, value in headers if name.lower() not in dropped]


class Forwarder:
    """The router's WSGI callable: GET and HEAD of /files/<name> and /meta/<name> forwarded to their
    owner when the token (if any) is good, the name is the layout's and there is a backend; all
    else goes to ``app`` (the Flask app's own WSGI callable)."""

    def __init__(self, app: Callable[[dict[str, Any], StartResponse], Iterable[bytes]], settings: Settings, group: Backends) -> None:
        self.app = app
        self.group = group
        self.tokens = [token.encode() for token in settings.web.api_tokens]
        self.shard_of = mode_for(settings.layout).shard_of

    def authorized(self, header: str) -> bool:
        """Whether an Authorization header carries a configured token (any header when none is)."""
        if not self.tokens:
            return True
        given, ok = bearer_token(header), False
        for token in self.tokens:  # every one, whichever matches: timing says nothing
            ok |= hmac.compare_digest(given, token)
        return ok

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        if method == "GET" or method == "HEAD":
            path = environ.get("PATH_INFO", "")
            for prefix, endpoint in ROUTES:
                if path.startswith(prefix):
                    try:
                        return self.forward(environ, start_response, method, prefix, path[len(prefix) :], endpoint)
                    except Exception:  # noqa: BLE001 - as the Flask app's own handler: JSON, never a traceback
                        log.exception("unhandled error forwarding %s", prefix)
                        return _error(start_response, "500 INTERNAL SERVER ERROR", "internal_error", "internal error")
        return self.app(environ, start_response)

    def forward(self, environ: dict[str, Any], start_response: StartResponse, method: str, prefix: str, raw: str, endpoint: str) -> Iterable[bytes]:
        started = time.perf_counter()
        name = raw.encode("latin-1").decode("utf-8", "replace")  # as werkzeug decodes PATH_INFO
        if not name or name[0] == "/" or not self.authorized(environ.get("HTTP_AUTHORIZATION", "")):
            return self.app(environ, start_response)
        try:
            shard = self.shard_of(name)
        except LayoutError:
            return self.app(environ, start_response)
        order = self.group.order(shard)
        if not order:
            return self.app(environ, start_response)
        query = environ.get("QUERY_STRING")
        target = prefix + (name if _UNRESERVED.fullmatch(name) else quote(name, safe="")) + ("?" + query if query else "")
        answer = self.answer(order, method, target, forwarded_headers(environ))
        if answer is None:
            metrics.answered(endpoint, 503, time.perf_counter() - started)
            return _error(start_response, "503 SERVICE UNAVAILABLE", "unavailable", f"no backend for shard {shard_hex(shard, self.group.bits)} answered")
        answer, body = answer
        headers = relayed_headers(answer.headers)
        if self.tokens:
            headers = [(k, made_private(v)) if k.lower() == "cache-control" else (k, v) for k, v in headers]
        start_response(f"{answer.status} {answer.reason}", headers)
        metrics.answered(endpoint, answer.status, time.perf_counter() - started)
        return answer.chunks() if body is None else body

    def answer(self, order: list[str], method: str, target: str, headers: list[tuple[str, str]]) -> tuple[Answer, list[bytes] | None] | None:
        """The first answer of ``order`` that is not a connect error (or a 503 while there is a next
        choice), with its body when it is small (read whole, so a backend breaking off in it is a
        failure too) or None to stream it; None when no backend answered."""
        for attempt, backend in enumerate(order):
            try:
                answer = self.group.upstream.request(backend, method, target, headers)
                if answer.status == 503 and attempt + 1 < len(order):
                    answer.discard()
                    _series(ERRORS, backend).inc()
                    FAILOVERS.inc()
                    continue
                body = None
                if method == "HEAD" or answer.length == 0:
                    answer.release()
                    body = []
                elif answer.small:
                    body = [answer.whole()]
            except (OSError, UpstreamError):
                self._failed(backend)
                if attempt == 0:
                    FAILOVERS.inc()
                continue
            breaker = self.group.health.get(backend)
            if breaker is not None:
                breaker.ok()
            _series(PROXIED, backend, str(answer.status)).inc()
            return answer, body
        return None

    def _failed(self, backend: str) -> None:
        breaker = self.group.health.get(backend)
        if breaker is not None:
            breaker.failed()
        _series(ERRORS, backend).inc()


def _error(start_response: StartResponse, status: str, code: str, message: str) -> list[bytes]:
    """The contract's JSON error, straight to WSGI."""
    body = json.dumps({"error": code, "message": message}).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def backends() -> Backends:
    return current_app.extensions["desq.backends"]


def _refusal(name: str) -> Response:
    """What the router answers for a /files or /meta request ``Forwarder`` did not forward."""
    denied = require_token()  # the router's own web.api_tokens, checked before any backend is asked
    if denied is not None:
        return denied
    settings: Settings = current_app.extensions["desq.settings"]
    try:
        mode_for(settings.layout).shard_of(name)
    except LayoutError as exc:
        return error_response(400, "bad_request", str(exc))
    return error_response(503, "unavailable", "the router has no files-API backends")


@router.route("/files/<path:name>", methods=["GET", "HEAD"])
def files(name: str) -> Response:
    return _refusal(name)


@router.get("/meta/<path:name>")
def meta(name: str) -> Response:
    return _refusal(name)


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
    """The router's views on ``app``, and its WSGI callable wrapped in the ``Forwarder``."""
    group = Backends(settings, interval=settings.web.health_interval)
    app.extensions["desq.backends"] = group
    app.register_blueprint(router)
    app.wsgi_app = Forwarder(app.wsgi_app, settings, group)  # type: ignore[method-assign]
