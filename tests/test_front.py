"""The web front as the Procfile starts it, under slow and abusive clients.

The ``web`` and ``router`` lines run exactly as ``desq.procfile.process_types`` gives them (``PORT``
put in as honcho would). 300 connections send a request line and then a header line every few
seconds, never finishing (reconnecting when the server drops them); meanwhile ordinary clients
must be answered correctly within 2 s, every time. Requests gunicorn refuses itself get the
contract's JSON error and a closed connection.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from desq.procfile import process_types
from desq.settings import load_settings
from desq.storage.local import LocalStorage
from archives import pack
from test_files_gunicorn import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FILES = {"20251120_1": b"hello, front\n", "20251120_2": os.urandom(70_000)}
SLOW_CLIENTS = 300
HEADER_EVERY_S = 3.0
HOLD_S = 20.0
PROBE_DEADLINE_S = 2.0


def _line(name: str) -> str:
    layout = load_settings(env={}).layout
    return dict(process_types(layout.shard_bits, layout.queue_count))[name]


def _get(port: int, path: str, timeout: float = PROBE_DEADLINE_S) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


class Line:
    """One Procfile line running under ``sh -c`` in its own session, as honcho starts it."""

    def __init__(self, name: str, config: Path, log: Path, port: int | None = None) -> None:
        self.port, self.log = port or free_port(), log
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DESQ_", "WEB_", "GUNICORN_")) and k not in ("PORT", "BIND", "PROMETHEUS_MULTIPROC_DIR")}
        env |= {"DESQ_CONFIG": str(config), "PORT": str(self.port), "PATH": f"{BIN}:{os.environ['PATH']}", "PYTHONUNBUFFERED": "1"}
        with log.open("wb") as out:
            self.process = subprocess.Popen(["/bin/sh", "-c", _line(name)], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_for(self, path: str, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            try:
                if _get(self.port, path)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{path} not 200 within {seconds}s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("front")
    pack(LocalStorage(root / "archive"), {name: (data, "application/x-test", None) for name, data in FILES.items()})
    web_port = free_port()
    path = root / "desq.toml"
    path.write_text(f'data_dir = "{root / "data"}"\n[archive]\nurl = "{root / "archive"}"\n[web]\nbackends = ["http://127.0.0.1:{web_port}"]\nhealth_interval = 1\n')
    yield path


@pytest.fixture(scope="module")
def web(config: Path) -> Iterator[Line]:
    backend = load_settings(str(config), env={}).web.backends[0]  # the router's backend: this line
    line = Line("web", config, config.parent / "web.log", port=int(backend.rsplit(":", 1)[1]))
    line.wait_for("/healthz")
    yield line
    line.stop()


@pytest.fixture(scope="module")
def router(config: Path, web: Line) -> Iterator[Line]:
    line = Line("router", config, config.parent / "router.log")
    line.wait_for("/readyz")
    yield line
    line.stop()


class SlowClients:
    """``count`` connections that each send a request line, then a header line every ``every`` s, forever."""

    def __init__(self, port: int, count: int, every: float) -> None:
        self.port, self.count, self.every = port, count, every
        self.connects = self.drops = self.lines = 0
        self.fewest_open = count
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _open(self) -> socket.socket | None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=1)
            sock.sendall(b"GET /files/20251120_1 HTTP/1.1\r\nHost: slow\r\n")
        except OSError:
            return None
        sock.setblocking(False)
        self.connects += 1
        return sock

    def _alive(self, sock: socket.socket) -> bool:
        """Still waiting for the rest of its request (not answered, not closed)."""
        try:
            sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return True
        except OSError:
            return False
        return False

    def _run(self) -> None:
        socks: list[socket.socket | None] = [None] * self.count
        due = [time.monotonic() + random.uniform(0, self.every) for _ in range(self.count)]
        while not self.stopped.is_set():
            now = time.monotonic()
            for i in range(self.count):
                if socks[i] is None:
                    socks[i] = self._open()
                    continue
                if due[i] > now:
                    continue
                due[i] = now + self.every
                try:
                    if not self._alive(socks[i]):
                        raise OSError("closed by the server")
                    socks[i].send(b"X-Slow-%d: %d\r\n" % (i, self.lines))
                    self.lines += 1
                except OSError:
                    socks[i].close()
                    socks[i] = self._open()  # straight back with another slow request
                    self.drops += 1
            self.fewest_open = min(self.fewest_open, sum(sock is not None for sock in socks))
            self.stopped.wait(0.05)
        for sock in socks:
            if sock is not None:
                sock.close()

    def __enter__(self) -> SlowClients:
        self.thread.start()
        deadline = time.monotonic() + 10
        while self.connects < self.count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join(timeout=10)


def probe_throughout(port: int, seconds: float) -> tuple[int, list[str]]:
    """GET a file and /healthz, five times a second for ``seconds``: how many, and what went wrong."""
    failures, probes = [], 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for path, want in (("/files/20251120_2", FILES["20251120_2"]), ("/healthz", None)):
            start = time.monotonic()
            try:
                status, body = _get(port, path)
                took = time.monotonic() - start
                if status != 200 or (want is not None and body != want):
                    failures.append(f"{path}: {status} at {start - deadline + seconds:.1f}s")
                elif took > PROBE_DEADLINE_S:
                    failures.append(f"{path}: {took:.2f}s at {start - deadline + seconds:.1f}s")
            except OSError as exc:
                failures.append(f"{path}: {exc!r} at {start - deadline + seconds:.1f}s")
            probes += 1
        time.sleep(0.2)
    return probes, failures


def _hold(line: Line) -> None:
    with SlowClients(line.port, SLOW_CLIENTS, HEADER_EVERY_S) as slow:
        assert slow.connects >= SLOW_CLIENTS, f"only {slow.connects} slow connections opened"
        probes, failures = probe_throughout(line.port, HOLD_S)
    assert probes >= 5 * HOLD_S and not failures, f"{len(failures)} of {probes} probes failed ({slow.connects} slow connections, {slow.drops} dropped): {failures[:10]}"
    assert slow.fewest_open >= 0.9 * SLOW_CLIENTS and slow.lines >= SLOW_CLIENTS, f"the slow clients did not keep at it: {vars(slow)}"
    assert line.process.poll() is None, line.log.read_text()[-3000:]
    status, metrics = _get(line.port, "/metrics")  # gathered across the workers
    answered = sum(float(v) for v in re.findall(rb"^desq_http_requests_total\{[^}]*\} (\S+)$", metrics, flags=re.M))
    assert status == 200 and answered >= probes, f"{answered} requests in /metrics, {probes} probes"
    log = line.log.read_text()
    assert "Traceback" not in log and "MonkeyPatchWarning" not in log, log[-3000:]


def test_the_web_line_answers_while_300_clients_send_headers_slowly(web: Line) -> None:
    _hold(web)


def test_the_router_line_answers_while_300_clients_send_headers_slowly(router: Line) -> None:
    _hold(router)


def _raw(port: int, request: bytes) -> tuple[int, dict[str, str], bytes, bool]:
    """Send ``request`` raw; the status, headers and body of the answer, and whether the server then closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        try:
            sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer and close before taking all of an over-long request
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"closed without an answer: {data!r}"
            data += chunk
        head, body = data.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        while len(body) < int(headers["content-length"]):
            chunk = sock.recv(65536)
            assert chunk, "closed before the whole body"
            body += chunk
        try:
            closed = sock.recv(1) == b""
        except ConnectionResetError:
            closed = True
        return int(lines[0].split(" ")[1]), headers, body, closed


ONE = b"GET /files/20251120_1 HTTP/1.1\r\nHost: t\r\n"
REFUSALS = [
    pytest.param(b"GET /files/" + b"a" * 9000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414, "uri_too_long", id="request-line-too-long"),
    pytest.param(ONE + b"X-Pad: " + b"p" * 9000 + b"\r\n\r\n", 431, "headers_too_large", id="header-too-long"),
    pytest.param(ONE + b"".join(b"X-H%d: v\r\n" % i for i in range(150)) + b"\r\n", 431, "headers_too_large", id="too-many-headers"),
    pytest.param(b"this is no request line\r\n\r\n", 400, "bad_request", id="malformed-request-line"),
    pytest.param(b"G(T /healthz HTTP/1.1\r\nHost: t\r\n\r\n", 400, "bad_request", id="bad-method"),
    pytest.param(b"GET /healthz HTTP/7.1\r\nHost: t\r\n\r\n", 400, "bad_request", id="bad-version"),
    pytest.param(ONE + b"Bad Header: v\r\n\r\n", 400, "bad_request", id="bad-header-name"),
    pytest.param(b"POST /files/20251120_1 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: br, chunked\r\n\r\n", 501, "not_implemented", id="unsupported-transfer-encoding"),
    pytest.param(b"POST /files/20251120_1 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n", 400, "bad_request", id="transfer-encoding-not-ending-chunked"),
]


@pytest.mark.parametrize("role", ["web", "router"])
@pytest.mark.parametrize(("request_bytes", "status", "code"), REFUSALS)
def test_refusals_are_the_contracts_json_and_close_the_connection(request: pytest.FixtureRequest, role: str, request_bytes: bytes, status: int, code: str) -> None:
    line: Line = request.getfixturevalue(role)
    got, headers, body, closed = _raw(line.port, request_bytes)
    assert (got, headers["content-type"]) == (status, "application/json"), body[:300]
    answer = json.loads(body)
    assert answer["error"] == code and isinstance(answer["message"], str) and answer["message"]
    assert headers["connection"].lower() == "close" and closed
    assert _get(line.port, "/files/20251120_1") == (200, FILES["20251120_1"])
