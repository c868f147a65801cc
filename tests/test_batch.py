"""``POST /batch`` through Flask's test client, and its planner and reader: order, errors.json,
names, big and corrupted members, request limits, tokens, storage requests and memory."""

from __future__ import annotations

import io
import json
import os
import tarfile
import tracemalloc
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from hypothesis import given, settings as hsettings, strategies as st

from archives import pack
from desq.archive import Archive, store_external
from desq.batch import GROUP_BYTES, MAX_BODY, Ask, BatchReader, Failure, Item, by_container, windows
from desq.container import ContainerWriter
from desq.files import FileService
from desq.published import publish
from desq.settings import load_settings
from desq.storage import ObjectInfo, Storage, StorageUnavailable
from desq.storage.counting import CountingStorage
from desq.storage.local import LocalStorage
from desq.tarstream import BatchAborted, tar_stream
from web import create_app

MiB = 1 << 20
LAYOUT = load_settings(env={}).layout
WHEN = datetime(2025, 11, 20, 9, 30, 15, tzinfo=timezone.utc)
LONG = "20251120_" + "ł" * 120  # 249 bytes of UTF-8: a pax name
FILES = {
    "20251120_1": (b"hello, archive\n", "text/plain", WHEN),
    "20251120_2": (os.urandom(3 * MiB + 5), None, WHEN),
    "20251120_empty": (b"", None, WHEN),
    "20251120_zażółć": ("gęś".encode(), None, WHEN),
    LONG: (b"long name", None, WHEN),
}


def same_container(count: int, start: int = 0, day: str = "20251120") -> list[str]:
    """``count`` names of one day that share one container."""
    key = LAYOUT.locate_name(f"{day}_{start}").container
    names, i = [], start
    while len(names) < count:
        if LAYOUT.locate_name(f"{day}_{i}").container == key:
            names.append(f"{day}_{i}")
        i += 1
    return names


def untar(data: bytes) -> tuple[list[tuple[tarfile.TarInfo, bytes]], list[dict]]:
    """Members read in tarfile's streaming mode, and the errors.json that must come last."""
    members = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tar:
        for info in tar:
            assert info.isreg() and info.mode == 0o644
            members.append((info, tar.extractfile(info).read()))
    assert members[-1][0].name == "errors.json"
    return members[:-1], json.loads(members[-1][1])


@pytest.fixture
def archive_dir(tmp_path: Path) -> Path:
    pack(LocalStorage(tmp_path / "archive"), FILES)
    return tmp_path / "archive"


def client_for(archive_dir: Path, **env: str) -> FlaskClient:
    return create_app(load_settings(env={"DESQ_ARCHIVE_URL": str(archive_dir)} | env)).test_client()


@pytest.fixture
def client(archive_dir: Path) -> FlaskClient:
    return client_for(archive_dir)


def test_members_in_the_order_asked_then_errors(client: FlaskClient) -> None:
    asked = [LONG, "20251120_2", "nope", "../x", "20251120_1", "20251120_empty", "20251120_1", "20251120_zażółć", "20251121_1"]
    r = client.post("/batch", json={"names": asked})
    assert r.status_code == 200 and r.mimetype == "application/x-tar"
    members, errors = untar(r.data)
    assert [m.name for m, _ in members] == [LONG, "20251120_2", "20251120_1", "20251120_empty", "20251120_1", "20251120_zażółć"]
    for info, data in members:
        assert data == FILES[info.name][0] and info.size == len(data) and info.mtime == WHEN.timestamp()
    assert errors == [
        {"index": 2, "name": "nope", "error": "bad_request", "message": errors[0]["message"]},
        {"index": 3, "name": "../x", "error": "bad_request", "message": errors[1]["message"]},
        {"index": 8, "name": "20251121_1", "error": "not_found", "message": "no such file in the archive"},
    ]
    assert "desq_batch_files_total" in client.get("/metrics").data.decode()


def test_the_stream_is_what_tarfile_writes(client: FlaskClient) -> None:
    data = client.post("/batch", json={"names": ["20251120_1", "20251120_empty"]}).data
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for name in ("20251120_1", "20251120_empty"):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(FILES[name][0]), int(WHEN.timestamp())
            tar.addfile(info, io.BytesIO(FILES[name][0]))
        errors = untar(data)[1]
        body = json.dumps(errors, ensure_ascii=False, indent=1).encode() + b"\n"
        info = tarfile.TarInfo("errors.json")
        info.size, info.mtime = len(body), tarfile.open(fileobj=io.BytesIO(data), mode="r|").getmembers()[-1].mtime
        tar.addfile(info, io.BytesIO(body))
    assert data == out.getvalue()


def test_uid_mode(tmp_path: Path) -> None:
    env = {"DESQ_MODE": "uid", "DESQ_SOURCE_UID_KIND": "text", "DESQ_ARCHIVE_URL": str(tmp_path / "a")}
    layout = load_settings(env=env).layout
    storage = LocalStorage(tmp_path / "a")
    uids = ["a-1", "..", "errors.json", "ü" * 60]
    by_key: dict[str, list[str]] = {}
    for uid in uids:
        by_key.setdefault(layout.locate_uid(uid, "2025-11-20").container, []).append(uid)
    for key, names in by_key.items():
        out = io.BytesIO()
        with ContainerWriter(out) as w:
            for uid in names:
                w.add(uid, uid.encode() * 3, created_at=WHEN)
        storage.put(key, out.getvalue())
    publish(storage, date(2025, 11, 20))
    client = create_app(load_settings(env=env)).test_client()
    asked = [{"uid": u, "created_at": "2025-11-20T10:00:00Z"} for u in uids]
    asked += [{"uid": "a-1", "created_at": "2025-11-21"}, {"uid": "a-1", "created_at": "someday"}, {"uid": "zz", "created_at": "2025-11-20"}]
    members, errors = untar(client.post("/batch", json={"files": asked}).data)
    assert [(m.name, d) for m, d in members] == [("a-1", b"a-1" * 3), ("ü" * 60, ("ü" * 60).encode() * 3)]
    assert [(e["index"], e["uid"], e["created_at"], e["error"]) for e in errors] == [
        (1, "..", "2025-11-20T10:00:00Z", "bad_request"),
        (2, "errors.json", "2025-11-20T10:00:00Z", "bad_request"),
        (4, "a-1", "2025-11-21", "not_archived"),
        (5, "a-1", "someday", "bad_request"),
        (6, "zz", "2025-11-20", "not_found"),
    ]
    assert client.post("/batch", json={"names": ["a-1"]}).status_code == 400  # the other mode's shape


def test_int_uids_may_be_json_numbers(tmp_path: Path) -> None:
    env = {"DESQ_MODE": "uid", "DESQ_ARCHIVE_URL": str(tmp_path / "a")}
    where = load_settings(env=env).layout.locate_uid("42", "2025-11-20")
    out = io.BytesIO()
    with ContainerWriter(out) as w:
        w.add("42", b"forty-two")
    LocalStorage(tmp_path / "a").put(where.container, out.getvalue())
    publish(LocalStorage(tmp_path / "a"), date(2025, 11, 20))
    client = create_app(load_settings(env=env)).test_client()
    members, errors = untar(client.post("/batch", json={"files": [{"uid": 42, "created_at": "2025-11-20"}, {"uid": "x", "created_at": "2025-11-20"}]}).data)
    assert [(m.name, d, m.mtime) for m, d in members] == [("42", b"forty-two", datetime(2025, 11, 20, tzinfo=timezone.utc).timestamp())]
    assert [(e["uid"], e["error"]) for e in errors] == [("x", "bad_request")]


@pytest.mark.parametrize(
    "body",
    [
        b"", b"not json", b"[1, 2", b'{"names": ["20251120_1"]} trailing', b'"20251120_1"', b"[]", b'{"names": []}',
        b'{"names": "20251120_1"}', b'{"names": [1]}', b'{"names": [null]}', b'{"names": ["20251120_1"], "extra": 1}',
        b'{"names": ["a"], "names": ["b"]}', b'{"names": [NaN]}', b"\xff\xfe{", b"[" * 100_000 + b"]" * 100_000,
        b'{"files": [{"uid": "1", "created_at": "2025-11-20"}]}',
        json.dumps({"names": ["20251120_1"] * 1001}).encode(),
    ],
)
def test_a_bad_request_is_a_json_400_before_any_tar_byte(client: FlaskClient, body: bytes) -> None:
    r = client.post("/batch", data=body, content_type="application/json")
    assert r.status_code == 400 and r.json["error"] == "bad_request" and r.json["message"], body[:40]


def test_limits(client: FlaskClient) -> None:
    members, errors = untar(client.post("/batch", json={"names": ["20251120_1"] * 1000}).data)
    assert len(members) == 1000 and errors == []
    assert "1001 entries" in client.post("/batch", json={"names": ["20251120_1"] * 1001}).json["message"]
    huge = json.dumps({"names": ["20251120_1"] * 999 + ["2" * (MAX_BODY - 13 * 999)]}).encode()
    assert len(huge) > MAX_BODY
    assert client.post("/batch", data=huge).status_code == 400
    padded = json.dumps({"names": ["20251120_1"]}).encode() + b" " * (MAX_BODY - 30)
    assert client.post("/batch", data=padded).status_code == 200  # just under the cap: read whole


def test_tokens(archive_dir: Path) -> None:
    token = "tok-0123456789abcdef"
    client = client_for(archive_dir, DESQ_WEB_API_TOKENS=token)
    for headers in ({}, {"Authorization": "Bearer wrong-token-0000000"}):
        r = client.post("/batch", json={"names": ["20251120_1"]}, headers=headers)
        assert r.status_code == 401 and r.json["error"] == "unauthorized"
    r = client.post("/batch", json={"names": ["20251120_1"]}, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and untar(r.data)[0][0][1] == b"hello, archive\n"


def test_a_corrupted_member_is_an_error_and_its_neighbours_are_served(archive_dir: Path) -> None:
    key = archive_dir / LAYOUT.locate_name("20251120_1").container
    raw = bytearray(key.read_bytes())
    raw[raw.index(b"hello, archive")] ^= 0x01
    key.write_bytes(bytes(raw))
    client = client_for(archive_dir)
    r = client.post("/batch", json={"names": ["20251120_zażółć", "20251120_1", LONG]})
    members, errors = untar(r.data)
    assert b"ello, archive" not in r.data
    assert [m.name for m, _ in members] == ["20251120_zażółć", LONG]
    assert [(e["name"], e["error"]) for e in errors] == [("20251120_1", "integrity_error")]


def big_archive(root: Path, size: int, corrupt_at: int | None = None) -> tuple[LocalStorage, str, bytes]:
    """One member of ``size`` bytes in its container, a byte of it flipped at ``corrupt_at``."""
    name = "20251120_big"
    data = bytearray(os.urandom(size))
    out = io.BytesIO()
    with ContainerWriter(out) as w:
        w.add(name, bytes(data), created_at=WHEN)
    raw = bytearray(out.getvalue())
    if corrupt_at is not None:
        raw[raw.index(bytes(data[corrupt_at : corrupt_at + 64])) ] ^= 0x01
    storage = LocalStorage(root)
    storage.put(LAYOUT.locate_name(name).container, bytes(raw))
    return storage, name, bytes(data)


def service_on(storage: Storage) -> tuple[FileService, CountingStorage]:
    counted = CountingStorage(storage)
    return FileService(load_settings(env={}), Archive(counted)), counted


def test_a_member_failing_midway_stops_the_stream_and_sends_no_bad_bytes(tmp_path: Path) -> None:
    # the reader checks a frame of up to 8 MiB whole before its first byte; a bigger one block by block
    storage, name, data = big_archive(tmp_path / "a", 9 * MiB, corrupt_at=8 * MiB + 100)
    service, _ = service_on(storage)
    sent = b""
    with pytest.raises(BatchAborted):
        for chunk in tar_stream(BatchReader(service, budget=MiB).results([Ask(0, name)]), timezone.utc):
            sent += chunk
    assert data[: 8 * MiB] in sent and data[8 * MiB :][:4096] not in sent
    # failing in its first block: before the header, so an errors.json entry
    storage, name, data = big_archive(tmp_path / "b", 3 * MiB, corrupt_at=100)
    members, errors = untar(b"".join(tar_stream(BatchReader(service_on(storage)[0], budget=MiB).results([Ask(0, name)]), timezone.utc)))
    assert members == [] and errors[0]["error"] == "integrity_error"


def test_big_members_beside_the_container_stream_in_bounded_memory(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "a")
    names = same_container(3, day="20251120")
    key = LAYOUT.locate_name(names[0]).container
    size = 40 * MiB + 7
    out = io.BytesIO()
    with ContainerWriter(out) as w:
        for i, name in enumerate(names):
            block = bytes([i]) * MiB
            ref = store_external(storage, key, name, (block[: min(MiB, size - at)] for at in range(0, size, MiB)), size)
            w.add_external(name, size=size, checksum=ref.checksum, block_checksums=ref.block_checksums, external_key=ref.external_key)
    storage.put(key, out.getvalue())
    service, counted = service_on(storage)
    tracemalloc.start()
    got = {n: 0 for n in names}
    with tarfile.open(fileobj=_Pipe(tar_stream(BatchReader(service).results([Ask(i, n) for i, n in enumerate(names)]), timezone.utc)), mode="r|") as tar:
        for info in tar:
            f = tar.extractfile(info)
            while piece := f.read(MiB):
                assert info.name == "errors.json" or set(piece) == {names.index(info.name)}
                got[info.name] = got.get(info.name, 0) + len(piece)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [got[n] for n in names] == [size] * 3
    assert peak < 3 * GROUP_BYTES, peak
    assert sum(r.startswith("suffix") for r in counted.requests) == 1


class _Pipe(io.RawIOBase):
    """A stream of chunks as a file, for tarfile's streaming mode."""

    def __init__(self, chunks: object) -> None:
        self.chunks, self.left = iter(chunks), memoryview(b"")  # type: ignore[call-overload]

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self.left:
            chunk = next(self.chunks, None)  # type: ignore[call-overload]
            if chunk is None:
                return 0
            self.left = memoryview(chunk)
        n = min(len(buffer), len(self.left))
        buffer[:n], self.left = self.left[:n], self.left[n:]
        return n


def test_a_thousand_one_mib_files_in_bounded_memory_with_coalesced_reads(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "a")
    names = [n for start in (0, 1, 2, 3) for n in same_container(250, start * 1000)]
    pack(storage, {n: (bytes([i % 251]) * MiB, None, None) for i, n in enumerate(names)})
    containers = {LAYOUT.locate_name(n).container for n in names}
    service, counted = service_on(storage)
    tracemalloc.start()
    served = 0
    for chunk in tar_stream(BatchReader(service).results([Ask(i, n) for i, n in enumerate(names)]), timezone.utc):
        served += len(chunk)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert served > 1000 * MiB and peak < 3 * GROUP_BYTES, peak
    suffixes = [r for r in counted.requests if r.startswith("suffix")]
    reads = [r for r in counted.requests if r.startswith("read ")]
    assert sorted(r.split()[1] for r in suffixes) == sorted(containers)  # each container opened once
    assert len(reads) <= 1000 * MiB // GROUP_BYTES + len(containers)  # 8 members a read


def test_interleaved_containers_are_each_opened_once_and_read_together(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "a")
    a, b = same_container(20), same_container(20, 5000)
    assert LAYOUT.locate_name(a[0]).container != LAYOUT.locate_name(b[0]).container
    pack(storage, {n: (n.encode() * 100, None, None) for n in a + b})
    service, counted = service_on(storage)
    asked = [n for pair in zip(a, reversed(b)) for n in pair]
    members, errors = untar(b"".join(tar_stream(BatchReader(service).results([Ask(i, n) for i, n in enumerate(asked)]), timezone.utc)))
    assert [m.name for m, _ in members] == asked and errors == []
    assert sorted(r.split()[0] for r in counted.requests) == ["read", "read", "suffix", "suffix"]


@pytest.mark.integration
def test_on_s3_each_container_is_opened_once_and_neighbours_read_together(s3_endpoint: str, s3_bucket: str) -> None:
    from desq.storage.s3 import S3Storage

    storage = S3Storage(f"s3://{s3_bucket}/desq", endpoint_url=s3_endpoint)
    a, b = same_container(150), same_container(150, 5000)
    pack(storage, {n: (n.encode() * 3000, None, WHEN) for n in a + b})  # ~50 KiB each: 7.5 MiB a container
    service, counted = service_on(storage)
    asked = a + b[::-1] + ["20251120_nope"]
    members, errors = untar(b"".join(tar_stream(BatchReader(service).results([Ask(i, n) for i, n in enumerate(asked)]), timezone.utc)))
    assert [m.name for m, _ in members] == a + b[::-1] and all(d == m.name.encode() * 3000 for m, d in members)
    assert [e["error"] for e in errors] == ["not_found"]
    ops = sorted(r.split()[0] for r in counted.requests)
    assert ops.count("suffix") == 3 and ops.count("read") <= 4, counted.requests  # nope's container too; 2 windows of 8 MiB


def test_a_missing_container_is_asked_once(tmp_path: Path) -> None:
    service, counted = service_on(LocalStorage(tmp_path / "a"))
    names = same_container(5)
    _, errors = untar(b"".join(tar_stream(BatchReader(service).results([Ask(i, n) for i, n in enumerate(names)]), timezone.utc)))
    assert [e["error"] for e in errors] == ["not_found"] * 5 and len(counted.requests) == 1


class _Down(LocalStorage):
    def read_suffix(self, key: str, length: int, *, if_match: str | None = None) -> tuple[bytes, ObjectInfo]:
        raise StorageUnavailable(f"{key}: no answer")


def test_a_storage_that_does_not_answer_is_tried_three_times_per_batch(tmp_path: Path) -> None:
    service, counted = service_on(_Down(tmp_path / "a"))
    names = list({LAYOUT.locate_name(f"20251120_{i}").container: f"20251120_{i}" for i in range(40)}.values())[:10]
    _, errors = untar(b"".join(tar_stream(BatchReader(service).results([Ask(i, n) for i, n in enumerate(names)]), timezone.utc)))
    assert [e["error"] for e in errors] == ["unavailable"] * 10 and len(counted.requests) == 3
    assert all("not tried" in e["message"] for e in errors[3:])


# --- the planner --------------------------------------------------------------------------------

@st.composite
def items(draw: st.DrawFn) -> list[Item]:
    """Entries of up to 4 containers and 20 names, a member's size the same wherever it is asked."""
    sizes = draw(st.lists(st.one_of(st.none(), st.integers(0, 150)), min_size=84, max_size=84))
    picks = draw(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 20), st.booleans()), max_size=60))
    return [
        Item(Ask(i, f"n{n}"), f"c{c}", f"n{n}", sizes[c * 21 + n], failure=Failure("not_found", "") if failed else None)
        for i, (c, n, failed) in enumerate(picks)
    ]


@hsettings(max_examples=300, deadline=None)
@given(items(), st.integers(1, 120))
def test_windows_keep_the_order_and_the_budget(entries: list[Item], budget: int) -> None:
    got = list(windows(entries, budget))
    assert [i for w in got for i in w] == entries
    for w in got:
        big = [i for i in w if i.failure is None and (i.size is None or i.size > budget)]
        if big:
            assert w == big and len(w) == 1
            continue
        distinct = {(i.container, i.name): i.size for i in w if i.failure is None}
        assert sum(distinct.values()) <= budget
    for w, nxt in zip(got, got[1:]):  # a window ends only where the next item would not fit
        first = nxt[0]
        if first.failure is None and first.size is not None and first.size <= budget and not any(i.failure is None and (i.size is None or i.size > budget) for i in w):
            held = {(i.container, i.name): i.size for i in w if i.failure is None}
            assert (first.container, first.name) not in held and sum(held.values()) + first.size > budget
    for w in got:
        reads = by_container(w)
        assert sorted((c, n) for c, ns in reads.items() for n in ns) == sorted({(i.container, i.name) for i in w if i.failure is None})


def test_the_router_sends_a_batch_to_the_owner_of_most_then_to_the_others() -> None:
    from web.batch import owner_order

    assert owner_order(["b", "a", "b"], ["a", "b", "c"]) == ["b", "a", "c"]
    assert owner_order(["c", "a", "a", "c"], ["a", "b", "c"]) == ["c", "a", "b"]  # a tie: the first asked
    assert owner_order([], ["a", "b"]) == ["a", "b"]  # no entry the layout can place


def test_a_lone_surrogate_in_an_entry_is_its_error_not_the_whole_batchs(client: FlaskClient, tmp_path: Path) -> None:
    body = b'{"names": ["20251120_\\ud800", "20251120_2"]}'
    answer = client.post("/batch", data=body, content_type="application/json")
    members, errors = untar(answer.data)
    assert answer.status_code == 200 and [m.name for m, _ in members] == ["20251120_2"]
    assert [(e["index"], e["name"], e["error"]) for e in errors] == [(0, "20251120_\ud800", "bad_request")]
    env = {"DESQ_MODE": "uid", "DESQ_SOURCE_UID_KIND": "text", "DESQ_ARCHIVE_URL": str(tmp_path / "u")}
    uid_client = create_app(load_settings(env=env)).test_client()
    body = b'{"files": [{"uid": "a\\udfff", "created_at": "2025-11-20"}, {"uid": "b", "created_at": "2025-11-20\\ud800"}]}'
    members, errors = untar(uid_client.post("/batch", data=body, content_type="application/json").data)
    assert members == [] and [(e["index"], e["error"]) for e in errors] == [(0, "bad_request"), (1, "bad_request")]


def test_the_router_never_reuses_a_connection_left_in_the_middle_of_an_answer() -> None:
    from raw_backend import RawBackend, answer

    busy = RawBackend(lambda head: answer("503 Service Unavailable", b'{"error": "unavailable", "message": "busy"}' * 50))
    spare = RawBackend(lambda head: answer(body=b"\0" * 1024))
    env = {"DESQ_WEB_BACKENDS": f"{busy.url},{spare.url}", "DESQ_WEB_HEALTH_INTERVAL": "3600"}
    app = create_app(load_settings(env=env), role="router")
    group = app.extensions["desq.backends"]
    try:
        client = app.test_client()
        name = next(n for n in (f"20251120_{i}" for i in range(1000)) if group.order(load_settings(env=env).layout.locate_name(n).shard)[0] == busy.url)
        for _ in range(3):  # the busy owner's 503 is left unread each time; its connection must not be reused
            assert client.post("/batch", json={"names": [name]}).data == b"\0" * 1024
        assert len(busy.heads) == 3 and {b["url"]: b["failures"] for b in client.get("/routing").json["backends"]}[busy.url] == 0
        partial = client.post("/batch", json={"names": [name]}, buffered=False)
        next(partial.response)
        partial.close()  # a client that goes away midway
        assert client.post("/batch", json={"names": [name]}).data == b"\0" * 1024
        assert len(busy.heads) == 5
    finally:
        group.close()
        busy.close()
        spare.close()


def test_an_answer_left_unread_is_closed_before_its_connection_goes_back() -> None:
    import urllib3

    from raw_backend import RawBackend, answer
    from web.batch import _let_go

    busy = RawBackend(lambda head: answer("503 Service Unavailable", b"x" * 2300))
    pool = urllib3.PoolManager(maxsize=1, retries=False)
    try:
        unread = pool.request("POST", busy.url + "/batch", body=b"{}", preload_content=False)
        _let_go(unread)  # still referenced: nothing but _let_go may have settled its connection
        again = pool.request("POST", busy.url + "/batch", body=b"{}", preload_content=False)
        assert (unread.status, again.status, len(busy.heads)) == (503, 503, 2)
        again.read()
        _let_go(again)
    finally:
        pool.clear()
        busy.close()
