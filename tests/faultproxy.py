"""A fault-injecting HTTP/1.1 forwarding proxy for tests (standard library only).

Point a client at ``proxy.url`` instead of the real server; every request is forwarded unchanged
(method, path and query, headers including ``Host``, body) to the upstream and the answer is
streamed back, unless a planned fault matches it::

    with FaultProxy("http://127.0.0.1:5055") as proxy:
        proxy.plan(Fault.slow_down(method="GET"), times=2)    # the next two GETs answer 503
        proxy.always = Fault.error(500, where=query_has("partNumber"))
        ...
        assert proxy.count("GET") == 3

``proxy.chaos = Chaos(0.1, [Fault.error(500), Fault.reset()], seed=7)`` adds seeded random faults:
each request no planned or ``always`` fault took gets one of them with probability 0.1.

Keeping ``Host`` as the client sent it keeps SigV4 signatures valid (they cover it).
"""

from __future__ import annotations

import http.client
import random
import socket
import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal
from urllib.parse import parse_qs, urlsplit

Kind = Literal["status", "reset", "delay", "truncate", "lost"]
Where = Callable[[str], bool]
"""A predicate on the request target (``/bucket/key?partNumber=2&uploadId=...``)."""

_DROP = {"connection", "keep-alive", "proxy-connection", "expect"}  # hop-by-hop; we answered 100-continue
_CHUNK = 64 << 10


def query_has(name: str, value: str | None = None) -> Where:
    """A predicate: the query has parameter ``name`` (with ``value``, if given)."""

    def where(target: str) -> bool:
        values = parse_qs(urlsplit(target).query, keep_blank_values=True).get(name)
        return values is not None and (value is None or value in values)

    return where


@dataclass(frozen=True)
class Fault:
    """One injected failure, applied to requests matching ``method`` and ``where`` (None: any)."""

    kind: Kind
    status: int = 0
    code: str = ""
    seconds: float = 0.0
    after_bytes: int = 0
    method: str | None = None
    where: Where | None = None

    def matches(self, method: str, target: str) -> bool:
        return (self.method is None or self.method == method) and (self.where is None or self.where(target))

    @classmethod
    def error(cls, status: int = 500, code: str = "InternalError", *, method: str | None = None, where: Where | None = None) -> Fault:
        """Answer ``status`` with an S3-style XML error body, without forwarding."""
        return cls("status", status=status, code=code, method=method, where=where)

    @classmethod
    def slow_down(cls, *, method: str | None = None, where: Where | None = None) -> Fault:
        return cls.error(503, "SlowDown", method=method, where=where)

    @classmethod
    def unavailable(cls, *, method: str | None = None, where: Where | None = None) -> Fault:
        return cls.error(503, "ServiceUnavailable", method=method, where=where)

    @classmethod
    def reset(cls, *, method: str | None = None, where: Where | None = None) -> Fault:
        """Close the connection with an RST, answering nothing."""
        return cls("reset", method=method, where=where)

    @classmethod
    def delay(cls, seconds: float, *, method: str | None = None, where: Where | None = None) -> Fault:
        """Wait ``seconds`` before forwarding (to trip the client's read timeout)."""
        return cls("delay", seconds=seconds, method=method, where=where)

    @classmethod
    def lost(cls, *, method: str | None = None, where: Where | None = None) -> Fault:
        """Forward (the server does the request), then close with an RST: the answer is lost."""
        return cls("lost", method=method, where=where)

    @classmethod
    def truncate(cls, after_bytes: int, *, method: str | None = None, where: Where | None = None) -> Fault:
        """Forward, but close after ``after_bytes`` of the body (Content-Length stays the original)."""
        return cls("truncate", after_bytes=after_bytes, method=method, where=where)


@dataclass
class Chaos:
    """Seeded random faults: a request gets one of ``faults`` (uniformly) with probability ``rate``."""

    rate: float
    faults: Sequence[Fault]
    seed: int = 0
    _random: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def draw(self, method: str, target: str) -> Fault | None:
        """The fault for this request, or None (called under the proxy's lock: one sequence per seed)."""
        if self._random.random() >= self.rate:
            return None
        fault = self._random.choice(list(self.faults))
        return fault if fault.matches(method, target) else None


@dataclass(frozen=True)
class Seen:
    """One request the proxy received, and the fault applied to it (if any)."""

    method: str
    target: str
    fault: Kind | None
    applied: Fault | None = None


class FaultProxy:
    """A forwarding proxy on 127.0.0.1 with a thread-safe plan of faults; a context manager."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.always: Fault | None = None
        """Applied to every matching request that no queued fault took."""
        self.chaos: Chaos | None = None
        """Random faults for the requests that neither a queued fault nor ``always`` took."""
        self._queue: list[Fault] = []
        self._seen: list[Seen] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._open: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # --- plan and inspection ----------------------------------------------------------------

    def plan(self, fault: Fault, times: int = 1) -> None:
        """Queue ``fault`` for the next ``times`` requests it matches."""
        with self._lock:
            self._queue.extend([fault] * times)

    def clear(self) -> None:
        """Drop every queued fault, the ``always`` fault and the ``chaos``."""
        with self._lock:
            self._queue.clear()
            self.always = None
            self.chaos = None

    @property
    def seen(self) -> list[Seen]:
        """Every request so far, in arrival order."""
        with self._lock:
            return list(self._seen)

    def count(self, method: str | None = None, where: Where | None = None, *, faulted: bool | None = None) -> int:
        """How many requests matched (and, with ``faulted``, had a fault applied or not)."""
        return sum(
            1 for s in self.seen
            if (method is None or s.method == method) and (where is None or where(s.target))
            and (faulted is None or (s.fault is not None) == faulted)
        )

    @property
    def faults_applied(self) -> int:
        return self.count(faulted=True)

    def _take(self, method: str, target: str) -> Fault | None:
        with self._lock:
            fault = next((f for f in self._queue if f.matches(method, target)), None)
            if fault is not None:
                self._queue.remove(fault)
            elif self.always is not None and self.always.matches(method, target):
                fault = self.always
            elif self.chaos is not None:
                fault = self.chaos.draw(method, target)
            self._seen.append(Seen(method, target, fault.kind if fault else None, fault))
            return fault

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._stopping.clear()
        self._server = _Server(("127.0.0.1", 0), _Handler, self)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="faultproxy")
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, cut open connections, and join every thread."""
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        with self._lock:
            for sock in self._open:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self._server.server_close()  # joins the handler threads (block_on_close)
        assert self._thread is not None
        self._thread.join()
        self._server = self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # so server_close() joins them
    block_on_close = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], proxy: FaultProxy) -> None:
        self.proxy = proxy
        super().__init__(address, handler)

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients that gave up (timeouts) or connections we cut are expected here


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes: no 40 ms delayed-ACK stall
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.proxy._lock:
            self.server.proxy._open.add(self.connection)
        if self.server.proxy._stopping.is_set():  # accepted while stop() was cutting connections
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def finish(self) -> None:
        with self.server.proxy._lock:
            self.server.proxy._open.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _read_body(self) -> bytes:
        """The request body as sent (chunked bodies are kept chunked, raw)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raw = bytearray()
            while True:
                line = self.rfile.readline()
                raw += line
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while (trailer := self.rfile.readline()) not in (b"\r\n", b"\n", b""):
                        raw += trailer
                    return bytes(raw + b"\r\n")
                raw += self.rfile.read(size + 2)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _handle(self) -> None:
        proxy = self.server.proxy
        body = self._read_body()
        fault = proxy._take(self.command, self.path)
        if fault is not None and fault.kind == "reset":
            self._reset()
            return
        if fault is not None and fault.kind == "status":
            self._send_error(fault)
            return
        if fault is not None and fault.kind == "delay" and proxy._stopping.wait(fault.seconds):
            self.close_connection = True
            return
        if fault is not None and fault.kind == "lost":
            self._forward(body, None, lose_answer=True)
            return
        self._forward(body, fault.after_bytes if fault is not None and fault.kind == "truncate" else None)

    def _reset(self) -> None:
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _handle

    def _send_error(self, fault: Fault) -> None:
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{fault.code}</Code><Message>injected by faultproxy</Message>"
            "<RequestId>faultproxy</RequestId></Error>"
        ).encode()
        self.send_response(fault.status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(xml)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(xml)

    def _forward(self, body: bytes, cut_after: int | None, *, lose_answer: bool = False) -> None:
        proxy = self.server.proxy
        upstream = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=60)
        try:
            upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in _DROP:
                    upstream.putheader(name, value)
            upstream.endheaders(body or None)
            response = upstream.getresponse()
            if lose_answer:
                response.read()
                self._reset()
                return
            self.send_response_only(response.status, response.reason)
            chunked = response.length is None  # chunked or read-to-EOF upstream: we send it chunked
            for name, value in response.getheaders():
                if name.lower() not in _DROP and name.lower() != "transfer-encoding":
                    self.send_header(name, value)
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            sent = 0
            while piece := response.read(_CHUNK):
                if cut_after is not None:
                    piece = piece[: max(0, cut_after - sent)]
                if piece:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                sent += len(piece)
                if cut_after is not None and sent >= cut_after:
                    break
            if cut_after is not None:
                self.close_connection = True  # the client sees a body shorter than announced
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
            elif chunked:
                self.wfile.write(b"0\r\n\r\n")
        finally:
            upstream.close()
