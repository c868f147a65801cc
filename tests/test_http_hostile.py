"""Hostile HTTP input against the files API and through the router, both real gunicorn processes.

Names (traversal, encoded traversal, absolute paths, NUL and control characters, overlong names,
invalid UTF-8 escapes, unicode), Range headers (multiple, suffix, reversed, past 2**64, garbage,
a thousand ranges), If-None-Match and If-Range garbage, huge headers, bad methods and request
lines. Every request is written raw to a socket (http.client refuses most of them), once to the
files API and once to a router in front of it. Each answer must be one of the statuses its case
allows, never a 5xx, within the socket timeout (no hang); an error from the app is the contract's
JSON ``{"error", "message"}``; a 200 or 206 carries exactly the member's bytes (or the range its
Content-Range names); and the router answers with the same status as the files API. Requests that
gunicorn itself refuses (a request line or header over its limits, a malformed request) get
gunicorn's own 4xx, which is not JSON: only cases marked ``server`` may be answered that way.

At the end both servers still run their first worker (none crashed), their logs hold no
traceback, and no answer carried the bytes of a file planted just outside the archive.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest
from des_v1_writer import V1Member, write_v1

from desq.settings import load_settings
from desq.storage.local import LocalStorage
from archives import pack
from procs import children
from test_router import Gunicorn

LAYOUT = load_settings(env={}).layout
MiB = 1 << 20
SECRET = b"SECRET-BESIDE-THE-ARCHIVE-7f3a"
TIMEOUT = 30.0
MEMBERS = {
    "20251120_1": (b"hello, archive\n", "text/plain"),
    "20251120_7": (bytes(range(256)) * 19 + b"x" * 136, None),  # 5,000 bytes
    "20251120_big": (bytes(i * 7 % 251 for i in range(2 * MiB + 3)), "application/pdf"),  # three blocks
    "20251120_zażółć": ("gęś".encode(), "text/plain; charset=utf-8"),
}
V1_MEMBERS = {"20251121_5": b"from a DES v1 container" * 40}
ALL = {n: d for n, (d, _) in MEMBERS.items()} | V1_MEMBERS
ETAG_OF: dict[str, str] = {}


@dataclass(frozen=True)
class Case:
    """One raw request and what may come back."""

    id: str
    target: bytes
    expect: frozenset[int]
    method: bytes = b"GET"
    headers: tuple[tuple[bytes, bytes | None], ...] = ()
    """Header lines; a None value writes the name alone, as the whole line."""
    member: str | None = None
    """The member a 200/206 must carry."""
    server: bool = False
    """gunicorn itself may refuse this request (its own 4xx, not JSON)."""
    line: bytes | None = None
    """A whole request line, instead of ``method target HTTP/1.1``."""
    host: bool = True


def _c(id: str, target: str | bytes, *expect: int, **kw: object) -> Case:
    raw = target if isinstance(target, bytes) else target.encode("ascii")
    return Case(id, raw, frozenset(expect), **kw)  # type: ignore[arg-type]


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    raw_head: bytes = field(repr=False, default=b"")


def send(port: int, request: bytes) -> Answer:
    """Write ``request`` raw and read the answer to EOF; a silent server fails the test (a hang)."""
    deadline = time.monotonic() + TIMEOUT
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        try:
            sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server refused early and closed; its answer may still be readable
        parts = []
        while True:
            assert time.monotonic() < deadline, f"no complete answer within {TIMEOUT:g} s: {request[:200]!r}"
            try:
                chunk = sock.recv(1 << 16)
            except ConnectionResetError:
                break
            if not chunk:
                break
            parts.append(chunk)
    data = b"".join(parts)
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, f"no HTTP answer to {request[:200]!r}: {data[:200]!r}"
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _dechunk(body)
    return Answer(status, headers, body, head)


def _dechunk(body: bytes) -> bytes:
    out, rest = bytearray(), body
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        rest = rest[size + 2 :]
    return bytes(out)


def request_bytes(case: Case) -> bytes:
    line = case.line if case.line is not None else case.method + b" " + case.target + b" HTTP/1.1"
    head = [line] + ([b"Host: 127.0.0.1"] if case.host else []) + [b"Connection: close"] + [k if v is None else k + b": " + v for k, v in case.headers]
    return b"\r\n".join(head) + b"\r\n\r\n"


# --- the cases --------------------------------------------------------------------------------


def name_cases() -> list[Case]:
    bad = {  # 400 from the layout: never a valid name
        "dotdot": "..", "dotdot-etc": "../../etc/passwd", "enc-dotdot": "%2e%2e", "enc-traversal": "%2e%2e%2f%2e%2e%2fsecret.txt",
        "mixed-traversal": "..%2f..%2fsecret.txt", "upper-enc": "%2E%2E%2F%2E%2E%2Fsecret.txt", "double-enc": "%252e%252e%252fsecret.txt",
        "name-then-up": "20251120_1%2f..%2f..%2fsecret.txt", "backslash": "20251120_a%5c..%5csecret.txt",
        "windows": "C:%5cWindows%5cwin.ini", "unc": "%5c%5cserver%5cshare", "file-url": "file:%2f%2f%2fetc%2fpasswd",
        "dot-slash": "./20251120_1", "trailing-slash": "20251120_1/", "nul-end": "20251120_1%00", "nul-mid": "20251120_%00x",
        "nul-only": "%00", "crlf-inject": "20251120_1%0d%0aX-Injected:%201", "ctl-01": "20251120_%01", "ctl-1f": "%1f",
        "del": "20251120_%7f", "tab": "20251120_1%09", "esc": "20251120_%1b[31m", "bad-date": "20251340_1", "no-id": "20251120_",
        "no-date": "x", "space": "%20", "overlong-256": "20251120_" + "a" * 247, "overlong-8000": "20251120_" + "a" * 7990,
        "overlong-utf8": "20251120_" + "%C5%BC" * 200, "utf8-ff": "20251120_%ff", "utf8-fffe": "%ff%fe", "utf8-overlong-slash": "20251120_%c0%af",
        "utf8-surrogate": "20251120_%ed%a0%80", "utf8-5byte": "20251120_%f8%88%80%80%80", "utf8-lone-cont": "20251120_%80",
        "utf8-truncated": "20251120_%e2%82", "replacement-char": "20251120_%ef%bf%bd", "prefix-bad": "in%20v_20251120_1",
    }
    unknown = {  # well-formed names the archive does not hold: 404
        "max-length-255": "20251120_" + "a" * 246, "rtl-override": "20251120_%e2%80%ae1", "fullwidth-slash": "20251120_%ef%bc%8fetc",
        "emoji": "20251120_%f0%9f%8e%89", "nfd": "20251120_zaz%cc%87o%cc%81%c5%82c%cc%81", "zero-width": "20251120_1%e2%80%8b",
        "dots-in-id": "20251120_..", "dots-enc-in-id": "20251120_%2e%2e", "percent-alone": "20251120_%", "percent-g": "20251120_%g0",
        "percent-short": "20251120_%2", "other-day": "20240229_1", "prefix": "INV-1_20251120_1",
    }
    cases = [_c(f"name-{k}", "/files/" + v, 400) for k, v in bad.items()]
    cases += [_c(f"name-{k}", "/files/" + v, 404) for k, v in unknown.items()]
    cases += [_c(f"meta-{k}", "/meta/" + v, 400) for k, v in list(bad.items())[:20]]
    cases += [
        _c("name-unicode-hit", "/files/" + quote("20251120_zażółć"), 200, member="20251120_zażółć"),
        _c("name-v1-hit", "/files/20251121_5", 200, member="20251121_5"),
        _c("name-query-garbage", "/files/20251120_1?created_at=%00&created_at=x&" + "a=b&" * 500, 200, member="20251120_1"),
        _c("name-raw-utf8", "/files/20251120_za\u017c\u00f3\u0142\u0107".encode(), 400, server=True),
        _c("name-raw-latin1", b"/files/20251120_\xff", 400, server=True),
        _c("name-raw-ctl", b"/files/20251120_\x01", 400, server=True),
        _c("name-raw-del", b"/files/20251120_\x7f", 400, server=True),
        _c("name-raw-space", b"/files/20251120 1", 400, server=True),
        _c("name-raw-nul", b"/files/20251120_\x00", 400, server=True),
        _c("name-abs-path", "/files//etc/passwd", 400, 404),
        _c("name-abs-enc", "/files/%2fetc%2fpasswd", 400, 404),
        _c("meta-abs-enc", "/meta/%2fetc%2fpasswd", 400, 404),
        _c("name-abs-double", "/files///..//..//secret.txt", 400, 404),
        _c("name-empty", "/files/", 404),
        _c("name-none", "/files", 404),
        _c("name-10k", "/files/" + "a" * 10_000, 414, server=True),
        _c("name-100k-traversal", "/files/" + "..%2f" * 20_000, 414, server=True),
        _c("absolute-form-target", "http://127.0.0.1/files/20251120_1", 200, 400, member="20251120_1", server=True),
        _c("asterisk-target", "*", 400, 404, server=True),
        _c("no-leading-slash", "files/20251120_1", 400, 404, server=True),
    ]
    return cases


def range_cases() -> list[Case]:
    seven, big = "/files/20251120_7", "/files/20251120_big"

    def r(id: str, value: str | bytes, *expect: int, target: str = seven, server: bool = False, **kw: object) -> Case:
        raw = value if isinstance(value, bytes) else value.encode("latin-1")
        member = target.rsplit("/", 1)[1]
        return _c(f"range-{id}", target, *expect, headers=((b"Range", raw),), member=member, server=server, **kw)

    many = ",".join(f"{i}-{i}" for i in range(1000))
    return [
        r("first-byte", "bytes=0-0", 206), r("suffix-1", "bytes=-1", 206), r("suffix-0", "bytes=-0", 200, 416),
        r("suffix-all", "bytes=-5000", 206), r("suffix-more", "bytes=-999999", 206), r("open", "bytes=4999-", 206),
        r("whole", "bytes=0-4999", 206), r("past-end", "bytes=0-5000", 206), r("at-end", "bytes=5000-", 416),
        r("beyond", "bytes=5000-5000", 416), r("two", "bytes=0-1,3-4", 200), r("reversed", "bytes=10-5", 200, 416),
        r("overflow-end", "bytes=0-18446744073709551616", 206), r("overflow-start", "bytes=18446744073709551616-", 416),
        r("overflow-suffix", "bytes=-18446744073709551617", 206), r("overflow-both", "bytes=18446744073709551615-18446744073709551616", 416),
        r("huge-digits", "bytes=" + "9" * 5000 + "-", 200, 416), r("huge-digits-end", "bytes=0-" + "9" * 5000, 200, 206),
        r("garbage", "bytes=abc", 200), r("empty-set", "bytes=", 200), r("no-equals", "bytes", 200), r("dash", "bytes=-", 200),
        r("double-dash", "bytes=--5", 200), r("neg-end", "bytes=5--6", 200), r("params", "bytes=0-5;x=1", 200, 206),
        r("spaces", "bytes = 0-5", 200, 206), r("hex", "bytes=0x10-0x20", 200), r("exp", "bytes=1e3-2e3", 200),
        r("plus", "bytes=+5-10", 200, 206), r("arabic-digits", "bytes=\u0660-\u0665".encode(), 200), r("units", "items=0-5", 200),
        r("upper-units", "BYTES=0-5", 200, 206), r("thousand", "bytes=" + many, 200), r("overlapping", "bytes=" + ",".join(["0-4999"] * 500), 200),
        r("five-thousand", "bytes=" + ",".join(f"{i}-{i}" for i in range(5000)), 400, 431, server=True),
        r("nul", b"bytes=0-5\x00", 400, server=True), r("ctl", b"bytes=0-5\x01x", 200, 206, 400, server=True),
        r("big-block-edge", f"bytes={MiB - 1}-{MiB}", 206, target=big), r("big-tail", "bytes=-3", 206, target=big),
        r("big-at-end", f"bytes={2 * MiB + 3}-", 416, target=big), r("big-two", f"bytes=0-0,{MiB}-{MiB}", 200, target=big),
        r("v1-middle", "bytes=100-199", 206, target="/files/20251121_5"), r("v1-past", "bytes=920-", 416, target="/files/20251121_5"),
        _c("range-duplicate-headers", seven, 200, 206, headers=((b"Range", b"bytes=0-1"), (b"Range", b"bytes=5-6")), member="20251120_7"),
        _c("range-head", seven, 206, method=b"HEAD", headers=((b"Range", b"bytes=0-9"),), member="20251120_7"),
        _c("range-unknown-name", "/files/20251120_2", 404, headers=((b"Range", b"bytes=0-9"),)),
        _c("range-bad-name", "/files/..", 400, headers=((b"Range", b"bytes=0-9"),)),
    ]


def conditional_cases() -> list[Case]:
    seven = "/files/20251120_7"
    etag = ETAG_OF["20251120_7"].encode()

    def h(id: str, name: bytes, value: bytes, *expect: int, server: bool = False, extra: tuple[tuple[bytes, bytes], ...] = ()) -> Case:
        return _c(id, seven, *expect, headers=((name, value), *extra), member="20251120_7", server=server)

    rng = ((b"Range", b"bytes=0-9"),)
    return [
        h("inm-match", b"If-None-Match", etag, 304), h("inm-star", b"If-None-Match", b"*", 304), h("inm-weak", b"If-None-Match", b"W/" + etag, 304),
        h("inm-list", b"If-None-Match", b'"a", "b", ' + etag, 304), h("inm-other", b"If-None-Match", b'"nomatch"', 200),
        h("inm-unquoted", b"If-None-Match", b"garbage", 200), h("inm-quote", b"If-None-Match", b'"', 200), h("inm-w", b"If-None-Match", b"W/", 200),
        h("inm-commas", b"If-None-Match", b"," * 6000, 200), h("inm-thousand", b"If-None-Match", b", ".join(b'"%d"' % i for i in range(700)), 200),
        h("inm-nul", b"If-None-Match", b'"a\x00"', 400, server=True), h("inm-with-range", b"If-None-Match", etag, 304, extra=rng),
        h("ir-match", b"If-Range", etag, 206, extra=rng), h("ir-other", b"If-Range", b'"nomatch"', 200, extra=rng),
        h("ir-weak", b"If-Range", b"W/" + etag, 200, extra=rng), h("ir-date", b"If-Range", b"Wed, 21 Oct 2015 07:28:00 GMT", 200, extra=rng),
        h("ir-garbage", b"If-Range", b"\xff\xfe garbage", 200, extra=rng), h("ir-empty", b"If-Range", b"", 200, extra=rng),
        h("ir-no-range", b"If-Range", b'"nomatch"', 200), h("ir-unsatisfiable-other", b"If-Range", b'"nomatch"', 200, extra=((b"Range", b"bytes=9000-"),)),
        h("ir-unsatisfiable-match", b"If-Range", etag, 416, extra=((b"Range", b"bytes=9000-"),)),
        h("ims-garbage", b"If-Modified-Since", b"yesterday", 200), h("ius-garbage", b"If-Unmodified-Since", b"\x01\x02", 200, 400, server=True),
    ]


def header_and_method_cases() -> list[Case]:
    one = "/files/20251120_1"
    ok = {"member": "20251120_1"}
    return [
        _c("header-8000", one, 200, headers=((b"X-Pad", b"p" * 8000),), **ok),
        _c("header-100k", one, 400, 431, headers=((b"X-Pad", b"p" * 100_000),), server=True),
        _c("headers-90", one, 200, headers=tuple((b"X-H%d" % i, b"v") for i in range(90)), **ok),
        _c("headers-500", one, 400, 431, headers=tuple((b"X-H%d" % i, b"v") for i in range(500)), server=True),
        _c("header-space-name", one, 400, headers=((b"X Bad", b"1"),), server=True),
        _c("header-no-colon", one, 400, headers=((b"NoColonHere", None),), server=True),
        _c("header-utf8-value", one, 200, headers=((b"X-Name", "zażółć".encode()),), **ok),
        _c("header-accept-garbage", one, 200, headers=((b"Accept", b"*/*;q=abc, \xff"),), **ok),
        _c("content-length-garbage", one, 400, headers=((b"Content-Length", b"abc"),), server=True),
        _c("content-length-negative", one, 400, headers=((b"Content-Length", b"-1"),), server=True),
        _c("smuggling", one, 400, headers=((b"Content-Length", b"0"), (b"Transfer-Encoding", b"chunked")), server=True),
        _c("no-host", one, 200, 400, host=False, server=True, **ok),
        _c("http-1.0", one, 200, line=b"GET /files/20251120_1 HTTP/1.0", **ok),
        _c("http-9.9", one, 400, 505, line=b"GET /files/20251120_1 HTTP/9.9", server=True),
        _c("http-garbage", one, 400, line=b"GET /files/20251120_1 HTTQ/1.1", server=True),
        _c("no-version", one, 400, line=b"GET /files/20251120_1", server=True),
        _c("extra-words", one, 400, line=b"GET /files/20251120_1 HTTP/1.1 extra", server=True),
        *(_c(f"method-{m.decode()}", one, 405, method=m) for m in (b"POST", b"PUT", b"DELETE", b"PATCH", b"TRACE", b"PROPFIND", b"FOO")),
        _c("method-OPTIONS", one, 200, method=b"OPTIONS"),
        _c("method-CONNECT", one, 400, 405, method=b"CONNECT", server=True),
        _c("method-lowercase", one, 400, 405, method=b"get", server=True),
        _c("method-long", one, 400, method=b"G" * 1000, server=True),
        _c("method-nul", one, 400, method=b"GE\x00T", server=True),
        _c("method-head", one, 200, method=b"HEAD", **ok),
        _c("meta-post", "/meta/20251120_1", 405, method=b"POST"),
        _c("meta-head", "/meta/20251120_1", 200, 405, method=b"HEAD"),
    ]


def all_cases() -> list[Case]:
    return name_cases() + range_cases() + conditional_cases() + header_and_method_cases()


# --- the servers ------------------------------------------------------------------------------


def _build(root: Path) -> None:
    storage = LocalStorage(root)
    pack(storage, {name: (data, kind, None) for name, (data, kind) in MEMBERS.items()})
    for name, data in V1_MEMBERS.items():
        storage.put(LAYOUT.locate_name(name).container, write_v1([V1Member(name, data, mime="text/plain")]))


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gunicorn, Gunicorn]]:
    top = tmp_path_factory.mktemp("hostile")
    (top / "secret.txt").write_bytes(SECRET)
    _build(top / "archive")
    (top / "archive" / "secret.txt").write_bytes(SECRET)  # inside the root, but no name maps to it
    files = Gunicorn({"DESQ_ARCHIVE_URL": str(top / "archive")}, top / "files.log")
    router = Gunicorn({"DESQ_WEB_BACKENDS": files.url}, top / "router.log", role="router")
    try:
        for name in ALL:
            ETAG_OF[name] = send(files.port, request_bytes(_c("etag", "/files/" + quote(name), 200))).headers["etag"]
        yield files, router
    finally:
        router.stop()
        files.stop()


def check(case: Case, answer: Answer, where: str) -> None:
    """The case's rules for one answer."""
    label = f"{case.id} {where}: {answer.status}"
    assert answer.status < 500, f"{label} is a 5xx: {answer.body[:300]!r}"
    assert answer.status in case.expect, f"{label}, expected one of {sorted(case.expect)}: {answer.body[:300]!r}"
    assert SECRET not in answer.body, f"{label}: the answer holds the secret planted beside the archive"
    assert b"X-Injected" not in answer.raw_head, f"{label}: a header was injected"
    if answer.status >= 400:
        if not answer.headers.get("content-type", "").startswith("application/json"):
            assert case.server, f"{label} is not the contract's JSON error: {answer.headers.get('content-type')!r} {answer.body[:200]!r}"
            return
        error = json.loads(answer.body)
        assert isinstance(error, dict) and isinstance(error.get("error"), str) and isinstance(error.get("message"), str), f"{label}: {error!r}"
        if answer.status == 416:
            assert error["error"] == "bad_range" and re.fullmatch(r"bytes \*/\d+", answer.headers["content-range"]), f"{label}: {answer.headers}"
    if answer.status in (200, 206) and case.member is not None:
        data = ALL[case.member]
        if answer.status == 206:
            first, last, total = map(int, re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", answer.headers["content-range"]).groups())  # type: ignore[union-attr]
            assert total == len(data), f"{label}: Content-Range {answer.headers['content-range']} for {len(data)} bytes"
            data = data[first : last + 1]
        assert answer.headers["content-length"] == str(len(data)), f"{label}: Content-Length {answer.headers['content-length']}, not {len(data)}"
        expected = b"" if case.method == b"HEAD" else data
        assert answer.body == expected, f"{label}: {len(answer.body)} bytes, not the {len(expected)} expected"
        assert answer.headers["etag"] == ETAG_OF[case.member] and answer.headers["accept-ranges"] == "bytes", label
    if answer.status == 304:
        assert answer.body == b"" and answer.headers["etag"] == ETAG_OF[case.member or ""], label


def test_hostile_requests_direct_and_through_the_router(servers: tuple[Gunicorn, Gunicorn]) -> None:
    files, router = servers
    workers = {"files": files.worker_pid(), "router": router.worker_pid()}
    cases = all_cases()
    assert len({c.id for c in cases}) == len(cases)
    failures = []
    for case in cases:
        request = request_bytes(case)
        answers = {"direct": send(files.port, request), "through the router": send(router.port, request)}
        for where, answer in answers.items():
            try:
                check(case, answer, where)
            except AssertionError as exc:
                failures.append(str(exc).splitlines()[0])
        if answers["direct"].status != answers["through the router"].status:
            failures.append(f"{case.id}: the router answered {answers['through the router'].status}, the files API {answers['direct'].status}")
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures)
    print(f"\n{len(cases)} hostile requests, each direct and through the router ({2 * len(cases)} requests): no 5xx, no hang")
    assert send(router.port, request_bytes(_c("after", "/files/20251120_big", 200))).body == ALL["20251120_big"]
    assert {"files": files.worker_pid(), "router": router.worker_pid()} == workers, "a worker died or was replaced"
    assert children(files.process.pid) == [workers["files"]] and children(router.process.pid) == [workers["router"]]
    for server in (files, router):
        server.log.flush()
        log = Path(server.log.name).read_text(errors="replace")
        assert "Traceback" not in log and "unhandled error" not in log, log[-3000:]
