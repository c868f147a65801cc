"""``POST /batch`` over real HTTP: a files-API gunicorn, and two behind a real router; the stream
read with tarfile's streaming mode and with ``curl | tar -t``; failover; a member failing midway."""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import signal
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from archives import pack
from desq.container import ContainerWriter
from desq.storage.local import LocalStorage
from test_files_gunicorn import get
from test_router import LAYOUT, Gunicorn

MiB = 1 << 20
TOKEN = "tok-batch-0123456789"
BIG = "20251120_big"


def post(port: int, body: bytes, **headers: str) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", "/batch", body=body, headers={"Content-Type": "application/json"} | {k.replace("_", "-"): v for k, v in headers.items()})
    return conn.getresponse()


def streamed(answer: http.client.HTTPResponse) -> tuple[list[tuple[str, bytes]], list[dict]]:
    with tarfile.open(fileobj=answer, mode="r|") as tar:
        members = [(info.name, tar.extractfile(info).read()) for info in tar]
    assert members[-1][0] == "errors.json"
    return members[:-1], json.loads(members[-1][1])


def curl_tar(url: str, body: bytes, tmp_path: Path) -> tuple[int, int, str]:
    """curl's and tar's exit codes, and what ``tar -t`` listed."""
    (tmp_path / "body.json").write_bytes(body)
    pipeline = f"curl -sS --fail -X POST -H 'Authorization: Bearer {TOKEN}' --data-binary @{tmp_path / 'body.json'} {url}/batch | tar -t; echo \"${{PIPESTATUS[0]}} ${{PIPESTATUS[1]}}\" >&2"
    done = subprocess.run(["bash", "-c", pipeline], capture_output=True, text=True, timeout=60)
    codes = done.stderr.strip().splitlines()[-1].split()
    return int(codes[0]), int(codes[1]), done.stdout


@pytest.fixture
def archive(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    files = {f"20251120_{i}": os.urandom(1 + i * 997) for i in range(60)} | {"20251120_zażółć_" + "ł" * 100: b"unicode, long"}
    storage = LocalStorage(tmp_path / "archive")
    pack(storage, {n: (d, None, None) for n, d in files.items()})
    data = bytearray(os.urandom(9 * MiB))  # streamed alone; its last MiB damaged on disk
    out = io.BytesIO()
    with ContainerWriter(out) as w:
        w.add(BIG, bytes(data))
    raw = bytearray(out.getvalue())
    raw[raw.index(bytes(data[8 * MiB + 100 : 8 * MiB + 164]))] ^= 1
    storage.put(LAYOUT.locate_name(BIG).container, bytes(raw))
    return tmp_path / "archive", files


@pytest.fixture
def cluster(tmp_path: Path, archive: tuple[Path, dict[str, bytes]]) -> Iterator[tuple[list[Gunicorn], Gunicorn]]:
    env = {"DESQ_ARCHIVE_URL": str(archive[0]), "DESQ_WEB_API_TOKENS": TOKEN}
    backends = [Gunicorn(env, tmp_path / f"files{i}.log") for i in range(2)]
    router = Gunicorn({"DESQ_WEB_BACKENDS": ",".join(b.url for b in backends), "DESQ_WEB_HEALTH_INTERVAL": "1", "DESQ_WEB_API_TOKENS": TOKEN}, tmp_path / "router.log", role="router")
    yield backends, router
    for process in [router, *backends]:
        process.stop()


def batches(port: int) -> float:
    text = get(port, "/metrics")[2].decode()
    return sum(float(v) for v in re.findall(r'^desq_batch_requests_total\{status="200"\} ([0-9.e+]+)$', text, flags=re.M))


def test_batches_direct_and_through_the_router(cluster: tuple[list[Gunicorn], Gunicorn], archive: tuple[Path, dict[str, bytes]], tmp_path: Path) -> None:
    backends, router = cluster
    _, files = archive
    asked = [*reversed(list(files)), "20251120_nope", "bad name", "20251120_3"]
    body = json.dumps({"names": asked}).encode()
    expected = [(n, files[n]) for n in asked if n in files]
    for server in (backends[0], router):
        answer = post(server.port, body, Authorization=f"Bearer {TOKEN}")
        assert answer.status == 200 and answer.getheader("Content-Type") == "application/x-tar"
        assert answer.getheader("Transfer-Encoding") == "chunked"
        members, errors = streamed(answer)
        assert members == expected
        assert [(e["index"], e["error"]) for e in errors] == [(len(files), "not_found"), (len(files) + 1, "bad_request")]
        curl, tar, listed = curl_tar(server.url, body, tmp_path)
        assert (curl, tar) == (0, 0) and listed.splitlines() == [n for n, _ in expected] + ["errors.json"]

        # a chunked body (no Content-Length) is read bounded too
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        conn.request("POST", "/batch", body=iter([body[:10], body[10:]]), encode_chunked=True, headers={"Authorization": f"Bearer {TOKEN}"})
        assert streamed(conn.getresponse())[0] == expected
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        conn.request("POST", "/batch", body=(b" " * 65536 for _ in range(20)), encode_chunked=True, headers={"Authorization": f"Bearer {TOKEN}"})
        answer = conn.getresponse()
        assert answer.status == 400 and "over 1048576 bytes" in json.loads(answer.read())["message"]
        assert get(server.port, "/batch", Authorization=f"Bearer {TOKEN}")[0] == 405

    # the router sent its batches to the backend owning most of the entries
    routing = {b["url"]: set(b["shards"]) for b in json.loads(get(router.port, "/routing")[2])["backends"]}
    owned = {url: sum(LAYOUT.locate_name(n).shard_hex in shards for n in asked if n in files) for url, shards in routing.items()}
    owner = max(owned, key=owned.get)  # type: ignore[arg-type]
    served = {b.url: batches(b.port) for b in backends}
    assert served[owner] == (3 if owner == backends[0].url else 0) + 3  # three batches each way

    # refused by the router itself: no token, a bad body
    assert post(router.port, body).status == 401
    answer = post(router.port, b"{", Authorization=f"Bearer {TOKEN}")
    assert answer.status == 400 and json.loads(answer.read())["error"] == "bad_request"

    # the owner dies: the other backend answers the whole batch
    next(b for b in backends if b.url == owner).stop(signal.SIGKILL)
    members, errors = streamed(post(router.port, body, Authorization=f"Bearer {TOKEN}"))
    assert members == expected and len(errors) == 2


def test_a_member_failing_midway_truncates_the_tar(cluster: tuple[list[Gunicorn], Gunicorn], tmp_path: Path) -> None:
    backends, router = cluster
    body = json.dumps({"names": ["20251120_1", BIG, "20251120_2"]}).encode()
    for server in (backends[0], router):
        curl, tar, listed = curl_tar(server.url, body, tmp_path)
        assert curl == 18 and tar != 0 and listed.splitlines()[:2] == ["20251120_1", BIG]  # 18: a partial transfer
        with pytest.raises((tarfile.ReadError, http.client.IncompleteRead)):
            streamed(post(server.port, body, Authorization=f"Bearer {TOKEN}"))
    logs = "".join((tmp_path / f"files{i}.log").read_text() for i in range(2))
    assert "batch aborted" in logs and BIG in logs
