"""``POST /batch`` (CONTRACT section 6): the files API's view, and the router's forwarding of it.

The body is read bounded (at most ``MAX_BODY`` bytes) and checked whole before any tar byte: a
body that is too large, not JSON or of the wrong shape is a JSON 400. Tokens apply as for /files.

The router proxies the whole batch to the backend owning most of its entries' shards (any backend
can read every container: storage is shared; the owner has the warm index cache), with failover to
the next one on a connect error or a 503, as for /files. Splitting the batch by owner would make
the router merge several streams in the order asked, holding members of one while it waits for
another, and a failover midway would be a partial tar; one backend keeps the answer a plain
byte stream the router relays unbuffered.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator
from typing import Any

import urllib3
from flask import Blueprint, Response, current_app, request
from prometheus_client import Counter

from desq.batch import MAX_BODY, MAX_ENTRIES, BatchReader, Failure, Item, Served, parse_request
from desq.files import BadRequest
from desq.layout import MAX_NAME_BYTES, LayoutError
from desq.mode import Mode, mode_for
from desq.tarstream import tar_stream
from web import metrics
from web.errors import error_response
from web.files import require_token, service

BATCHES = Counter("desq_batch_requests_total", "POST /batch requests answered", ["status"])
BATCH_FILES = Counter("desq_batch_files_total", "Entries of batches, by outcome (served or the error code)", ["outcome"])
ROUTED = Counter("desq_router_batch_total", "POST /batch forwarded by the router", ["backend", "status"])
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade"}
FORWARDED = ("Authorization", "Content-Type", "Accept", "User-Agent")

batch = Blueprint("batch", __name__)
batch.before_request(require_token)
routed = Blueprint("routed_batch", __name__)


def read_body() -> bytes:
    """The request body, at most MAX_BODY bytes (BadRequest past that, before reading it all)."""
    declared = request.content_length
    if declared is not None and declared > MAX_BODY:
        raise BadRequest(f"the request body is {declared} bytes; at most {MAX_BODY} are allowed")
    parts, held = [], 0
    while held <= MAX_BODY and (part := request.stream.read(MAX_BODY + 1 - held)):
        parts.append(part)
        held += len(part)
    if held > MAX_BODY:
        raise BadRequest(f"the request body is over {MAX_BODY} bytes")
    return b"".join(parts)


def _asks() -> tuple[bytes, list] | Response:
    try:
        body = read_body()
        return body, parse_request(body, mode_for(current_app.extensions["desq.settings"].layout))
    except BadRequest as exc:
        BATCHES.labels(status="400").inc()
        return error_response(400, "bad_request", str(exc))


def _count(item: Item, result: Served | Failure) -> None:
    if isinstance(result, Failure):
        BATCH_FILES.labels(outcome=result.code).inc()
    else:
        BATCH_FILES.labels(outcome="served").inc()
        metrics.BYTES.inc(result.meta.size)


@batch.post("/batch")
def post_batch() -> Response:
    parsed = _asks()
    if isinstance(parsed, Response):
        return parsed
    files = service()
    chunks = tar_stream(BatchReader(files).results(parsed[1]), files.layout.zone, _count)
    BATCHES.labels(status="200").inc()
    response = Response(chunks, mimetype="application/x-tar", direct_passthrough=True)
    response.headers["Content-Disposition"] = 'attachment; filename="batch.tar"'
    response.headers["Cache-Control"] = "no-store"
    return response


def openapi_operation(mode: Mode) -> dict[str, Any]:
    """``POST /batch`` in the OpenAPI document, its body as ``mode`` wants it."""
    # Any string is a valid entry: one the layout cannot place is an errors.json entry, not a 400.
    name = {"type": "string", "description": f"matching {mode.name_pattern()}, at most {MAX_NAME_BYTES} bytes; any other is reported in errors.json"}
    if mode.takes_created_at:
        entry = {"type": "object", "required": ["uid", "created_at"], "additionalProperties": False, "properties": {"uid": {"oneOf": [name, {"type": "integer"}]}, "created_at": {"type": "string", "description": "YYYY-MM-DD or ISO 8601"}}}
        body = {"type": "object", "required": ["files"], "additionalProperties": False, "properties": {"files": {"type": "array", "items": entry, "minItems": 1, "maxItems": MAX_ENTRIES}}}
    else:
        body = {"type": "object", "required": ["names"], "additionalProperties": False, "properties": {"names": {"type": "array", "items": name, "minItems": 1, "maxItems": MAX_ENTRIES}}}
    error = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    return {
        "summary": "up to 1000 files as one tar stream, in the order asked, then errors.json",
        "security": [{}, {"bearer": []}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
        "responses": {"200": {"description": "a tar stream", "content": {"application/x-tar": {"schema": {"type": "string", "format": "binary"}}}}, "400": error, "401": error, "503": error},
    }


# --- the router ------------------------------------------------------------------------------


def owner_order(owners: list[str], backends: list[str]) -> list[str]:
    """Where the router sends a batch: the backend owning most entries (the first asked of a tie),
    then every other backend in ``backends``' order."""
    if not owners:
        return backends
    tally = Tally(owners)
    most = max(tally.values())
    first = next(o for o in owners if tally[o] == most)
    return [first] + [b for b in backends if b != first]


@routed.post("/batch")
def route_batch() -> Response:
    denied = require_token()
    if denied is not None:
        return denied
    parsed = _asks()
    if isinstance(parsed, Response):
        return parsed
    body, asks = parsed
    group = current_app.extensions["desq.backends"]
    mode = mode_for(current_app.extensions["desq.settings"].layout)
    owners = []
    for ask in asks:
        try:
            owners.append(group.order(mode.shard_of(ask.name))[0])
        except (LayoutError, IndexError):
            continue  # a malformed entry: the backend reports it in errors.json
    order = owner_order(owners, group.order(0))
    headers = {h: request.headers[h] for h in FORWARDED if h in request.headers}
    for attempt, backend in enumerate(order):
        breaker = group.health.get(backend)  # None once the backend has left the ring meanwhile
        try:
            answer = group.batches.request("POST", backend + "/batch", body=body, headers=headers, preload_content=False, redirect=False)
        except urllib3.exceptions.HTTPError:
            if breaker is not None:
                breaker.failed()
            ROUTED.labels(backend=backend, status="error").inc()
            continue
        if answer.status == 503 and attempt + 1 < len(order):
            _let_go(answer)
            ROUTED.labels(backend=backend, status="503").inc()
            continue
        if breaker is not None:
            breaker.ok()
        ROUTED.labels(backend=backend, status=str(answer.status)).inc()
        return _relay(answer)
    return error_response(503, "unavailable", "no files-API backend answered the batch")


def _let_go(answer: urllib3.BaseHTTPResponse) -> None:
    """Give the connection back to the pool only when its answer was read to the end; else close it
    (urllib3 would hand out a connection still in the middle of the old answer)."""
    if not answer.isclosed():
        answer.close()
    answer.release_conn()


def _relay(answer: urllib3.BaseHTTPResponse) -> Response:
    """The backend's answer, streamed unchanged; a backend that stops midway stops this one too."""

    def body() -> Iterator[bytes]:
        try:
            yield from answer.stream(256 << 10, decode_content=False)
        finally:
            _let_go(answer)

    headers = [(k, v) for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP]
    return Response(body(), status=answer.status, headers=headers, direct_passthrough=True)


