"""Container format v2: round trips, writer refusals, request budgets, checksums, merge."""

from __future__ import annotations

import io
import os
import random
import sys
import tracemalloc
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from desq.container import (
    BytesSource,
    ChecksumMismatch,
    ContainerError,
    ContainerReader,
    ContainerWriter,
    CorruptContainer,
    FileSource,
    MemberNotFound,
    WriterError,
    external_checksums,
    open_container,
)
from desq.container import format as fmt
from desq.layout import LAYOUT_VERSION
from sources import CountingSource, build

MiB = 1 << 20


# --- round trips ----------------------------------------------------------------------------

names_st = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=300).filter(
    lambda n: 1 <= len(n.encode("utf-8")) <= fmt.MAX_NAME_BYTES
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    names=st.lists(names_st, min_size=1, max_size=25, unique=True),
    sizes=st.lists(st.one_of(st.integers(0, 9000), st.integers(0, 3 * MiB)), min_size=25, max_size=25),
    seed=st.integers(0, 2**32),
)
def test_round_trip(names: list[str], sizes: list[int], seed: int) -> None:
    rng = random.Random(seed)
    members = {name: rng.randbytes(size) for name, size in zip(names, sizes)}
    reader = open_container(BytesSource(build(members.items())))
    assert reader.count == len(members) and reader.verify() == []
    assert [(m.name, m.size) for m in reader.members()] == [(n, len(d)) for n, d in members.items()]
    for name, data in members.items():
        assert reader.read(name) == data
        a = rng.randint(0, len(data))
        b = rng.randint(a, len(data))
        assert reader.read_range(name, a, b) == data[a:b]
    assert dict(reader.read_many(list(members)[::-1])) == members


def test_longest_name_unicode_names_and_the_empty_member() -> None:
    longest = "ż" * (fmt.MAX_NAME_BYTES // 2)
    members = {"": None, longest: b"x", "zażółć gęślą jaźń.pdf": b"\x00\xff" * 100, "空.txt": b"", "🙂": b"emoji"}
    members.pop("")
    reader = open_container(BytesSource(build(members.items())))
    for name, data in members.items():
        assert reader.read(name) == data
        assert reader.meta(name).size == len(data)
    assert reader.read_range("空.txt", 0, 0) == b"" and list(reader.iter_range("空.txt")) == []


def test_metadata_round_trip() -> None:
    created = datetime(2025, 11, 20, 10, 30, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    out = io.BytesIO()
    with ContainerWriter(out) as w:
        w.add("20251120_1", b"%PDF-1.7", content_type="application/pdf", path="/srv/scans/a.pdf", created_at=created)
        w.add("20251120_2", b"plain")
    reader = ContainerReader.open(BytesSource(out.getvalue()))
    meta = reader.meta("20251120_1")
    assert (meta.content_type, meta.path, meta.created_at, meta.size) == ("application/pdf", "/srv/scans/a.pdf", created, 8)
    from crc32c import crc32c

    assert meta.checksum == crc32c(b"%PDF-1.7")
    bare = reader.meta("20251120_2")
    assert (bare.content_type, bare.path, bare.created_at, bare.external_key) == (None, None, None, None)
    assert reader.layout_version == LAYOUT_VERSION


def test_streams_files_and_chunk_iterables(tmp_path) -> None:
    blob = os.urandom(2 * MiB + 17)
    (tmp_path / "f").write_bytes(blob)
    out = io.BytesIO()
    with ContainerWriter(out) as w, open(tmp_path / "f", "rb") as fh:
        w.add("from-file", fh)  # size from fstat
        w.add("from-chunks", (blob[i : i + 1000] for i in range(0, len(blob), 1000)), size=len(blob))
        w.add("from-bytesio", io.BytesIO(b"abc"), size=3)
    path = tmp_path / "c.des"
    path.write_bytes(out.getvalue())
    with FileSource(path) as source:
        reader = open_container(source)
        assert reader.read("from-file") == reader.read("from-chunks") == blob
        assert reader.read("from-bytesio") == b"abc"


# --- the writer refuses bad input -----------------------------------------------------------


@pytest.mark.parametrize("name", ["", "\ud800", "x" * (fmt.MAX_NAME_BYTES + 1), None, 5, b"bytes"])
def test_writer_refuses_bad_names(name: object) -> None:
    w = ContainerWriter(io.BytesIO())
    with pytest.raises(WriterError):
        w.add(name, b"x")  # type: ignore[arg-type]
    w.add("still-usable", b"x")  # a refused name leaves nothing half-written
    assert w.close().count == 1


def test_writer_refuses_duplicates() -> None:
    w = ContainerWriter(io.BytesIO())
    w.add("a", b"1")
    with pytest.raises(WriterError, match="already"):
        w.add("a", b"2")
    with pytest.raises(WriterError, match="already"):
        w.add_external("a", size=1, checksum=0, block_checksums=[0], external_key="k")


@pytest.mark.parametrize(
    ("data", "size", "words"),
    [
        (io.BytesIO(b"abc"), 4, "gave 3 bytes"),
        (io.BytesIO(b"abcde"), 4, "more than"),
        (iter([b"ab", b"cd"]), None, "size is required"),
        (b"abc", 5, "size 5 given"),
        (io.BytesIO(b"abc"), -1, "non-negative"),
        (io.BytesIO(b"abc"), True, "non-negative"),
    ],
)
def test_writer_refuses_wrong_sizes(data: object, size: int | None, words: str) -> None:
    w = ContainerWriter(io.BytesIO())
    with pytest.raises(WriterError, match=words):
        w.add("m", data, size=size)  # type: ignore[arg-type]


def test_a_failed_stream_spends_the_writer() -> None:
    w = ContainerWriter(io.BytesIO())
    with pytest.raises(WriterError):
        w.add("m", io.BytesIO(b"short"), size=100)
    with pytest.raises(WriterError, match="spent"):
        w.add("n", b"x")
    with pytest.raises(WriterError, match="spent"):
        w.close()


@pytest.mark.parametrize(
    "kwargs",
    [dict(created_at=datetime(2025, 1, 1)), dict(created_at="2025-01-01"), dict(content_type=5), dict(path="\ud800"), dict(path="p" * 9000)],
)
def test_writer_refuses_bad_metadata(kwargs: dict) -> None:
    with pytest.raises(WriterError):
        ContainerWriter(io.BytesIO()).add("m", b"x", **kwargs)


def test_closed_writer() -> None:
    w = ContainerWriter(io.BytesIO())
    w.close()
    with pytest.raises(WriterError, match="closed"):
        w.add("m", b"x")


def test_empty_container() -> None:
    reader = open_container(BytesSource(build([])))
    assert reader.count == 0 and list(reader.members()) == [] and reader.verify() == []
    assert reader.find("x") is None
    with pytest.raises(MemberNotFound):
        reader.read("x")


# --- requests: the budget of CONTRACT section 7 ---------------------------------------------


def test_first_read_two_requests_then_one() -> None:
    source = CountingSource(build((f"20251120_{i}", os.urandom(random.randint(500, 8000))) for i in range(500)))
    reader = open_container(source)
    reader.read("20251120_7")
    assert len(source.calls) == 2
    reader.read("20251120_8")
    reader.read_range("20251120_9", 10, 20)
    reader.meta("20251120_10")
    assert len(source.calls) == 5
    with pytest.raises(MemberNotFound):
        reader.read("20251120_nope")
    assert len(source.calls) == 5, "a name not in the index costs no request"


def test_cached_index_reopens_with_no_request() -> None:
    data = build((f"n{i}", b"v%d" % i) for i in range(100))
    blob = ContainerReader.open(BytesSource(data)).index_blob
    assert len(blob) == 100 * fmt.ENTRY_SIZE + fmt.FOOTER_SIZE
    source = CountingSource(data)
    reader = ContainerReader.from_index(source, blob)
    assert reader.read("n42") == b"v42" and len(source.calls) == 1
    with pytest.raises(CorruptContainer):
        ContainerReader.from_index(source, blob[:-1] + b"\x00")
    with pytest.raises(CorruptContainer):
        ContainerReader.from_index(source, b"\x01" + blob[1:])
    with pytest.raises(CorruptContainer):
        ContainerReader.from_index(source, b"short")


def test_big_index_costs_one_more_request_on_open() -> None:
    source = CountingSource(build((f"name-{i:06d}", b"x") for i in range(5000)))
    reader = open_container(source, suffix_bytes=4096)
    assert len(source.calls) == 2 and reader.read("name-004999") == b"x"


def test_read_many_coalesces_adjacent_members() -> None:
    members = [(f"m{i}", os.urandom(1000)) for i in range(50)]
    source = CountingSource(build(members))
    reader = open_container(source)
    before = len(source.calls)
    got = dict(reader.read_many([n for n, _ in members]))
    assert got == dict(members) and len(source.calls) - before == 1
    before = len(source.calls)
    assert len(dict(reader.read_many([n for n, _ in members], max_merge=10_000))) == 50
    assert len(source.calls) - before == 6  # 50 frames of ~1 KiB in runs of at most 10,000 bytes
    with pytest.raises(MemberNotFound):
        list(reader.read_many(["m1", "nope"]))


# --- checksums: nothing wrong is ever returned ---------------------------------------------


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def test_a_flipped_data_byte_is_caught_and_named() -> None:
    data = build([("a", b"A" * 100), ("b", b"B" * 100)])
    reader = ContainerReader.open(BytesSource(data))
    at = data.index(b"B" * 100) + 50
    bad = ContainerReader.open(BytesSource(_flip(data, at)))
    assert bad.read("a") == b"A" * 100
    with pytest.raises(ChecksumMismatch, match="'b'"):
        bad.read("b")
    with pytest.raises(ChecksumMismatch):
        bad.read_range("b", 0, 1)
    with pytest.raises(ChecksumMismatch):
        dict(bad.read_many(["a", "b"]))
    assert [p.name for p in bad.verify()] == ["b"] and reader.verify() == []


def test_blocks_are_checked_one_by_one() -> None:
    blob = os.urandom(3 * MiB + 5)
    data = build([("big", blob)])
    offset = ContainerReader.open(BytesSource(data)).find("big").offset
    bad = ContainerReader.open(BytesSource(_flip(data, offset + 2 * MiB + 10)))  # in block 2
    assert bad.read_range("big", 0, 2 * MiB) == blob[: 2 * MiB]  # blocks 0-1 are intact
    assert bad.read_range("big", 3 * MiB, 3 * MiB + 5) == blob[3 * MiB :]
    with pytest.raises(ChecksumMismatch, match="block 2"):
        bad.read_range("big", 2 * MiB, 2 * MiB + 1)
    with pytest.raises(ChecksumMismatch):
        bad.read("big")
    with pytest.raises(ChecksumMismatch):  # a whole read of up to 8 MiB is checked before any byte
        next(iter(bad.iter_range("big", 0, None, chunk_size=MiB)))


def test_bad_ranges() -> None:
    reader = open_container(BytesSource(build([("a", b"abc")])))
    for a, b in ((-1, 2), (2, 1), (0, 4), (4, 4)):
        with pytest.raises(ValueError):
            reader.read_range("a", a, b)


# --- external (big) members -----------------------------------------------------------------


def test_external_member_read_through_its_opener() -> None:
    blob = os.urandom(5 * MiB + 3)
    blocks, crc = external_checksums((blob[i : i + 777_777] for i in range(0, len(blob), 777_777)), len(blob))
    out = io.BytesIO()
    with ContainerWriter(out) as w:
        w.add("small", b"s")
        w.add_external("huge", size=len(blob), checksum=crc, block_checksums=blocks, external_key="FE.big/huge", content_type="video/mp4")
    objects = {"FE.big/huge": BytesSource(blob)}
    reader = open_container(BytesSource(out.getvalue()), external=objects.__getitem__)
    member = reader.find("huge")
    assert member is not None and member.external and member.size == len(blob)
    assert reader.read("huge") == blob and reader.read_range("huge", MiB - 1, 4 * MiB + 1) == blob[MiB - 1 : 4 * MiB + 1]
    assert reader.meta("huge").external_key == "FE.big/huge" and reader.verify() == []
    objects["FE.big/huge"] = BytesSource(_flip(blob, 4 * MiB))
    with pytest.raises(ChecksumMismatch, match="block 4"):
        reader.read("huge")
    assert [p.name for p in reader.verify()] == ["huge"]
    with pytest.raises(ContainerError, match="no storage"):
        open_container(BytesSource(out.getvalue())).read("huge")


def test_external_checksums_refuse_a_wrong_size() -> None:
    with pytest.raises(WriterError):
        external_checksums([b"abc"], 4)
    w = ContainerWriter(io.BytesIO())
    with pytest.raises(WriterError, match="block checksums"):
        w.add_external("x", size=3 * MiB, checksum=0, block_checksums=[0], external_key="k")
    with pytest.raises(WriterError, match="key"):
        w.add_external("x", size=1, checksum=0, block_checksums=[0], external_key="")


# --- merging late files into an existing container ------------------------------------------


def test_merge_keeps_earlier_members_and_prefers_new_ones() -> None:
    old = build([("a", b"old-a"), ("b", b"old-b"), ("c", b"c" * 3 * MiB)])
    out = io.BytesIO()
    with ContainerWriter(out) as w:
        w.add("b", b"new-b")
        w.add("d", b"new-d")
        assert w.merge(ContainerReader.open(BytesSource(old))) == 2
    merged = ContainerReader.open(BytesSource(out.getvalue()))
    assert {m.name: merged.read(m.name) for m in merged.members()} == {"a": b"old-a", "b": b"new-b", "c": b"c" * 3 * MiB, "d": b"new-d"}
    assert merged.verify() == []


def test_merge_copies_frames_byte_for_byte_and_skips() -> None:
    old_bytes = build([("a", b"1"), ("b", b"2")])
    out = io.BytesIO()
    with ContainerWriter(out) as w:
        w.merge(ContainerReader.open(BytesSource(old_bytes)), skip=["b"])
    frame = fmt.HEAD_FIXED.size + 1 + 4 + 1 + 4  # head (name "a", crc), one data byte, data crc
    assert out.getvalue()[fmt.HEADER_SIZE : fmt.HEADER_SIZE + frame] == old_bytes[fmt.HEADER_SIZE : fmt.HEADER_SIZE + frame]
    assert [m.name for m in open_container(BytesSource(out.getvalue())).members()] == ["a"]


def test_merge_refuses_damaged_sources_and_other_layouts() -> None:
    old = build([("a", b"A" * 50)])
    bad = ContainerReader.open(BytesSource(_flip(old, old.index(b"A" * 50))))
    with pytest.raises(ChecksumMismatch):
        ContainerWriter(io.BytesIO()).merge(bad)
    other = ContainerReader.open(BytesSource(build([("a", b"1")], layout_version=LAYOUT_VERSION + 1)))
    with pytest.raises(WriterError, match="layout"):
        ContainerWriter(io.BytesIO()).merge(other)


# --- the index: 24 bytes a member, lookups without per-member objects ---------------------


def test_index_is_24_bytes_a_member() -> None:
    reader = ContainerReader.open(BytesSource(build((f"20251120_{i}", b"") for i in range(20_000))))
    assert len(reader.index.raw) == 24 * 20_000
    assert sys.getsizeof(reader.index.raw) - 24 * 20_000 < 64


def test_lookup_allocates_nothing_per_member() -> None:
    reader = ContainerReader.open(BytesSource(build((f"20251120_{i}", b"") for i in range(50_000))))
    names = [f"20251120_{i}".encode() for i in range(0, 50_000, 50)]
    reader.index.candidates(names[0])
    tracemalloc.start()
    for name in names:
        assert len(reader.index.candidates(name)) == 1
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 4096, f"lookups peaked at {peak} bytes"


def test_hash_collisions_are_resolved_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fmt, "name_hash", lambda raw: 7)  # every name collides
    data = build([("a", b"1"), ("b", b"2"), ("c", b"3")])
    reader = ContainerReader.open(BytesSource(data))
    assert [reader.read(n) for n in "abc"] == [b"1", b"2", b"3"]
    assert dict(reader.read_many("cba")) == {"a": b"1", "b": b"2", "c": b"3"}
    assert reader.find("d") is None
    w = ContainerWriter(io.BytesIO())
    w.add("x", b"")
    w.add("y", b"")
    with pytest.raises(WriterError):
        w.add("y", b"")


# --- damaged containers ---------------------------------------------------------------------


def test_damaged_containers_raise_the_formats_own_errors() -> None:
    good = build([("a", b"abc"), ("b", b"defg")])
    cases = {
        "empty": b"",
        "short": good[:50],
        "no footer": good[:-1],
        "wrong end magic": good[:-8] + b"DESQEND3",
        "footer crc": _flip(good, len(good) - 20),
        "index crc": _flip(good, len(good) - fmt.FOOTER_SIZE - 3),
        "prefix added": b"x" + good,
        "not a container": os.urandom(500),
    }
    for label, data in cases.items():
        with pytest.raises(CorruptContainer):
            reader = open_container(BytesSource(data))
            reader.read("a")
            reader.read("b")
            pytest.fail(f"{label}: damage went unnoticed")


def test_verify_reports_a_damaged_header() -> None:
    good = build([("a", b"abc")])
    problems = ContainerReader.open(BytesSource(_flip(good, 2))).verify()
    assert len(problems) == 1 and problems[0].name is None and "header" in problems[0].message


def test_verify_reads_small_members_together_and_names_each_bad_one() -> None:
    """Regression: verify made one request per member (minutes per container on S3)."""
    members = [(f"m{i}", os.urandom(20_000 + i)) for i in range(1000)]
    data = build(members)
    source = CountingSource(data)
    reader = ContainerReader.open(source)
    assert reader.verify() == []
    reads = [c for c in source.calls if c[0] == "read"]
    assert len(reads) <= 2 + len(data) // (8 * MiB) + 2 and max(c[2] for c in reads) <= 8 * MiB + 64 * 1024
    bad = bytearray(data)
    for name in ("m3", "m700"):
        bad[bytes(bad).index(dict(members)[name][:64]) + 10] ^= 1
    problems = ContainerReader.open(BytesSource(bytes(bad))).verify()
    assert [(p.name, p.message) for p in problems] == [("m3", "data checksum does not match"), ("m700", "data checksum does not match")]


def test_members_over_eight_mib_stream_and_merge() -> None:
    blob = os.urandom(9 * MiB + 123)
    old = build([("huge", blob), ("tiny", b"t")])
    source = CountingSource(old)
    reader = ContainerReader.open(source)
    chunks = list(reader.iter_range("huge", chunk_size=2 * MiB))
    assert b"".join(chunks) == blob and max(len(c) for c in chunks) <= 2 * MiB
    out = io.BytesIO()
    with ContainerWriter(out) as w:
        assert w.merge(reader) == 2
    merged = ContainerReader.open(BytesSource(out.getvalue()))
    assert merged.read("huge") == blob and merged.verify() == []
    bad = bytearray(old)
    bad[reader.find("huge").offset + 8 * MiB + 5] ^= 1
    with pytest.raises(ChecksumMismatch, match="block 8"):
        ContainerWriter(io.BytesIO()).merge(ContainerReader.open(BytesSource(bytes(bad))))


def test_memoryview_of_wider_items_is_stored_as_its_bytes() -> None:
    from array import array

    numbers = array("I", range(1000))
    reader = open_container(BytesSource(build([("n", memoryview(numbers))])))
    assert reader.read("n") == numbers.tobytes()


def test_a_file_source_that_cannot_open_raises_its_error_and_nothing_else(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gc
    import sys

    unraisable: list[object] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    with pytest.raises(FileNotFoundError):
        FileSource(tmp_path / "missing.des")
    with pytest.raises(TypeError):
        FileSource(object())  # type: ignore[arg-type]
    gc.collect()
    assert unraisable == []  # no error from __del__ of the half-made source
