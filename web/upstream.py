"""The router's HTTP/1.1 client to its backends: keep-alive connections kept idle per backend, each
read through one buffered reader for its whole life, a request head sent in one write, the answer's
head parsed by hand and its body handed on in large chunks.

It is this lean because on the router every request pays for it: urllib3's pool and http.client's
email-based header parser cost several times the CPU of this per request. Under gunicorn's gevent
worker the sockets are gevent's, so the same code serves threads and greenlets; the idle lists are
only appended to and popped from, which is atomic in both.
"""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

CHUNK = 256 * 1024
"""The most bytes read from a backend (and written to the client) at a time; also the largest body read whole."""
BUFFER = 64 * 1024
MAX_HEAD_LINE = 65536
MAX_HEAD_LINES = 200
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade"})


class UpstreamError(OSError):
    """The backend could not be reached, or broke off (or spoke no HTTP) before its answer's head ended."""


@dataclass(frozen=True)
class Origin:
    """Where a backend URL points: what to connect to, the Host header, the path prefix."""

    tls: bool
    host: str
    port: int
    authority: str
    prefix: str

    @classmethod
    def of(cls, url: str) -> Origin:
        parts = urlsplit(url)
        tls = parts.scheme == "https"
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} is not an http(s) URL")
        return cls(tls, parts.hostname, parts.port or (443 if tls else 80), parts.netloc.rpartition("@")[2], parts.path.rstrip("/"))


def connection_names(headers: list[tuple[str, str]]) -> set[str]:
    """The lower-cased header names a ``Connection`` header lists: hop-by-hop too (RFC 9110 7.6.1)."""
    return {token.strip().lower() for name, value in headers if name.lower() == "connection" for token in value.split(",") if token.strip()}


def request_head(method: str, target: str, authority: str, headers: list[tuple[str, str]]) -> bytes:
    """An HTTP/1.1 request head (the names and values are a WSGI server's: latin-1 text, no CR or LF)."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {authority}"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def parse_status(line: bytes) -> tuple[int, str, bool]:
    """``HTTP/1.1 200 OK`` -> (200, "OK", whether the version is 1.1 or later); UpstreamError if it is not a status line."""
    version, _, rest = line.decode("latin-1").rstrip("\r\n").partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or len(code) != 3 or not (code.isascii() and code.isdigit()):
        raise UpstreamError(f"not an HTTP/1.x status line: {line[:80]!r}")
    return int(code), reason, version != "HTTP/1.0"


def parse_header_lines(lines: list[bytes]) -> list[tuple[str, str]]:
    """Header lines (CRLF kept or not) -> (name, value) pairs; a folded line continues the one before."""
    headers: list[tuple[str, str]] = []
    for raw in lines:
        text = raw.decode("latin-1").rstrip("\r\n")
        if text[:1] in (" ", "\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, value + " " + text.strip(" \t"))
            continue
        name, colon, value = text.partition(":")
        if not colon or not name or name != name.strip():
            raise UpstreamError(f"not a header line: {raw[:80]!r}")
        headers.append((name, value.strip(" \t")))
    return headers


def framing(method: str, status: int, headers: list[tuple[str, str]]) -> int | str | None:
    """How the answer's body ends (RFC 9112 6.3): its length (0 for none), "chunked", or None: at close."""
    if method == "HEAD" or status < 200 or status in (204, 304):
        return 0
    length = None
    for name, value in headers:
        lower = name.lower()
        if lower == "transfer-encoding":
            return "chunked" if value.lower().rsplit(",", 1)[-1].strip() == "chunked" else None
        if lower == "content-length":
            if not (value.isascii() and value.isdigit()) or (length is not None and int(value) != length):
                raise UpstreamError(f"bad Content-Length {value!r}")
            length = int(value)
    return length


_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")


class Connection:
    """One keep-alive connection to a backend, with its buffered reader."""

    def __init__(self, origin: Origin, connect_timeout: float, read_timeout: float) -> None:
        self.origin = origin
        sock = socket.create_connection((origin.host, origin.port), timeout=connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if origin.tls:
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=origin.host)
            sock.settimeout(read_timeout)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.reader = sock.makefile("rb", buffering=BUFFER)
        self.reused = False

    def close(self) -> None:
        self.reader.close()
        self.sock.close()

    def readline(self) -> bytes:
        line = self.reader.readline(MAX_HEAD_LINE)
        if not line.endswith(b"\n"):
            raise UpstreamError("the backend closed the connection, or sent an overlong line, inside an answer's head")
        return line


class Answer:
    """A backend's answer: status and headers read, the body still on the connection.

    Read the body with ``whole()`` or ``chunks()``, or call ``discard()``; the connection goes back
    to its pool only when the body was read to its end and the backend keeps it open."""

    def __init__(self, pool: Pool, conn: Connection, status: int, reason: str, headers: list[tuple[str, str]], length: int | str | None, keep: bool) -> None:
        self.pool, self.conn = pool, conn
        self.status, self.reason, self.headers = status, reason, headers
        self.length, self.keep = length, keep

    @property
    def small(self) -> bool:
        """Whether the body has a known length of at most CHUNK bytes (so ``whole()`` reads it in one go)."""
        return isinstance(self.length, int) and self.length <= CHUNK

    def whole(self) -> bytes:
        """The body of a ``small`` answer, in one read."""
        assert isinstance(self.length, int) and self.length <= CHUNK
        data = self.conn.reader.read(self.length) if self.length else b""
        if len(data) != self.length:
            self.discard()
            raise UpstreamError(f"the backend closed the connection {len(data)} bytes into a body of {self.length}")
        self._done()
        return data

    def chunks(self) -> Iterator[bytes]:
        """The body, at most CHUNK bytes at a time, as the backend sends it; stopping early closes the connection."""
        finished = False
        try:
            if self.length == "chunked":
                yield from self._dechunk()
            elif self.length is None:
                while data := self.conn.reader.read1(CHUNK):
                    yield data
            else:
                left = self.length
                while left:
                    data = self.conn.reader.read1(min(left, CHUNK))
                    if not data:
                        raise UpstreamError(f"the backend closed the connection {self.length - left} bytes into a body of {self.length}")
                    left -= len(data)
                    yield data
            finished = True
        finally:
            self._done() if finished else self.discard()

    def _dechunk(self) -> Iterator[bytes]:
        while True:
            size_text = self.conn.readline().split(b";", 1)[0].strip(b" \t\r\n")
            if not _CHUNK_SIZE.fullmatch(size_text):  # int(x, 16) would take "-5", "0x10", "1_0"
                raise UpstreamError(f"bad chunk size {size_text[:20]!r}")
            size = int(size_text, 16)
            if size == 0:
                while self.conn.readline() not in (b"\r\n", b"\n"):
                    pass  # trailer fields: not passed on
                return
            while size:
                data = self.conn.reader.read1(min(size, CHUNK))
                if not data:
                    raise UpstreamError("the backend closed the connection inside a chunk")
                size -= len(data)
                yield data
            if self.conn.readline() not in (b"\r\n", b"\n"):
                raise UpstreamError("a chunk's data does not end where its size says")

    def _done(self) -> None:
        if self.keep and self.length is not None:
            self.pool.release(self.conn)
        else:
            self.conn.close()

    def release(self) -> None:
        """Finish an answer that has no body (HEAD, 304, ...)."""
        if self.length == 0:
            self._done()
        else:
            self.discard()

    def discard(self) -> None:
        """Drop the answer unread: its connection is closed."""
        self.conn.close()


class Pool:
    """Idle keep-alive connections per backend URL; a request takes one (or opens one) and the end of its answer's body gives it back."""

    def __init__(self, *, connect_timeout: float = 2.0, read_timeout: float = 30.0, max_idle: int = 64) -> None:
        self.connect_timeout, self.read_timeout, self.max_idle = connect_timeout, read_timeout, max_idle
        self._idle: dict[Origin, list[Connection]] = {}
        self._origins: dict[str, Origin] = {}

    def origin(self, url: str) -> Origin:
        origin = self._origins.get(url)
        if origin is None:
            origin = self._origins[url] = Origin.of(url)
        return origin

    def release(self, conn: Connection) -> None:
        idle = self._idle.setdefault(conn.origin, [])
        if len(idle) < self.max_idle:
            conn.reused = True
            idle.append(conn)
        else:
            conn.close()

    def _take(self, origin: Origin) -> Connection:
        idle = self._idle.get(origin)
        while idle:
            try:
                return idle.pop()
            except IndexError:  # another thread took the last one
                break
        return Connection(origin, self.connect_timeout, self.read_timeout)

    def request(self, backend: str, method: str, path: str, headers: list[tuple[str, str]]) -> Answer:
        """Send ``method path`` to ``backend`` and read the answer's head (GET and HEAD: a pooled
        connection the backend had closed while idle is retried once on a fresh one). UpstreamError,
        or the OSError of the connect, when the backend gives no answer."""
        origin = self.origin(backend)
        head = request_head(method, origin.prefix + path, origin.authority, headers)
        while True:
            conn = self._take(origin)
            try:
                return self._exchange(conn, method, head)
            except OSError as exc:
                conn.close()
                if not conn.reused or isinstance(exc, TimeoutError):
                    raise

    def _exchange(self, conn: Connection, method: str, head: bytes) -> Answer:
        conn.sock.sendall(head)
        while True:
            status, reason, keep = parse_status(conn.readline())
            lines = []
            while (line := conn.readline()) not in (b"\r\n", b"\n"):
                lines.append(line)
                if len(lines) > MAX_HEAD_LINES:
                    raise UpstreamError("more than 200 header lines")
            if not 100 <= status < 200:
                break  # an interim answer (100 Continue, 103 Early Hints) is skipped
        headers = parse_header_lines(lines)
        for name, value in headers:
            if name.lower() == "connection":
                tokens = value.lower()
                keep = "keep-alive" in tokens if not keep else "close" not in tokens
        return Answer(self, conn, status, reason, headers, framing(method, status, headers), keep)

    def close(self) -> None:
        """Close every idle connection."""
        for idle in self._idle.values():
            while idle:
                idle.pop().close()
