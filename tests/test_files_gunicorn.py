"""The files API in a real gunicorn process, on a local archive and on the S3 test server.

Compared byte for byte over real HTTP: full reads, the three Range forms, 416, a multi-range, 304,
HEAD, hostile names, a corrupted member; the storage requests of a warm read, read from /metrics.
"""

from __future__ import annotations

import http.client
import json
import shutil
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from desq.settings import load_settings
from desq.storage import Storage
from desq.storage.ec import ECStorage
from desq.storage.local import LocalStorage
from desq.storage.s3 import S3Storage
from archives import pack

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MiB = 1 << 20
FILES = {"20251120_1": b"hello, archive\n", "20251120_42": os.urandom(2 * MiB + 3), "20251120_7": b"seven"}


def fill(storage: Storage) -> None:
    pack(storage, {name: (data, "application/x-test", None) for name, data in FILES.items()})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(params=["local", "ec", pytest.param("s3", marks=pytest.mark.integration)])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[int, Storage]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESQ_")}
    if request.param == "local":
        storage: Storage = LocalStorage(tmp_path / "archive")
        env["DESQ_ARCHIVE_URL"] = str(tmp_path / "archive")
    elif request.param == "ec":  # the gevent worker reading through the coded backend's thread pools
        nodes = [str(tmp_path / f"node{i}") for i in range(6)]
        storage = ECStorage([LocalStorage(node) for node in nodes], 4, 2)
        env |= {"DESQ_ARCHIVE_URL": "ec://4+2", "DESQ_ARCHIVE_NODES": json.dumps(nodes)}
    else:
        endpoint, bucket = request.getfixturevalue("s3_endpoint"), request.getfixturevalue("s3_bucket")
        storage = S3Storage(f"s3://{bucket}/desq", endpoint_url=endpoint)
        env |= {"DESQ_ARCHIVE_URL": f"s3://{bucket}/desq", "DESQ_ARCHIVE_S3_ENDPOINT_URL": endpoint} | {k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    fill(storage)
    port = free_port()
    env |= {"PORT": str(port), "BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": "1", "WEB_THREADS": "4"}
    log = open(tmp_path / "gunicorn.log", "wb")
    process = subprocess.Popen([str(BIN / "gunicorn"), "-c", "deploy/gunicorn.conf.py", "web:create_app()"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        try:
            if get(port, "/healthz")[0] == 200:
                break
        except OSError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "gunicorn.log").read_text()
        time.sleep(0.2)
    yield port, storage
    process.terminate()
    process.wait(timeout=30)
    log.close()


def get(port: int, path: str, method: str = "GET", **headers: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.putrequest(method, path, skip_accept_encoding=True)
    for name, value in headers.items():
        conn.putheader(name.replace("_", "-"), value)
    conn.endheaders()
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body


def storage_requests(port: int) -> float:
    text = get(port, "/metrics")[2].decode()
    return sum(float(v) for v in re.findall(r"^desq_storage_requests_total\{[^}]*\} ([0-9.e+]+)$", text, flags=re.M))


def test_reads_over_http(server: tuple[int, Storage]) -> None:
    port, _ = server
    big = FILES["20251120_42"]
    status, headers, body = get(port, "/files/20251120_42")
    assert (status, body) == (200, big) and headers["content-length"] == str(len(big)) and headers["accept-ranges"] == "bytes"
    etag = headers["etag"]
    for rng, part in (("bytes=10-99", big[10:100]), (f"bytes={MiB}-", big[MiB:]), ("bytes=-7", big[-7:])):
        status, headers, body = get(port, "/files/20251120_42", Range=rng)
        assert (status, body) == (206, part) and headers["content-range"].endswith(f"/{len(big)}")
    status, headers, body = get(port, "/files/20251120_1", Range="bytes=100-200")
    assert status == 416 and headers["content-range"] == "bytes */15"
    assert get(port, "/files/20251120_1", Range="bytes=0-1,3-4")[2] == FILES["20251120_1"]
    assert get(port, "/files/20251120_42", If_None_Match=etag)[:1] == (304,)
    status, headers, body = get(port, "/files/20251120_42", method="HEAD")
    assert (status, body) == (200, b"") and headers["content-length"] == str(len(big)) and headers["etag"] == etag


def test_a_warm_read_costs_one_storage_request(server: tuple[int, Storage]) -> None:
    port, _ = server
    for name in FILES:  # the first read of each container also fetches its index
        get(port, f"/files/{name}")
    for name in ("20251120_1", "20251120_7"):
        before = storage_requests(port)
        assert get(port, f"/files/{name}")[2] == FILES[name]
        assert storage_requests(port) - before == 1


@pytest.mark.parametrize("path", ["/files/../../etc/passwd", "/files/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/files/20251120_1%00", "/files/%ff%fe_1", "/files/20251340_1", "/files/" + "x" * 10_000])
def test_hostile_names(server: tuple[int, Storage], path: str) -> None:
    port, _ = server
    before = storage_requests(port)
    status, headers, _ = get(port, path)
    if len(path) > 8190:  # gunicorn refuses request lines this long itself
        assert status == 414
    else:
        assert 400 <= status < 500 and headers["content-type"] == "application/json"
    assert storage_requests(port) == before


def test_a_corrupted_member_is_500_without_its_bytes(server: tuple[int, Storage]) -> None:
    port, storage = server
    key = load_settings(env={}).layout.locate_name("20251120_7").container
    data = bytearray(storage.read_suffix(key, 1 << 30)[0])
    data[data.index(b"seven")] ^= 0x01
    storage.put(key, bytes(data))  # replaced: the cached index is stale, and the bytes are bad
    status, headers, body = get(port, "/files/20251120_7")
    assert status == 500 and b"integrity_error" in body and b"even" not in body


@pytest.mark.parametrize("server", ["ec"], indirect=True)
def test_two_lost_nodes_of_a_coded_archive_cost_no_file(server: tuple[int, Storage]) -> None:
    port, storage = server
    assert isinstance(storage, ECStorage)
    for node in (storage.nodes[0], storage.nodes[3]):
        shutil.move(node.root, f"{node.root}.away")
    for name, data in FILES.items():
        assert get(port, f"/files/{name}")[:3:2] == (200, data), name
    status, headers, body = get(port, "/files/20251120_42", Range="bytes=1000-1999")
    assert (status, body) == (206, FILES["20251120_42"][1000:2000])
    metrics = get(port, "/metrics")[2].decode()
    assert float(re.search(r"^desq_ec_degraded_reads_total ([0-9.e+]+)$", metrics, flags=re.M).group(1)) > 0
    assert re.search(r'^desq_ec_fragment_errors_total\{kind="missing"\} [1-9]', metrics, flags=re.M)
    ready = get(port, "/readyz")
    assert ready[0] == 200 and len(json.loads(ready[2])["nodes_down"]) == 2
    shutil.move(f"{storage.nodes[1].root}", f"{storage.nodes[1].root}.away")
    assert get(port, "/readyz")[0] == 503
    status, headers, body = get(port, "/files/20251120_7")
    assert status == 503 and b"seven" not in body
