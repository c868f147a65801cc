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
from collections.abc import Iterator
from pathlib import Path

import pytest

from desq.archive import store_external
from desq.container import ContainerWriter
from desq.settings import load_settings
from desq.storage.local import LocalStorage
from procs import children
from test_files_gunicorn import free_port, get

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
