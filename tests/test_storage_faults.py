"""Injected storage failures surface as clear, typed errors; retryable ones are retried with
bounded backoff; nothing half-written ever becomes visible.

The S3 tests talk to the moto test server through tests/faultproxy.py, which answers errors,
resets connections, stalls, or cuts response bodies short on request.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest

import desq.storage.local as local_backend
from desq.storage.base import NotFound, RangeError, StaleObject, StorageError, StorageUnavailable
from desq.storage.local import TEMP_PREFIX, LocalStorage
from desq.storage.s3 import S3Storage, multipart_etag
from faultproxy import Fault, FaultProxy, query_has
from leaks import Snapshot

integration = pytest.mark.integration

PREFIX = "archive"
KEY = "20251120/FE.des"
DATA = bytes(range(256)) * 256  # 64 KiB
MiB = 1 << 20
ATTEMPTS = 3  # the max_attempts every S3Storage here gets
BOUND = 15.0  # seconds any failing call may take with ATTEMPTS attempts
BOTOCORE_ATTEMPTS = (ATTEMPTS,)
"""How many HTTP attempts botocore makes for a request it retries: exactly max_attempts."""


def one_line(exc: BaseException) -> bool:
    text = str(exc)
    return bool(text) and "\n" not in text


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def raw(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A plain boto3 client straight to moto, for setup and inspection."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    yield client
    client.close()


@pytest.fixture
def bucket(raw: Any) -> Iterator[str]:
    name = f"desq-faults-{uuid.uuid4().hex[:12]}"
    raw.create_bucket(Bucket=name)
    yield name
    for upload in raw.list_multipart_uploads(Bucket=name).get("Uploads", []):
        raw.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
    for item in raw.list_objects_v2(Bucket=name).get("Contents", []):
        raw.delete_object(Bucket=name, Key=item["Key"])
    raw.delete_bucket(Bucket=name)


@pytest.fixture
def proxy(s3_endpoint: str) -> Iterator[FaultProxy]:
    before = Snapshot()
    with FaultProxy(s3_endpoint) as p:
        yield p
    assert before.new_threads() == [], "the fault proxy left threads running"


@pytest.fixture
def make_storage(bucket: str) -> Iterator[Callable[..., S3Storage]]:
    """S3Storage factory (default: 3 attempts, short timeouts); closes every client it made."""
    made: list[S3Storage] = []

    def make(endpoint_url: str, **options: Any) -> S3Storage:
        options = {"max_attempts": ATTEMPTS, "connect_timeout": 1.0, "read_timeout": 5.0} | options
        storage = S3Storage(f"s3://{bucket}/{PREFIX}", endpoint_url=endpoint_url, **options)
        made.append(storage)
        return storage

    yield make
    for storage in made:
        storage.client.close()


@pytest.fixture
def s3(make_storage: Callable[..., S3Storage], proxy: FaultProxy) -> S3Storage:
    """S3Storage through the fault proxy."""
    return make_storage(proxy.url)


@pytest.fixture
def direct(make_storage: Callable[..., S3Storage], s3_endpoint: str) -> S3Storage:
    """S3Storage straight to moto (no faults)."""
    return make_storage(s3_endpoint)


@pytest.fixture
def stored(raw: Any, bucket: str) -> str:
    """DATA stored under KEY (written past the proxy, so it counts no requests)."""
    raw.put_object(Bucket=bucket, Key=f"{PREFIX}/{KEY}", Body=DATA)
    return KEY


def open_uploads(raw: Any, bucket: str) -> list[str]:
    return [u["Key"] for u in raw.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


# --- retried, then successful ------------------------------------------------------------------


@integration
@pytest.mark.parametrize("fault", [Fault.slow_down(method="GET"), Fault.unavailable(method="GET"), Fault.error(500, method="GET")],
                         ids=["503-SlowDown", "503-ServiceUnavailable", "500-InternalError"])
def test_two_server_errors_then_success(s3: S3Storage, proxy: FaultProxy, stored: str, fault: Fault) -> None:
    proxy.plan(fault, times=2)
    started = time.monotonic()
    assert s3.read(stored, 100, 1000) == DATA[100:1100]
    assert time.monotonic() - started < BOUND
    assert proxy.count("GET") == 3
    assert proxy.faults_applied == 2


@integration
def test_connection_reset_once_is_retried(s3: S3Storage, proxy: FaultProxy, stored: str) -> None:
    proxy.plan(Fault.reset(method="GET"))
    assert s3.read(stored, 0, 4096) == DATA[:4096]
    assert proxy.count("GET") == 2
    assert proxy.faults_applied == 1


@integration
@pytest.mark.parametrize("suffix", [False, True], ids=["read", "read_suffix"])
def test_short_body_once_is_retried(s3: S3Storage, proxy: FaultProxy, stored: str, suffix: bool) -> None:
    proxy.plan(Fault.truncate(100, method="GET"))
    if suffix:
        body, info = s3.read_suffix(stored, 10_000)
        assert body == DATA[-10_000:] and info.size == len(DATA)
    else:
        assert s3.read(stored, 1000, 10_000) == DATA[1000:11_000]
    assert proxy.count("GET") == 2


@integration
def test_stall_once_past_read_timeout_is_retried(make_storage: Callable[..., S3Storage], proxy: FaultProxy, stored: str) -> None:
    s3 = make_storage(proxy.url, read_timeout=1)
    proxy.plan(Fault.delay(3, method="GET"))
    started = time.monotonic()
    assert s3.read(stored, 0, 100) == DATA[:100]
    assert time.monotonic() - started < 3  # gave up on the stalled answer, did not wait for it
    assert proxy.count("GET") == 2


# --- persistent failures: typed, one-line, bounded -----------------------------------------------

OPERATIONS: dict[str, Callable[[S3Storage], object]] = {
    "read": lambda s: s.read(KEY, 0, 100),
    "read_suffix": lambda s: s.read_suffix(KEY, 100),
    "head": lambda s: s.head(KEY),
    "list": lambda s: list(s.list()),
    "folders": lambda s: list(s.folders()),
    "put": lambda s: s.put("20251120/new.des", b"x" * 1000),
}


@integration
@pytest.mark.parametrize("operation", OPERATIONS)
def test_server_error_on_every_request_is_unavailable(s3: S3Storage, proxy: FaultProxy, stored: str, operation: str) -> None:
    proxy.always = Fault.error(500)
    started = time.monotonic()
    with pytest.raises(StorageUnavailable) as caught:
        OPERATIONS[operation](s3)
    assert time.monotonic() - started < BOUND
    assert one_line(caught.value), str(caught.value)
    assert proxy.faults_applied in BOTOCORE_ATTEMPTS  # bounded retries, no more


@integration
@pytest.mark.parametrize(
    ("fault", "requests"),
    [
        (Fault.reset(method="GET"), BOTOCORE_ATTEMPTS),  # botocore's retries
        (Fault.truncate(100, method="GET"), [ATTEMPTS]),  # S3Storage's own body retries
        (Fault.delay(3, method="GET"), BOTOCORE_ATTEMPTS),  # botocore's retries of the read timeout
    ],
    ids=["reset", "short-body", "stall"],
)
def test_broken_answers_on_every_get_are_unavailable(
    make_storage: Callable[..., S3Storage], proxy: FaultProxy, stored: str, fault: Fault, requests: Sequence[int]
) -> None:
    s3 = make_storage(proxy.url, read_timeout=1)
    proxy.always = fault
    started = time.monotonic()
    with pytest.raises(StorageUnavailable) as caught:
        s3.read(stored, 0, 10_000)
    assert time.monotonic() - started < BOUND
    assert one_line(caught.value), str(caught.value)
    assert f"{PREFIX}/{KEY}" in str(caught.value)  # names the object
    assert proxy.count("GET") in requests




@integration
@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(Fault.error(500, method="GET"), id="botocore-retry"),
        pytest.param(Fault.truncate(100, method="GET"), id="body-retry"),
    ],
)
def test_max_attempts_is_the_number_of_attempts(s3: S3Storage, proxy: FaultProxy, stored: str, fault: Fault) -> None:
    proxy.always = fault
    with pytest.raises(StorageUnavailable):
        s3.read(stored, 0, 10_000)
    assert proxy.count("GET") == ATTEMPTS


# --- failed uploads leave nothing behind -------------------------------------------------------


@integration
@pytest.mark.parametrize(
    ("method", "where", "older"),
    [
        ("PUT", query_has("partNumber", "2"), False),  # a part sent by write()
        ("PUT", query_has("partNumber", "3"), True),  # the last part, sent by commit()
        ("POST", query_has("uploadId"), True),  # CompleteMultipartUpload
    ],
    ids=["part-in-write", "last-part-in-commit", "complete"],
)
def test_failed_multipart_upload_leaves_nothing_visible(
    make_storage: Callable[..., S3Storage], proxy: FaultProxy, direct: S3Storage, raw: Any, bucket: str,
    method: str, where: Callable[[str], bool], older: bool,
) -> None:
    s3 = make_storage(proxy.url, part_size=5 * MiB)
    old = direct.put(KEY, b"the older version") if older else None
    proxy.always = Fault.error(500, method=method, where=where)
    payload = os.urandom(12 * MiB)  # parts of 5, 5 and 2 MiB

    with pytest.raises(StorageUnavailable) as caught:
        s3.put(KEY, payload)

    assert one_line(caught.value), str(caught.value)
    assert str(caught.value).startswith(f"writing s3://{bucket}/{PREFIX}/{KEY}: ")
    assert proxy.count(method, where) in BOTOCORE_ATTEMPTS  # every attempt failed
    assert proxy.count("DELETE", query_has("uploadId")) == 1  # aborted once
    assert open_uploads(raw, bucket) == []
    if old is None:
        with pytest.raises(NotFound):
            direct.head(KEY)
        assert [info.key for info in direct.list()] == []
    else:
        assert direct.head(KEY).etag == old.etag
        assert direct.read(KEY, 0, old.size) == b"the older version"
        assert [(info.key, info.size) for info in direct.list()] == [(KEY, old.size)]


@integration
@pytest.mark.parametrize(("status", "code"), [(500, "InternalError"), (404, "NoSuchUpload")], ids=["moto-500", "s3-NoSuchUpload"])
def test_a_completed_upload_whose_answer_is_lost_is_committed(
    make_storage: Callable[..., S3Storage], proxy: FaultProxy, direct: S3Storage, raw: Any, status: int, code: str,
) -> None:
    """The server completes the upload but its answer never arrives, and the retries find the upload
    gone (S3 answers NoSuchUpload; moto 500 when a retry overlaps a slow first completion). The
    object these parts made is there: committed, not aborted."""
    s3 = make_storage(proxy.url, part_size=5 * MiB)
    complete = query_has("uploadId")
    proxy.plan(Fault.lost(method="POST", where=complete))
    proxy.always = Fault.error(status, code, method="POST", where=complete)
    payload = os.urandom(11 * MiB)

    info = s3.put(KEY, payload)

    assert proxy.count("POST", complete) >= 2  # the lost answer, then what the retries found
    assert info.etag == direct.head(KEY).etag and info.size == len(payload)
    assert direct.read(KEY, 0, len(payload)) == payload
    assert proxy.count("DELETE", query_has("uploadId")) == 0 and open_uploads(raw, s3.bucket) == []


@integration
def test_a_lost_complete_answer_never_takes_an_older_object_for_the_new_one(
    make_storage: Callable[..., S3Storage], proxy: FaultProxy, direct: S3Storage,
) -> None:
    s3 = make_storage(proxy.url, part_size=5 * MiB)
    old = direct.put(KEY, os.urandom(11 * MiB))
    proxy.always = Fault.error(500, method="POST", where=query_has("uploadId"))

    with pytest.raises(StorageUnavailable):
        s3.put(KEY, os.urandom(11 * MiB))

    assert direct.head(KEY).etag == old.etag


def test_the_etag_of_a_multipart_object_is_the_md5_of_its_parts_md5s() -> None:
    parts = [b"a" * 10, b"b" * 7]
    etags = [f'"{hashlib.md5(p).hexdigest()}"' for p in parts]
    whole = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()
    assert multipart_etag(etags) == f'"{whole}-2"'
    assert multipart_etag(etags[:1] + ["not-an-md5"]) is None  # SSE-KMS parts: no way to tell


@integration
def test_upload_whose_abort_fails_is_left_for_abort_stale_uploads(
    make_storage: Callable[..., S3Storage], proxy: FaultProxy, direct: S3Storage, raw: Any, bucket: str
) -> None:
    s3 = make_storage(proxy.url, part_size=5 * MiB)
    proxy.always = Fault.error(500, method="PUT", where=query_has("partNumber", "2"))
    proxy.plan(Fault.unavailable(method="DELETE"), times=ATTEMPTS + 1)  # AbortMultipartUpload fails too

    with pytest.raises(StorageUnavailable) as caught:
        s3.put(KEY, os.urandom(11 * MiB))

    assert str(caught.value).endswith(": S3 answered 500 InternalError after retries")  # the part's, not the abort's 503
    assert proxy.count("DELETE", faulted=True) in BOTOCORE_ATTEMPTS
    with pytest.raises(NotFound):
        direct.head(KEY)
    assert open_uploads(raw, bucket) == [f"{PREFIX}/{KEY}"]
    assert direct.abort_stale_uploads(0) == 1  # what `desq recover` runs
    assert open_uploads(raw, bucket) == []


@integration
def test_abort_stale_uploads_aborts_an_abandoned_multipart_upload(direct: S3Storage, raw: Any, bucket: str) -> None:
    raw.create_multipart_upload(Bucket=bucket, Key=f"{PREFIX}/{KEY}")
    raw.create_multipart_upload(Bucket=bucket, Key="elsewhere/other.des")  # outside the storage's prefix
    # (moto reports every upload as initiated in 2010, so "too recent to abort" cannot be tested here)
    assert direct.abort_stale_uploads(0) == 1
    assert open_uploads(raw, bucket) == ["elsewhere/other.des"]


# --- plain S3 errors, no proxy needed --------------------------------------------------------------


@integration
@pytest.mark.parametrize("operation", ["read", "read_suffix", "head"])
def test_missing_object_is_not_found(direct: S3Storage, operation: str) -> None:
    with pytest.raises(NotFound) as caught:
        OPERATIONS[operation](direct)
    assert one_line(caught.value)


@integration
def test_replaced_object_is_stale(direct: S3Storage, raw: Any, bucket: str, stored: str) -> None:
    _, info = direct.read_suffix(stored, 16)
    assert direct.read(stored, 0, 4, if_match=info.etag) == DATA[:4]
    raw.put_object(Bucket=bucket, Key=f"{PREFIX}/{stored}", Body=b"replaced" * 100)
    with pytest.raises(StaleObject):
        direct.read(stored, 0, 4, if_match=info.etag)
    with pytest.raises(StaleObject):
        direct.read_suffix(stored, 16, if_match=info.etag)


@integration
@pytest.mark.parametrize(("offset", "length"), [(len(DATA) - 2, 10), (len(DATA), 1), (len(DATA) + 100, 5)],
                         ids=["runs-past-end", "starts-at-end", "starts-past-end"])
def test_range_past_end_is_range_error(direct: S3Storage, stored: str, offset: int, length: int) -> None:
    with pytest.raises(RangeError) as caught:
        direct.read(stored, offset, length)
    assert one_line(caught.value)


# --- local backend -------------------------------------------------------------------------------


class _FullDisk:
    """A file whose writes fail with ENOSPC once ``room`` bytes were written."""

    def __init__(self, file: Any, room: int) -> None:
        self._file = file
        self._room = room

    def write(self, data: bytes | memoryview) -> int:
        if len(data) > self._room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= len(data)
        return self._file.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


def _fail(code: int) -> Callable[..., None]:
    def fail(*_: object, **__: object) -> None:
        raise OSError(code, os.strerror(code))

    return fail


@pytest.mark.parametrize("where", ["write", "fsync", "replace"])
def test_local_write_failure_keeps_the_old_object(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    storage = LocalStorage(tmp_path)
    old = storage.put(KEY, b"the older version")

    with monkeypatch.context() as patch, pytest.raises(StorageError) as caught:
        if where == "write":
            real_open = open
            patch.setattr(local_backend, "open", lambda *a, **k: _FullDisk(real_open(*a, **k), room=1000), raising=False)
        else:
            patch.setattr(local_backend.os, where, _fail(errno.ENOSPC))
        with storage.open_upload(KEY) as upload:
            for _ in range(4):
                upload.write(b"n" * 600)
            upload.commit()

    assert one_line(caught.value), str(caught.value)
    assert "No space left on device" in str(caught.value)
    assert storage.head(KEY).etag == old.etag
    assert storage.read(KEY, 0, old.size) == b"the older version"
    assert list(tmp_path.rglob(f"{TEMP_PREFIX}*")) == []
    assert [info.key for info in storage.list()] == [KEY]


# --- the proxy itself ------------------------------------------------------------------------------


class _Echo(BaseHTTPRequestHandler):
    """Upstream that answers with the Host header and body it received."""

    protocol_version = "HTTP/1.1"

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        answer = f"{self.headers['Host']} {self.path} ".encode() + body
        self.send_response(200)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *_: object) -> None:
        pass


def test_proxy_forwards_unchanged_and_stops_cleanly() -> None:
    before = Snapshot()
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    serving = threading.Thread(target=upstream.serve_forever, kwargs={"poll_interval": 0.05})
    serving.start()
    try:
        with FaultProxy(f"http://127.0.0.1:{upstream.server_address[1]}") as proxy:
            proxy.plan(Fault.error(503, "SlowDown", where=query_has("fail")))
            port = int(proxy.url.rsplit(":", 1)[1])
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            try:
                conn.request("PUT", "/b/k?fail=1", body=b"payload", headers={"Host": "signed.example:9000"})
                failed = conn.getresponse()
                assert (failed.status, b"<Code>SlowDown</Code>" in failed.read()) == (503, True)
                conn.request("PUT", "/b/k?x=1", body=b"payload", headers={"Host": "signed.example:9000"})
                ok = conn.getresponse()  # same keep-alive connection
                assert (ok.status, ok.read()) == (200, b"signed.example:9000 /b/k?x=1 payload")
            finally:
                conn.close()
            assert [(s.method, s.fault) for s in proxy.seen] == [("PUT", "status"), ("PUT", None)]
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)  # left open: stop() must cut it
            conn.request("PUT", "/b/k", body=b"", headers={"Host": "h"})
            conn.getresponse().read()
        conn.close()
    finally:
        upstream.shutdown()
        upstream.server_close()
        serving.join()
    assert (before.new_threads(), before.new_fds()) == ([], [])
