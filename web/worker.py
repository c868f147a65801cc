"""The gunicorn worker class of the web roles: gunicorn's gevent worker, refusing in the contract's JSON.

One greenlet a connection, so a client that sends its request slowly holds a few kilobytes, not a
thread; gunicorn bounds the wait for each request's head by ``keepalive`` seconds and then closes.
What gunicorn refuses before the app sees a request (a request line or header over its limits, a
malformed request line or header, an unsupported transfer coding) it answers with a small HTML
page; here gunicorn still picks the status and writes the access-log line, and the answer becomes
``{"error": "<code>", "message": "..."}`` (CONTRACT section 6), with ``Connection: close``.
"""

from __future__ import annotations

import json
import re
from typing import Any

import gevent
from gunicorn.workers.ggevent import GeventWorker

# The codes of the refusals gunicorn makes itself; any other status gets "http_error".
REFUSALS = {
    400: "bad_request",
    403: "forbidden",
    414: "uri_too_long",
    417: "expectation_failed",
    431: "headers_too_large",
    500: "internal_error",
    501: "not_implemented",
}
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3}) ([^\r\n]*)\r\n")


def refusal(status: int, reason: str, detail: str) -> bytes:
    """The whole HTTP answer for a request gunicorn refused with ``status`` (``detail``: its exception)."""
    message = reason if not detail or status == 500 else f"{reason}: {detail}"
    body = json.dumps({"error": REFUSALS.get(status, "http_error"), "message": message[:200]}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


class _Captured:
    """Stands in for the client socket while gunicorn writes its HTML refusal, keeping the bytes."""

    def __init__(self) -> None:
        self.data = b""

    def gettimeout(self) -> float:
        return 0.0

    def setblocking(self, flag: bool) -> None:
        pass

    def sendall(self, data: bytes) -> None:
        self.data += data

    def send(self, data: bytes) -> int:
        self.data += data
        return len(data)


class JSONGeventWorker(GeventWorker):
    """gunicorn's ``gevent`` worker whose own refusals are the contract's JSON errors, and that lets
    the other connections run after each request."""

    def handle_request(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> bool:
        kept = super().handle_request(listener_name, req, sock, addr)
        # A keep-alive client whose next request is already buffered would otherwise be served
        # again and again without a switch, keeping the worker's other connections waiting.
        try:
            gevent.sleep(0)
        except gevent.GreenletExit:  # the worker is stopping: close this connection quietly
            raise StopIteration() from None
        return kept

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        captured = _Captured()
        super().handle_error(req, captured, addr, exc)
        found = _STATUS_LINE.match(captured.data)
        if found is None:
            return
        status, reason = int(found.group(1)), found.group(2).decode("latin-1")
        detail = str(exc).strip().replace("\r", " ").replace("\n", " ")
        try:
            client.sendall(refusal(status, reason, detail))
        except OSError:
            self.log.debug("Failed to send error message.")
