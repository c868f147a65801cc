"""The router's HTTP/1.1 client: head parsing, body framing, keep-alive reuse and its one retry."""

from __future__ import annotations

import pytest

from raw_backend import RawBackend, answer
from web.upstream import CHUNK, Origin, Pool, UpstreamError, connection_names, framing, parse_header_lines, parse_status, request_head


def test_a_request_head_is_one_block_with_the_backends_host() -> None:
    head = request_head("GET", "/files/x?created_at=2025-11-20", "h:81", [("Range", "bytes=0-1"), ("If-Match", '"e"')])
    assert head == b'GET /files/x?created_at=2025-11-20 HTTP/1.1\r\nHost: h:81\r\nRange: bytes=0-1\r\nIf-Match: "e"\r\n\r\n'


def test_origins_keep_host_port_and_path_prefix() -> None:
    assert Origin.of("http://10.0.0.1:8081") == Origin(False, "10.0.0.1", 8081, "10.0.0.1:8081", "")
    assert Origin.of("https://user:pw@files.example/api/") == Origin(True, "files.example", 443, "files.example", "/api")
    with pytest.raises(ValueError):
        Origin.of("ftp://x")


def test_status_lines() -> None:
    assert parse_status(b"HTTP/1.1 206 Partial Content\r\n") == (206, "Partial Content", True)
    assert parse_status(b"HTTP/1.0 200 OK\r\n") == (200, "OK", False)
    assert parse_status(b"HTTP/1.1 304\r\n") == (304, "", True)
    for bad in (b"", b"\r\n", b"HTTP/2 200 OK\r\n", b"HTTP/1.1 20 OK\r\n", b"HTTP/1.1 abc OK\r\n", "HTTP/1.1 2²0 OK\r\n".encode("latin-1"), b"SSH-2.0-OpenSSH\r\n"):
        with pytest.raises(UpstreamError):
            parse_status(bad)


def test_header_lines_with_folding_and_bad_lines() -> None:
    assert parse_header_lines([b"ETag: \"a\"\r\n", b"X-Long: one\r\n", b"\t two\r\n", b"Empty:\r\n"]) == [("ETag", '"a"'), ("X-Long", "one two"), ("Empty", "")]
    for bad in (b"no colon\r\n", b": no name\r\n", b"Space Before : x\r\n", b" fold-first\r\n"):
        with pytest.raises(UpstreamError):
            parse_header_lines([bad])


def test_framing_follows_rfc_9112() -> None:
    length = [("Content-Length", "5")]
    assert framing("GET", 200, length) == 5
    assert framing("HEAD", 200, length) == 0
    assert framing("GET", 304, length) == 0 and framing("GET", 204, []) == 0
    assert framing("GET", 200, [("Transfer-Encoding", "gzip, chunked"), *length]) == "chunked"
    assert framing("GET", 200, [("Transfer-Encoding", "gzip")]) is None  # read to the close
    assert framing("GET", 200, []) is None
    assert framing("GET", 200, [*length, ("content-length", "5")]) == 5
    for bad in ([*length, ("Content-Length", "6")], [("Content-Length", "-1")], [("Content-Length", "5 5")], [("Content-Length", "²")]):
        with pytest.raises(UpstreamError):
            framing("GET", 200, bad)


def test_connection_names() -> None:
    assert connection_names([("Connection", "keep-alive, X-Private ,"), ("Date", "x")]) == {"keep-alive", "x-private"}
    assert connection_names([("ETag", "x")]) == set()


@pytest.fixture
def pool() -> Pool:
    made = Pool(read_timeout=5.0)
    yield made
    made.close()


def test_keep_alive_connections_are_reused(pool: Pool) -> None:
    backend = RawBackend(lambda head: answer(body=b"hello")[: -5 if head.startswith(b"HEAD") else None])
    try:
        for _ in range(5):
            got = pool.request(backend.url, "GET", "/files/a", [])
            assert (got.status, got.small, got.whole()) == (200, True, b"hello")
        head = pool.request(backend.url, "HEAD", "/files/a", [])
        assert head.length == 0 and dict(head.headers)["Content-Length"] == "5"
        head.release()
        assert pool.request(backend.url, "GET", "/files/a", []).whole() == b"hello"  # HEAD read no body: the connection is still in step
        assert backend.connections == 1 and len(backend.heads) == 7
    finally:
        backend.close()


def test_a_chunked_body_is_dechunked_and_the_connection_kept(pool: Pool) -> None:
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nTrailer: x\r\n\r\n"
    backend = RawBackend(lambda head: raw)
    try:
        for _ in range(2):
            got = pool.request(backend.url, "GET", "/", [])
            assert not got.small and b"".join(got.chunks()) == b"hello world"
        assert backend.connections == 1
    finally:
        backend.close()


def test_a_body_without_length_is_read_to_the_close(pool: Pool) -> None:
    backend = RawBackend(lambda head: b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * (3 * CHUNK), close_after=1)
    try:
        got = pool.request(backend.url, "GET", "/", [])
        chunks = list(got.chunks())
        assert b"".join(chunks) == b"x" * (3 * CHUNK) and max(map(len, chunks)) <= CHUNK
        got = pool.request(backend.url, "GET", "/", [])  # not pooled: a new connection
        assert len(b"".join(got.chunks())) == 3 * CHUNK and backend.connections == 2
    finally:
        backend.close()


def test_an_interim_answer_is_skipped(pool: Pool) -> None:
    backend = RawBackend(lambda head: b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + answer(body=b"ok"))
    try:
        got = pool.request(backend.url, "GET", "/", [])
        assert (got.status, got.headers, got.whole()) == (200, [("Content-Length", "2")], b"ok")
    finally:
        backend.close()


def test_a_pooled_connection_the_backend_closed_is_retried_once_on_a_new_one(pool: Pool) -> None:
    backend = RawBackend(lambda head: answer(body=b"ok"), close_after=1)  # no "Connection: close": the close races our reuse
    try:
        for _ in range(3):
            assert pool.request(backend.url, "GET", "/", []).whole() == b"ok"
        assert backend.connections == 3
    finally:
        backend.close()


def test_a_fresh_connection_that_gets_no_answer_is_an_error(pool: Pool) -> None:
    backend = RawBackend(lambda head: None)
    try:
        with pytest.raises(UpstreamError):
            pool.request(backend.url, "GET", "/", [])
        assert backend.connections == 1  # not retried: the backend itself is failing
    finally:
        backend.close()
    with pytest.raises(OSError):
        pool.request(backend.url, "GET", "/", [])  # nobody listens now


def test_a_body_cut_short_is_an_error_and_the_connection_dropped(pool: Pool) -> None:
    backend = RawBackend(lambda head: answer(body=b"x" * 10)[:-4], close_after=1)
    big = RawBackend(lambda head: answer(body=b"y" * (2 * CHUNK))[: -CHUNK // 2], close_after=1)
    try:
        with pytest.raises(UpstreamError):
            pool.request(backend.url, "GET", "/", []).whole()
        stream = pool.request(big.url, "GET", "/", []).chunks()
        with pytest.raises(UpstreamError):
            b"".join(stream)
        assert pool._idle.get(pool.origin(backend.url)) in (None, []) and pool._idle.get(pool.origin(big.url)) in (None, [])
    finally:
        backend.close()
        big.close()


def test_a_stream_abandoned_early_closes_its_connection(pool: Pool) -> None:
    backend = RawBackend(lambda head: answer(body=b"z" * (4 * CHUNK)))
    try:
        stream = pool.request(backend.url, "GET", "/", []).chunks()
        next(stream)
        stream.close()
        assert pool.request(backend.url, "GET", "/", []).status == 200 and backend.connections == 2
    finally:
        backend.close()


@pytest.mark.parametrize("body", [b"-5\r\nhello\r\n0\r\n\r\n", b"0x5\r\nhello\r\n0\r\n\r\n", b"5\r\nhelloXX\r\n0\r\n\r\n", b"\r\nhello\r\n0\r\n\r\n"])
def test_a_malformed_chunked_body_is_a_backend_failure_and_its_connection_dropped(pool: Pool, body: bytes) -> None:
    backend = RawBackend(lambda head: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    try:
        with pytest.raises(UpstreamError):
            b"".join(pool.request(backend.url, "GET", "/", []).chunks())
        pool.request(backend.url, "GET", "/", []).discard()
        assert backend.connections == 2
    finally:
        backend.close()
