"""Three real files-API processes behind a real router process: ownership, failover, streaming."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from desq.archive import store_external
from desq.container import ContainerWriter
from desq.settings import load_settings
from desq.storage.local import LocalStorage
from procs import children
from raw_backend import RawBackend, answer
from test_files_gunicorn import free_port, get
from web.upstream import CHUNK

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LAYOUT = load_settings(env={}).layout


class Gunicorn:
    def __init__(self, env: dict[str, str], log: Path, role: str = "files") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = "web:create_app()" if role == "files" else "web:create_app(role='router')"
        full = {k: v for k, v in os.environ.items() if not k.startswith("DESQ_")} | env | {"BIND": f"127.0.0.1:{self.port}", "WEB_CONCURRENCY": "1", "WEB_THREADS": "8"}
        self.log = open(log, "wb")  # noqa: SIM115
        self.process = subprocess.Popen([str(BIN / "gunicorn"), "-c", "deploy/gunicorn.conf.py", app], cwd=ROOT, env=full, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                if get(self.port, "/healthz")[0] == 200:
                    return
            except OSError:
                pass
            assert self.process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)

    def worker_pid(self) -> int:
        workers = children(self.process.pid)
        assert workers, "no gunicorn worker"
        return workers[0]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            if sig == signal.SIGKILL:
                try:
                    os.kill(self.worker_pid(), sig)
                except AssertionError:
                    pass
            self.process.send_signal(sig)
            self.process.wait(timeout=30)
        self.log.close()


def served(port: int) -> float:
    text = get(port, "/metrics")[2].decode()
    return sum(float(v) for v in re.findall(r'^desq_http_requests_total\{endpoint="files.get_file",status="200"\} ([0-9.e+]+)$', text, flags=re.M))


@pytest.fixture
def archive(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    files = {f"20251120_{i}": f"file {i}\n".encode() * (1 + i % 50) for i in range(1, 301)}
    by_key: dict[str, list[str]] = {}
    for name in files:
        by_key.setdefault(LAYOUT.locate_name(name).container, []).append(name)
    storage = LocalStorage(tmp_path / "archive")
    for key, names in by_key.items():
        out = io.BytesIO()
        with ContainerWriter(out) as w:
            for name in names:
                w.add(name, files[name])
        storage.put(key, out.getvalue())
    return tmp_path / "archive", files


@pytest.fixture
def cluster(tmp_path: Path, archive: tuple[Path, dict[str, bytes]]) -> Iterator[tuple[list[Gunicorn], Gunicorn]]:
    env = {"DESQ_ARCHIVE_URL": str(archive[0])}
    backends = [Gunicorn(env, tmp_path / f"files{i}.log") for i in range(3)]
    router = Gunicorn({"DESQ_WEB_BACKENDS": ",".join(b.url for b in backends), "DESQ_WEB_HEALTH_INTERVAL": "1"}, tmp_path / "router.log", role="router")
    yield backends, router
    for process in [router, *backends]:
        process.stop()


def test_every_read_goes_to_its_owner_and_survives_a_dead_backend(cluster: tuple[list[Gunicorn], Gunicorn], archive: tuple[Path, dict[str, bytes]]) -> None:
    backends, router = cluster
    _, files = archive
    routing = {b["url"]: set(b["shards"]) for b in __import__("json").loads(get(router.port, "/routing")[2])["backends"]}
    assert sorted(routing) == sorted(b.url for b in backends)
    expected = {b.url: 0 for b in backends}
    for name, data in files.items():
        status, headers, body = get(router.port, f"/files/{name}")
        assert (status, body) == (200, data) and headers["etag"]
        owner = next(url for url, shards in routing.items() if LAYOUT.locate_name(name).shard_hex in shards)
        expected[owner] += 1
    assert {b.url: served(b.port) for b in backends} == expected  # each request hit the owning backend
    status, headers, body = get(router.port, "/files/20251120_7", Range="bytes=2-5")
    assert (status, body, headers["content-range"]) == (206, files["20251120_7"][2:6], f"bytes 2-5/{len(files['20251120_7'])}")
    assert get(router.port, "/files/../x")[0] == 400 and get(router.port, "/files/20251120_999")[0] == 404

    backends[0].stop(signal.SIGKILL)  # mid-run
    for name, data in files.items():
        assert get(router.port, f"/files/{name}")[2] == data
    time.sleep(3)
    state = {b["url"]: b["healthy"] for b in __import__("json").loads(get(router.port, "/routing")[2])["backends"]}
    assert state[backends[0].url] is False and state[backends[1].url] and state[backends[2].url]
    assert "desq_router_failovers_total" in get(router.port, "/metrics")[2].decode()


def test_a_two_gib_member_streams_through_in_bounded_memory(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "archive")
    name = "20251120_big"
    key = LAYOUT.locate_name(name).container
    size = 2 << 30
    zeros = bytes(8 << 20)
    ref = store_external(storage, key, name, (zeros for _ in range(size // len(zeros))), size)
    out = io.BytesIO()
    with ContainerWriter(out) as w:
        w.add_external(name, size=size, checksum=ref.checksum, block_checksums=ref.block_checksums, external_key=ref.external_key)
    storage.put(key, out.getvalue())
    backend = Gunicorn({"DESQ_ARCHIVE_URL": str(tmp_path / "archive")}, tmp_path / "files.log")
    router = Gunicorn({"DESQ_WEB_BACKENDS": backend.url}, tmp_path / "router.log", role="router")
    try:
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", router.port, timeout=120)
        conn.request("GET", f"/files/{name}")
        answer = conn.getresponse()
        got = 0
        while chunk := answer.read(1 << 20):
            assert not chunk.strip(b"\x00")
            got += len(chunk)
        assert answer.status == 200 and got == size
        status = Path(f"/proc/{router.worker_pid()}/status").read_text()
        peak_mib = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024
        print(f"\nrouter worker peak RSS while streaming 2 GiB: {peak_mib:.1f} MiB")
        assert peak_mib < 256
    finally:
        router.stop()
        backend.stop()


@pytest.mark.integration
def test_backends_announce_themselves_and_leave(redis_url: str) -> None:
    from web.registry import Backends, announce

    registry = redis_url.rsplit("/", 1)[0] + "/8"
    __import__("redis").Redis.from_url(registry).flushdb()
    settings = load_settings(env={"DESQ_WEB_REGISTRY_URL": registry, "DESQ_WEB_BACKENDS": "http://127.0.0.1:9"})
    stop = threading.Event()
    beat = announce(registry, "http://127.0.0.1:7001", 1.0, stop)
    time.sleep(0.3)
    group = Backends(settings, interval=3600)
    assert group.ring.backends == ["http://127.0.0.1:7001", "http://127.0.0.1:9"]
    stop.set()
    beat.join(timeout=5)
    group.refresh()
    assert group.ring.backends == ["http://127.0.0.1:9"]  # stopped beating: left the ring
    group.close()


# --- the forwarder, against backends that answer canned bytes -----------------------------------

NAME = "20251120_1"


@pytest.fixture
def router_before() -> Iterator[Callable[..., tuple[Any, list[RawBackend]]]]:
    """router_before(reply, reply, ...): a router app (its test client) in front of one RawBackend per reply, in ring order for NAME."""
    made: list[tuple[Any, list[RawBackend]]] = []

    def make(*replies: Any) -> tuple[Any, list[RawBackend]]:
        from web import create_app

        raws = [RawBackend(reply) for reply in replies]
        app = create_app(load_settings(env={"DESQ_WEB_BACKENDS": ",".join(r.url for r in raws), "DESQ_WEB_HEALTH_INTERVAL": "3600"}), role="router")
        order = app.extensions["desq.backends"].order(LAYOUT.locate_name(NAME).shard)
        by_url = {r.url: (r, reply) for r, reply in zip(raws, replies)}
        for r, reply in zip(raws, replies):  # the first reply goes to the owner, the next to its failover, ...
            r.reply = by_url[order[raws.index(r)]][1]
        made.append((app, raws))
        return app.test_client(), [by_url[url][0] for url in order]

    yield make
    for app, raws in made:
        app.extensions["desq.backends"].close()
        for raw in raws:
            raw.close()


def counted(client: Any, metric: str) -> float:
    text = client.get("/metrics").data.decode()
    return sum(float(v) for v in re.findall(rf"^{re.escape(metric)}(?:\{{[^}}]*\}})? ([0-9.e+]+)$", text, flags=re.M))


END_TO_END = {
    "If-Match": '"abc-12"',
    "If-Unmodified-Since": "Thu, 20 Nov 2025 10:00:00 GMT",
    "If-None-Match": '"abc-12", "def-3"',
    "If-Modified-Since": "Thu, 20 Nov 2025 10:00:00 GMT",
    "If-Range": '"abc-12"',
    "Range": "bytes=0-3",
    "Authorization": "Bearer someone-elses-token-000",
    "Accept-Encoding": "gzip, br",
    "Accept": "*/*",
    "User-Agent": "curl/8.5",
    "Cache-Control": "no-cache",
    "X-Request-Id": "r-1",
}
HOP = {"Connection": "X-Private, Keep-Alive", "Keep-Alive": "timeout=5", "X-Private": "secret", "TE": "trailers", "Upgrade": "h2c", "Proxy-Authorization": "Basic eDp5"}


def test_every_end_to_end_request_header_reaches_the_owner_and_no_hop_by_hop_one(router_before: Any) -> None:
    client, (owner, _) = router_before(lambda head: answer(body=b"ok"), lambda head: answer(body=b"second"))
    assert client.get(f"/files/{NAME}", query_string="x=1", headers=END_TO_END | HOP).data == b"ok"
    request_line, *lines = owner.heads[-1].decode("latin-1").split("\r\n")
    sent = dict(line.split(": ", 1) for line in lines)
    assert request_line == f"GET /files/{NAME}?x=1 HTTP/1.1"
    assert sent == {"Host": owner.url.removeprefix("http://")} | END_TO_END  # names and values exactly
    client.head(f"/meta/{NAME}", headers={"If-None-Match": '"e"'})
    assert owner.heads[-1].startswith(f"HEAD /meta/{NAME} HTTP/1.1\r\n".encode()) and b'If-None-Match: "e"' in owner.heads[-1]


def test_the_answer_comes_back_unchanged_but_for_hop_by_hop_headers(router_before: Any) -> None:
    headers = ("ETag: \"abc-4\"", "Cache-Control: private", "Last-Modified: Thu, 20 Nov 2025 10:00:00 GMT", "Connection: X-Hop", "X-Hop: 1", "Keep-Alive: timeout=5", "Date: Mon, 01 Jan 2024 00:00:00 GMT", "Server: files")
    client, _ = router_before(lambda head: answer("206 Partial Content", b"data", headers + ("Content-Range: bytes 0-3/9",)))
    got = client.get(f"/files/{NAME}", headers={"Range": "bytes=0-3"})
    assert (got.status_code, got.data) == (206, b"data")
    assert sorted(got.headers.keys()) == ["Cache-Control", "Content-Length", "Content-Range", "ETag", "Last-Modified"]  # Date, Server: gunicorn writes its own
    assert (got.headers["ETag"], got.headers["Content-Range"]) == ('"abc-4"', "bytes 0-3/9")


def test_a_503_or_a_refused_connection_goes_to_the_next_choice(router_before: Any) -> None:
    client, (owner, second) = router_before(lambda head: answer("503 Service Unavailable", b"{}"), lambda head: answer(body=b"from the second"))
    errors = f'desq_router_errors_total{{backend="{owner.url}"}}'
    before = counted(client, "desq_router_failovers_total"), counted(client, errors)
    assert client.get(f"/files/{NAME}").data == b"from the second"
    assert len(owner.heads) == len(second.heads) == 1
    owner.close()  # refused from now on
    for _ in range(3):
        assert client.get(f"/files/{NAME}").data == b"from the second"
    # the 503 and two refusals; then the breaker is open and the owner is asked last
    assert (counted(client, "desq_router_failovers_total") - before[0], counted(client, errors) - before[1]) == (3, 3)
    assert {b["url"]: b["healthy"] for b in client.get("/routing").json["backends"]} == {owner.url: False, second.url: True}


def test_the_last_choices_503_is_passed_on_and_no_answer_at_all_is_the_routers_own_503(router_before: Any) -> None:
    client, (only,) = router_before(lambda head: answer("503 Service Unavailable", b'{"error": "unavailable", "message": "storage"}', ("Content-Type: application/json",)))
    got = client.get(f"/files/{NAME}")
    assert (got.status_code, got.json["message"]) == (503, "storage")
    only.reply, only.close_after = lambda head: answer(body=b"0123456789")[:-3], 1  # breaks off inside the body
    got = client.get(f"/files/{NAME}")
    assert got.status_code == 503 and got.json == {"error": "unavailable", "message": f"no backend for shard {LAYOUT.locate_name(NAME).shard_hex} answered"}


def test_big_and_chunked_bodies_stream_through_intact(router_before: Any) -> None:
    big = bytes(range(256)) * (5 * CHUNK // 256 + 7)
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    client, (owner,) = router_before(lambda head: chunked if b"chunked" in head else answer(body=big))
    got = client.get(f"/files/{NAME}", buffered=False)
    assert not got.is_sequence  # streamed, not read whole first
    assert got.get_data() == big and got.headers["Content-Length"] == str(len(big))
    got = client.get(f"/files/{NAME}", headers={"X-Want": "chunked"})
    assert got.data == b"abcde" and "Transfer-Encoding" not in got.headers
    assert owner.connections == 1  # both over one keep-alive connection


def test_refusals_never_reach_a_backend(router_before: Any) -> None:
    client, (owner,) = router_before(lambda head: answer(body=b"ok"))
    for path, status in (("/files/../x", 400), ("/meta/nope", 400), ("/files/", 404), ("/files//20251120_1", 404)):
        got = client.get(path)
        assert got.status_code == status and got.json["error"] in ("bad_request", "not_found"), path
    assert client.post(f"/files/{NAME}").status_code == 405
    assert owner.heads == []


@pytest.mark.parametrize("worker_class", ["gthread", "gevent"])
def test_through_gunicorn_with_each_worker_class(tmp_path: Path, archive: tuple[Path, dict[str, bytes]], worker_class: str) -> None:
    import http.client

    root, files = archive
    backend = Gunicorn({"DESQ_ARCHIVE_URL": str(root)}, tmp_path / "files.log")
    router = Gunicorn({"DESQ_WEB_BACKENDS": backend.url, "GUNICORN_CMD_ARGS": f"--worker-class {worker_class}"}, tmp_path / "router.log", role="router")
    try:
        assert f"Using worker: {worker_class}" in (tmp_path / "router.log").read_text()
        conn = http.client.HTTPConnection("127.0.0.1", router.port, timeout=30)
        for name, data in files.items():  # one keep-alive connection for all
            conn.request("GET", f"/files/{name}")
            answer = conn.getresponse()
            assert (answer.status, answer.read()) == (200, data)
        assert [k for k, _ in answer.getheaders()].count("Date") == 1 and [k for k, _ in answer.getheaders()].count("Server") == 1
        etag = answer.getheader("ETag")
        conn.request("HEAD", f"/files/{name}")
        answer = conn.getresponse()
        assert (answer.status, answer.read(), answer.getheader("Content-Length"), answer.getheader("ETag")) == (200, b"", str(len(data)), etag)
        conn.request("GET", f"/files/{name}", headers={"If-None-Match": etag})
        answer = conn.getresponse()
        assert (answer.status, answer.read()) == (304, b"")
        conn.request("GET", f"/files/{name}", headers={"Range": "bytes=1-3"})
        answer = conn.getresponse()
        assert (answer.status, answer.read()) == (206, data[1:4])
        conn.close()
    finally:
        router.stop()
        backend.stop()


def test_a_name_is_sent_on_percent_encoded_as_the_files_api_decodes_it(router_before: Any) -> None:
    client, (owner,) = router_before(lambda head: answer(body=b"ok"))
    for name, sent in (("20251120_a b%2F", "20251120_a%20b%252F"), ("20251120_ünï?x", "20251120_%C3%BCn%C3%AF%3Fx"), ("20251120_x.y~z-1", "20251120_x.y~z-1")):
        assert client.get("/files/" + quote(name, safe=""), query_string="created_at=2025-11-20").data == b"ok"
        assert owner.heads[-1].split(b"\r\n")[0] == f"GET /files/{sent}?created_at=2025-11-20 HTTP/1.1".encode()


def test_an_unexpected_failure_in_the_forwarder_is_the_contracts_json_500(router_before: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from web import router as module

    client, _ = router_before(lambda head: answer(body=b"ok"))

    def broken(environ: dict[str, Any]) -> list[tuple[str, str]]:
        raise RuntimeError("a bug")

    monkeypatch.setattr(module, "forwarded_headers", broken)
    got = client.get(f"/files/{NAME}")
    assert (got.status_code, got.json) == (500, {"error": "internal_error", "message": "internal error"})


def test_a_router_with_tokens_makes_every_answer_private_whatever_the_backend_says() -> None:
    from web import create_app

    raw = RawBackend(lambda head: answer(body=b"ok", headers=("Cache-Control: public, max-age=86400",)))
    env = {"DESQ_WEB_BACKENDS": raw.url, "DESQ_WEB_HEALTH_INTERVAL": "3600", "DESQ_WEB_API_TOKENS": "router-token-0123456789"}
    app = create_app(load_settings(env=env), role="router")
    try:
        got = app.test_client().get(f"/files/{NAME}", headers={"Authorization": "Bearer router-token-0123456789"})
        assert (got.status_code, got.data, got.headers["Cache-Control"]) == (200, b"ok", "private, max-age=86400")
    finally:
        app.extensions["desq.backends"].close()
        raw.close()
