"""DES v1 read support: round trips through a test-only writer, read budgets, every damage check, fuzzing."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from des_v1_writer import (
    COMPRESSED, DELETED, ENCRYPTED, EXTERNAL, FOOTER, FOOTER_FIELDS, HEADER, V1Member, build_v1, patch_footer, read_footer, write_v1,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from desq.container import v1_format as v1
from desq.container.errors import ContainerError, CorruptContainer, MemberNotFound
from desq.container.member import Member, MemberMeta, Problem
from desq.container.source import ByteSource, BytesSource, FileSource
from desq.container.v1 import DesV1Reader, is_des_v1

ALLOWED = (CorruptContainer, ContainerError, MemberNotFound)


class OutOfRange(AssertionError):
    """A read outside the object: a reader bug, never an acceptable answer to damage."""


class CountingSource:
    """Bytes in memory that record every call and fail the test on a read outside the object."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.calls: list[tuple[str, int, int]] = []

    def read(self, offset: int, length: int) -> bytes:
        self.calls.append(("read", offset, length))
        if offset < 0 or length < 0 or offset + length > len(self.data):
            raise OutOfRange(f"read {offset}+{length} of a {len(self.data)}-byte object")
        return self.data[offset : offset + length]

    def read_suffix(self, length: int) -> tuple[bytes, int]:
        self.calls.append(("suffix", length, 0))
        return self.data[max(0, len(self.data) - length) :], len(self.data)


def opener(objects: dict[str, bytes], seen: list[str] | None = None) -> Callable[[str], ByteSource]:
    """An ``external`` factory over a dict; ContainerError for a key it does not hold."""

    def open_key(key: str) -> ByteSource:
        if seen is not None:
            seen.append(key)
        if key not in objects:
            raise ContainerError(f"no external object {key!r}")
        return BytesSource(objects[key])

    return open_key


def open_blob(blob: bytes, **options: object) -> tuple[DesV1Reader, CountingSource]:
    source = CountingSource(blob)
    return DesV1Reader.open(source, **options), source  # type: ignore[arg-type]


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(exc.value)
    assert message and "\n" not in message
    return message


# --- round trips ----------------------------------------------------------------------------

UNICODE = [
    V1Member("zażółć.pdf", b"%PDF-1.4 gesla jazn", mime="application/pdf"),
    V1Member("日本語/ファイル.txt", "こんにちは".encode(), mime="text/plain; charset=utf-8"),
    V1Member("🦀📦.bin", bytes(range(256))),
    V1Member("empty", b"", mime="application/octet-stream"),
    V1Member("x" * 1024, b"long name"),
]


def test_unicode_names_round_trip() -> None:
    reader, _ = open_blob(write_v1(UNICODE))
    assert reader.version == 1 and reader.count == len(UNICODE)
    assert [m.name for m in reader.members()] == [m.name for m in UNICODE]
    for m, listed in zip(UNICODE, reader.members()):
        name = str(m.name)
        assert reader.read(name) == m.data
        assert reader.meta(name) == MemberMeta(name=name, size=len(m.data), content_type=m.mime)
        assert reader.find(name) == listed and listed.size == len(m.data) and not listed.external
    assert reader.find("nope") is None
    assert reader.verify() == []


def test_members_carry_their_offsets() -> None:
    blob = write_v1([V1Member("a", b"aaa"), V1Member("b", b"bb")])
    reader, _ = open_blob(blob)
    assert list(reader.members()) == [Member("a", 3, 16), Member("b", 2, 19)]
    assert blob[16:19] == b"aaa"


def test_empty_member() -> None:
    reader, _ = open_blob(write_v1([V1Member("e", b""), V1Member("f", b"f")]))
    assert reader.read("e") == b""
    assert reader.read_range("e", 0, 0) == b""
    assert list(reader.iter_range("e")) == []
    assert list(reader.read_many(["e", "f"])) == [("e", b""), ("f", b"f")]
    assert reader.meta("e").size == 0


def test_empty_container() -> None:
    blob = write_v1([])
    assert len(blob) == 88
    reader, _ = open_blob(blob)
    assert reader.count == 0 and list(reader.members()) == [] and reader.verify() == []
    with pytest.raises(MemberNotFound):
        reader.read("a")


def test_longest_and_empty_names() -> None:
    names = ["é" * 512, "n" * 65535, ""]
    reader, _ = open_blob(write_v1([V1Member(n, n.encode()[:10]) for n in names]))
    assert [m.name for m in reader.members()] == names
    assert [reader.read(n) for n in names] == [n.encode()[:10] for n in names]


NAMES = st.text(st.characters(codec="utf-8"), min_size=1, max_size=256)  # at most 4 bytes a character: <= 1024 bytes
MIMES = st.none() | st.sampled_from(["text/plain", "image/png", "application/pdf", "application/x-ünïcode"])


@st.composite
def member_lists(draw: st.DrawFn) -> list[V1Member]:
    rng = draw(st.randoms(use_true_random=False))
    specs = draw(
        st.lists(st.tuples(NAMES | st.sampled_from(["dup", "dup2"]), st.integers(0, 64 << 10), MIMES), min_size=1, max_size=200)
    )
    return [V1Member(name, rng.randbytes(size), mime=mime) for name, size, mime in specs]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(members=member_lists())
def test_round_trip_random(members: list[V1Member]) -> None:
    latest = {str(m.name): m for m in members}
    expected = [str(m.name) for m in members if latest[str(m.name)] is m]
    reader, _ = open_blob(write_v1(members))
    assert reader.count == len(latest)
    assert [(m.name, m.size) for m in reader.members()] == [(n, len(latest[n].data)) for n in expected]
    for name in expected:
        assert reader.read(name) == latest[name].data
        assert reader.meta(name).content_type == latest[name].mime
    assert list(reader.read_many(reversed(expected))) == [(n, latest[n].data) for n in expected]
    assert reader.verify() == []


def test_round_trip_200_members_of_up_to_64_kib() -> None:
    rng = random.Random(11)
    alphabet = "aZ9-_.żółć日本語😀🦀 "
    names = ["😀" * 256] + ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 256))) for _ in range(199)]
    members = [V1Member(n, rng.randbytes(rng.choice([0, 1, rng.randint(0, 64 << 10), 64 << 10])), mime=rng.choice([None, "text/plain"])) for n in names]
    assert max(len(n.encode()) for n in names) == 1024
    reader, source = open_blob(write_v1(members))
    assert len(source.calls) == 2
    latest = {str(m.name): m for m in members}
    assert reader.count == len(latest)
    assert dict(reader.read_many(latest)) == {n: m.data for n, m in latest.items()}
    assert all(reader.meta(n).content_type == m.mime for n, m in latest.items())
    assert reader.verify() == []


def test_duplicate_names_later_entry_wins() -> None:
    reader, _ = open_blob(write_v1([V1Member("a", b"first", mime="text/a"), V1Member("b", b"x"), V1Member("a", b"second")]))
    assert reader.count == 2
    assert [m.name for m in reader.members()] == ["b", "a"]
    assert reader.read("a") == b"second" and reader.meta("a").content_type is None
    assert reader.verify() == []


def test_deleted_entries() -> None:
    blob = write_v1([
        V1Member("gone", b"one"),
        V1Member("gone", b"", flags=DELETED),
        V1Member("back", b"", flags=DELETED),
        V1Member("back", b"again"),
        V1Member("only-deleted", b"zz", flags=DELETED),
    ])
    reader, _ = open_blob(blob)
    assert reader.count == 1 and [m.name for m in reader.members()] == ["back"]
    assert reader.find("gone") is None and reader.read("back") == b"again"
    for name in ("gone", "only-deleted"):
        with pytest.raises(MemberNotFound):
            reader.read(name)


# --- external members -----------------------------------------------------------------------

BIG = random.Random(7).randbytes(100_000)
EXTERNAL_MEMBERS = [
    V1Member("in1", b"abc"),
    V1Member("zz-ext", BIG, external_key="big/zz.bin", mime="video/mp4"),
    V1Member("aa-ext", b"hello", external_key="small/aa"),
    V1Member("in2", b"def"),
]


def test_external_members_read_through_the_factory() -> None:
    built = build_v1(EXTERNAL_MEMBERS)
    seen: list[str] = []
    reader, _ = open_blob(built.blob, external=opener(built.externals, seen))
    assert list(reader.members()) == [
        Member("in1", 3, 16), Member("in2", 3, 19), Member("aa-ext", 5, 0, True), Member("zz-ext", len(BIG), 0, True)
    ]
    assert reader.read("zz-ext") == BIG and reader.read("aa-ext") == b"hello"
    assert reader.read_range("zz-ext", 10, 5000) == BIG[10:5000]
    assert b"".join(reader.iter_range("zz-ext", 3, 99_999, chunk_size=4096)) == BIG[3:99_999]
    assert reader.meta("zz-ext") == MemberMeta("zz-ext", len(BIG), content_type="video/mp4", external_key="big/zz.bin")
    assert reader.meta("in1").external_key is None
    assert list(reader.read_many(["zz-ext", "in2", "aa-ext", "in1"])) == [
        ("in1", b"abc"), ("in2", b"def"), ("aa-ext", b"hello"), ("zz-ext", BIG)
    ]
    assert set(seen) == {"big/zz.bin", "small/aa"}
    assert reader.verify() == []


def test_external_member_without_a_factory() -> None:
    reader, _ = open_blob(write_v1(EXTERNAL_MEMBERS))
    assert reader.read("in1") == b"abc"
    for call in (lambda: reader.read("aa-ext"), lambda: reader.read_range("aa-ext", 0, 1), lambda: list(reader.iter_range("aa-ext"))):
        with pytest.raises(ContainerError) as exc:
            call()
        assert not isinstance(exc.value, CorruptContainer)
        message = one_line(exc)
        assert "'aa-ext'" in message and "'small/aa'" in message


@pytest.mark.parametrize("stored", [b"hell", b"hello!"])
def test_external_object_of_the_wrong_size(stored: bytes) -> None:
    reader, _ = open_blob(write_v1(EXTERNAL_MEMBERS), external=opener({"small/aa": stored}))
    with pytest.raises(CorruptContainer, match="external object 'small/aa' has"):
        reader.read("aa-ext")


# --- ranges ---------------------------------------------------------------------------------

RANGE_DATA = random.Random(3).randbytes(5000)
RANGE_BUILT = build_v1([V1Member("pre", b"p" * 10), V1Member("m", RANGE_DATA), V1Member("x", RANGE_DATA, external_key="x")])


@pytest.mark.parametrize("name", ["m", "x"])
@settings(max_examples=60, deadline=None)
@given(bounds=st.tuples(st.integers(0, 5000), st.integers(0, 5000)).map(sorted), chunk=st.integers(1, 6000))
def test_ranges_equal_slicing(name: str, bounds: list[int], chunk: int) -> None:
    start, stop = bounds
    reader, _ = open_blob(RANGE_BUILT.blob, external=opener(RANGE_BUILT.externals))
    assert reader.read_range(name, start, stop) == RANGE_DATA[start:stop]
    chunks = list(reader.iter_range(name, start, stop, chunk_size=chunk))
    assert all(0 < len(c) <= chunk for c in chunks)
    assert b"".join(chunks) == RANGE_DATA[start:stop]
    assert b"".join(reader.iter_range(name, start, chunk_size=chunk)) == RANGE_DATA[start:]


@pytest.mark.parametrize(("start", "stop"), [(-1, 2), (3, 2), (0, 5001), (5001, 5001)])
def test_bad_ranges(start: int, stop: int) -> None:
    reader, _ = open_blob(RANGE_BUILT.blob)
    with pytest.raises(ValueError):
        reader.read_range("m", start, stop)
    with pytest.raises(ValueError):
        reader.iter_range("m", start, stop)


def test_bad_chunk_size() -> None:
    reader, _ = open_blob(RANGE_BUILT.blob)
    with pytest.raises(ValueError):
        reader.iter_range("m", chunk_size=0)


# --- read budgets ---------------------------------------------------------------------------


def test_open_costs_a_suffix_read_and_one_read() -> None:
    built = build_v1(UNICODE)
    reader, source = open_blob(built.blob)
    f = built.footer
    assert source.calls == [("suffix", 72, 0), ("read", f["meta_start"], f["index_start"] + f["index_length"] - f["meta_start"])]
    assert reader.count == len(UNICODE)


def test_open_uses_a_suffix_it_is_given() -> None:
    blob = write_v1(UNICODE)
    meta_start = read_footer(blob)["meta_start"]
    reader, source = open_blob(blob, suffix=blob[meta_start:], size=len(blob))
    assert source.calls == []
    assert reader.read("🦀📦.bin") == bytes(range(256))
    assert len(source.calls) == 1
    reader, source = open_blob(blob, suffix=blob[-10:], size=len(blob))
    assert source.calls[0] == ("suffix", 72, 0) and len(source.calls) == 2


def test_suffix_and_size_go_together() -> None:
    blob = write_v1(UNICODE)
    with pytest.raises(ValueError):
        DesV1Reader.open(BytesSource(blob), suffix=blob[-72:])
    with pytest.raises(ValueError):
        DesV1Reader.open(BytesSource(blob), suffix=blob, size=len(blob) - 1)


def test_first_read_fetches_the_header_with_nearby_data() -> None:
    filler = bytes(70_000)
    blob = write_v1([V1Member("a", b"aaaa"), V1Member("b", b"bbbb"), V1Member("fill", filler), V1Member("far", b"far")])
    reader, source = open_blob(blob)
    source.calls.clear()
    assert reader.read("b") == b"bbbb"
    assert source.calls == [("read", 0, 24)]
    assert reader.read("a") == b"aaaa"
    assert source.calls[1:] == [("read", 16, 4)]

    reader, source = open_blob(blob)
    source.calls.clear()
    assert reader.read("far") == b"far"
    assert source.calls == [("read", 0, 16), ("read", 70_024, 3)]


def test_read_many_coalesces_nearby_members() -> None:
    members = [V1Member("a", b"a" * 100), V1Member("b", b"b" * 200), V1Member("c", b"c" * 300)]
    members += [V1Member("fill", bytes(100_000)), V1Member("e", b"e" * 10), V1Member("f", b"f" * 10)]
    reader, source = open_blob(write_v1(members))
    reader.read("a")
    source.calls.clear()
    got = list(reader.read_many(["f", "c", "a", "b", "e", "a"]))
    assert got == [("a", b"a" * 100), ("b", b"b" * 200), ("c", b"c" * 300), ("e", b"e" * 10), ("f", b"f" * 10)]
    assert source.calls == [("read", 16, 600), ("read", 100_616, 20)]

    source.calls.clear()
    assert [n for n, _ in reader.read_many(["a", "c"], max_gap=199)] == ["a", "c"]
    assert source.calls == [("read", 16, 100), ("read", 316, 300)]

    source.calls.clear()
    assert len(list(reader.read_many(["a", "b", "c"], max_merge=300))) == 3
    assert source.calls == [("read", 16, 300), ("read", 316, 300)]

    source.calls.clear()
    assert len(list(reader.read_many(["a", "c", "e"], max_gap=1 << 20))) == 3
    assert source.calls == [("read", 16, 100_626 - 16)]


def test_read_many_checks_every_name_before_reading() -> None:
    reader, source = open_blob(write_v1([V1Member("a", b"a"), V1Member("bad", b"b", flags=COMPRESSED)]))
    before = len(source.calls)
    with pytest.raises(MemberNotFound):
        reader.read_many(["a", "nope"])
    with pytest.raises(CorruptContainer, match="compressed"):
        reader.read_many(["a", "bad"])
    assert len(source.calls) == before


def test_file_source(tmp_path: Path) -> None:
    built = build_v1(EXTERNAL_MEMBERS + UNICODE)
    path = tmp_path / "old.des"
    path.write_bytes(built.blob)
    big = tmp_path / "zz.bin"
    big.write_bytes(BIG)
    with FileSource(path) as source:
        reader = DesV1Reader.open(source, external=lambda key: FileSource(big) if key == "big/zz.bin" else BytesSource(b"hello"))
        for m in [*EXTERNAL_MEMBERS, *UNICODE]:
            assert reader.read(str(m.name)) == m.data
        assert reader.read_range("zz-ext", 99_000, 100_000) == BIG[99_000:]
        assert b"".join(reader.iter_range("日本語/ファイル.txt", 3, chunk_size=2)) == "こんにちは".encode()[3:]
        assert reader.verify() == []


def test_is_des_v1() -> None:
    blob = write_v1(UNICODE)
    assert is_des_v1(blob) and is_des_v1(blob[-72:])
    assert not is_des_v1(blob[-71:]) and not is_des_v1(b"")
    assert not is_des_v1(write_v1([], footer_version=2))
    assert not is_des_v1(write_v1([], footer_magic=b"DESQEND2"))
    assert not is_des_v1(blob + b"\0")


# --- damage that stops open -----------------------------------------------------------------

OK = [V1Member("a", b"alpha", mime="text/plain"), V1Member("b", b"beta")]
OK_BLOB = write_v1(OK)
OK_FOOTER = read_footer(OK_BLOB)
END = len(OK_BLOB) - 72
LONG = [V1Member("n" * 40, b"1"), V1Member("m" * 40, b"2")]

OPEN_DAMAGE = {
    "empty object": (b"", "0 bytes is too short"),
    "87 bytes": (write_v1([])[1:], "87 bytes is too short"),
    "87 bytes of footer": (bytes(15) + write_v1([])[-72:], "too short"),
    "footer magic": (write_v1(OK, footer_magic=b"DESFOOT2"), "footer magic"),
    "footer version": (write_v1(OK, footer_version=2), "footer says version 2"),
    "data start 0": (patch_footer(OK_BLOB, data_start=0), "DATA starts at 0, not 16"),
    "data start 17": (patch_footer(OK_BLOB, data_start=17, data_length=8), "DATA starts at 17"),
    "data past the end": (patch_footer(OK_BLOB, data_length=10**6), "DATA region .* runs past the footer"),
    "data length 2**64-1": (patch_footer(OK_BLOB, data_length=2**64 - 1), "DATA region .* runs past"),
    "meta past the end": (patch_footer(OK_BLOB, meta_length=END), "META region .* runs past"),
    "meta start 2**64-1": (patch_footer(OK_BLOB, meta_start=2**64 - 1), "META region .* runs past"),
    "index past the end": (patch_footer(OK_BLOB, index_length=OK_FOOTER["index_length"] + 1), "INDEX region .* runs past"),
    "index into the footer": (patch_footer(OK_BLOB, index_start=END - 10), "INDEX region .* runs past"),
    "meta overlaps data": (patch_footer(OK_BLOB, meta_start=OK_FOOTER["meta_start"] - 1), "META region .* overlaps or precedes DATA"),
    "meta before data": (patch_footer(OK_BLOB, meta_start=0, meta_length=0), "META region at 0 overlaps"),
    "index overlaps meta": (patch_footer(OK_BLOB, index_start=OK_FOOTER["index_start"] - 1), "INDEX region .* overlaps or precedes META"),
    "index before meta": (patch_footer(OK_BLOB, index_start=16, index_length=0, file_count=0), "INDEX region at 16 overlaps"),
    "file count 2**64-1": (patch_footer(OK_BLOB, file_count=2**64 - 1), r"claims 18446744073709551615 members; .* holds at most 2"),
    "file count one too many": (patch_footer(OK_BLOB, file_count=3), "claims 3 members"),
    "file count too small": (patch_footer(OK_BLOB, file_count=1), "index has 39 bytes after its 1 entries"),
    "no entries, index bytes": (patch_footer(OK_BLOB, file_count=0), "index has 78 bytes after its 0 entries"),
    "entry fields past the index": (write_v1(LONG, footer_overrides={"index_length": 151}), "entry 1: its fields run past"),
    "entry header past the index": (write_v1(LONG, index_tail=b"\x07", footer_overrides={"file_count": 3}), "entry 2 runs past"),
    "name past the index": (write_v1([V1Member("a", b"x", name_len=60_000)]), "entry 0: its 60000-byte name runs past"),
    "name past the index, second": (write_v1([*OK, V1Member("c", b"x", name_len=39)]), "entry 2: its 39-byte name"),
    "name not UTF-8": (write_v1([*OK, V1Member(b"\xff\xfeab", b"x")]), "entry 2: the name is not valid UTF-8"),
    "name a surrogate": (write_v1([V1Member(b"\xed\xa0\x80", b"x")]), "entry 0: the name is not valid UTF-8"),
    "name cut in a character": (write_v1([V1Member("ż".encode()[:1], b"x")]), "not valid UTF-8"),
}


@pytest.mark.parametrize(("blob", "match"), list(OPEN_DAMAGE.values()), ids=list(OPEN_DAMAGE))
def test_open_refuses_damage(blob: bytes, match: str) -> None:
    for options in ({}, {"suffix": blob, "size": len(blob)}):
        source = CountingSource(blob)
        with pytest.raises(CorruptContainer, match=match) as exc:
            DesV1Reader.open(source, **options)  # type: ignore[arg-type]
        one_line(exc)
        assert len(source.calls) <= 2


def test_open_refuses_an_implausibly_large_index(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(v1, "MAX_INDEX_READ", 100)
    source = CountingSource(OK_BLOB)
    span = OK_FOOTER["meta_length"] + OK_FOOTER["index_length"]
    with pytest.raises(CorruptContainer, match=f"META and INDEX span {span} bytes, more than the 100"):
        DesV1Reader.open(source)
    assert source.calls == [("suffix", 72, 0)]


def test_a_short_source_read_is_corrupt() -> None:
    class Short(CountingSource):
        def read(self, offset: int, length: int) -> bytes:
            return super().read(offset, length)[:-1]

    with pytest.raises(CorruptContainer, match="the source returned"):
        DesV1Reader.open(Short(OK_BLOB))


# --- damage to the header -------------------------------------------------------------------

HEADER_DAMAGE = {
    "magic": (HEADER.pack(b"DESHEAD2", 1, bytes(7)), "header magic"),
    "version": (HEADER.pack(b"DESHEAD1", 2, bytes(7)), "header says version 2"),
    "padding": (HEADER.pack(b"DESHEAD1", 1, b"\0\0\0x\0\0\0"), "header padding is not zero"),
}


@pytest.mark.parametrize(("header", "match"), list(HEADER_DAMAGE.values()), ids=list(HEADER_DAMAGE))
def test_header_damage(header: bytes, match: str) -> None:
    blob = write_v1(OK, header=header)
    with pytest.raises(CorruptContainer, match=match):
        DesV1Reader.open(BytesSource(blob), suffix=blob, size=len(blob))

    reader, source = open_blob(blob)
    assert reader.count == 2
    with pytest.raises(CorruptContainer, match=match) as exc:
        reader.read("a")
    one_line(exc)
    calls = len(source.calls)
    for call in (lambda: reader.read("b"), lambda: reader.read_range("a", 1, 2), lambda: list(reader.iter_range("a")), lambda: list(reader.read_many(["a"]))):
        with pytest.raises(CorruptContainer, match=match):
            call()
    assert len(source.calls) == calls
    assert [p.name for p in reader.verify()] == [None]


def test_header_damage_found_by_verify_first() -> None:
    reader, _ = open_blob(write_v1(OK, header=HEADER.pack(b"NOTDES!!", 1, bytes(7))))
    assert [str(p) for p in reader.verify()] == ["not a DES v1 container: header magic is b'NOTDES!!', not b'DESHEAD1'"]
    with pytest.raises(CorruptContainer, match="header magic"):
        reader.read("b")


# --- damage to one member -------------------------------------------------------------------

MEMBER_DAMAGE: dict[str, tuple[V1Member, str]] = {
    "data before DATA": (V1Member("m", b"xy", data_offset=0), r"data \[0, 2\) lies outside DATA"),
    "data after DATA": (V1Member("m", b"xy", data_offset=10**6), "lies outside DATA"),
    "data offset 2**64-1": (V1Member("m", b"xy", data_offset=2**64 - 1), "lies outside DATA"),
    "data runs past DATA": (V1Member("m", b"xy", data_length=100, extra_meta={"size": 100}), r"data \[20, 120\) lies outside DATA \[16, 26\)"),
    "data length beyond 2**48": (V1Member("m", b"xy", data_length=2**48 + 1), r"data_length 281474976710657 is beyond 2\*\*48"),
    "external length beyond 2**48": (V1Member("m", b"xy", external_key="k", data_length=2**64 - 1), r"beyond 2\*\*48"),
    "external with a data offset": (V1Member("m", b"xy", external_key="k", data_offset=16), "external member has data_offset 16"),
    "external without a key": (V1Member("m", b"xy", flags=EXTERNAL), "no usable external_key"),
    "external with an empty key": (V1Member("m", b"xy", external_key=""), "no usable external_key"),
    "external with a numeric key": (V1Member("m", b"xy", flags=EXTERNAL, extra_meta={"external_key": 7}), "no usable external_key"),
    "meta before META": (V1Member("m", b"xy", meta_offset=0), r"metadata \[0, \d+\) lies outside META"),
    "meta past META": (V1Member("m", b"xy", meta_length=10**9), "metadata .* lies outside META"),
    "meta offset 2**64-1": (V1Member("m", b"xy", meta_offset=2**64 - 1), "lies outside META"),
    "meta not JSON": (V1Member("m", b"xy", meta=b'{"size":2'), "metadata is not valid JSON"),
    "meta empty": (V1Member("m", b"xy", meta=b""), "metadata is not valid JSON"),
    "meta a list": (V1Member("m", b"xy", meta=b"[2]"), "metadata is a JSON list, not an object"),
    "meta a string": (V1Member("m", b"xy", meta=b'"size"'), "metadata is a JSON str, not an object"),
    "meta not UTF-8": (V1Member("m", b"xy", meta=b'{"size":2,"mime":"\xff"}'), "metadata is not valid UTF-8"),
    "meta UTF-16": (V1Member("m", b"xy", meta='{"size":2}'.encode("utf-16")), "metadata is not valid UTF-8"),
    "meta nested deep": (V1Member("m", b"xy", meta=b"[" * 100_000), "metadata is not valid JSON"),
    "meta with a 5000-digit number": (V1Member("m", b"xy", meta=b'{"size":' + b"9" * 5000 + b"}"), "metadata is not valid JSON"),
    "meta size mismatch": (V1Member("m", b"xy", extra_meta={"size": 999}), r"metadata size 999 does not match the index \(2\)"),
    "meta size a bool": (V1Member("m", b"x", extra_meta={"size": True}), "metadata size True does not match"),
    "meta size a string": (V1Member("m", b"xy", extra_meta={"size": "2"}), "metadata size '2' does not match"),
    "meta size a float": (V1Member("m", b"xy", extra_meta={"size": 2.0}), "metadata size 2.0 does not match"),
    "meta mime a number": (V1Member("m", b"xy", extra_meta={"mime": 5}), "metadata mime 5 is not a string"),
    "meta is_external without the flag": (V1Member("m", b"xy", extra_meta={"is_external": True}), "is_external True disagrees"),
    "flag compressed": (V1Member("m", b"xy", flags=COMPRESSED), r"flagged compressed \(0x2\)"),
    "flag encrypted": (V1Member("m", b"xy", flags=ENCRYPTED), r"flagged encrypted \(0x4\)"),
    "unknown flags": (V1Member("m", b"xy", flags=0x80000010), "unknown flag bits 0x80000010"),
}


@pytest.mark.parametrize(("bad", "match"), list(MEMBER_DAMAGE.values()), ids=list(MEMBER_DAMAGE))
def test_member_damage(bad: V1Member, match: str) -> None:
    reader, source = open_blob(write_v1([V1Member("before", b"1234"), bad, V1Member("after", b"5678")]), external=opener({"k": b"xy"}))
    assert reader.count == 3
    assert reader.read("before") == b"1234" and reader.read("after") == b"5678"
    calls = len(source.calls)
    for call in (lambda: reader.read("m"), lambda: reader.read_range("m", 0, 0), lambda: reader.iter_range("m"), lambda: reader.read_many(["after", "m"])):
        with pytest.raises(CorruptContainer, match=match) as exc:
            call()
        assert one_line(exc).startswith("member 'm': ")
    assert len(source.calls) == calls
    problems = reader.verify()
    assert problems and {p.name for p in problems} == {"m"}
    assert re.search(match, problems[0].message)


@pytest.mark.parametrize("case", [k for k in MEMBER_DAMAGE if k.startswith("meta ") or "key" in k])
def test_meta_refuses_bad_metadata(case: str) -> None:
    bad, match = MEMBER_DAMAGE[case]
    reader, _ = open_blob(write_v1([bad]))
    with pytest.raises(CorruptContainer, match=match):
        reader.meta("m")


def test_flagged_members_keep_their_metadata() -> None:
    reader, _ = open_blob(write_v1([V1Member("m", b"xy", mime="text/plain", flags=COMPRESSED | ENCRYPTED)]))
    assert reader.meta("m").content_type == "text/plain"
    assert [p.message for p in reader.verify()] == [
        "flagged compressed (0x2), which the DES v1 tool never wrote",
        "flagged encrypted (0x4), which the DES v1 tool never wrote",
    ]


def test_verify_reports_superseded_and_deleted_entries() -> None:
    reader, _ = open_blob(write_v1([V1Member("a", b"old", data_offset=0), V1Member("a", b"new"), V1Member("d", b"", flags=DELETED | 0x40)]))
    assert reader.read("a") == b"new"
    assert [str(p) for p in reader.verify()] == [
        "a: superseded index entry 0: data [0, 3) lies outside DATA [16, 22)",
        "d: deleted index entry 2: unknown flag bits 0x40",
    ]


def test_verify_reports_gaps_reserved_bytes_and_overlaps() -> None:
    blob = write_v1(OK, gaps=(b"gap", b"g", b"gg"), reserved=b"\x01" + bytes(6))
    reader, _ = open_blob(blob)
    assert [reader.read(str(m.name)) for m in OK] == [m.data for m in OK]
    assert [str(p) for p in reader.verify()] == [
        "3 bytes between DATA and META belong to no region",
        "1 bytes between META and INDEX belong to no region",
        "2 bytes between INDEX and the footer belong to no region",
        "footer reserved bytes are not zero",
    ]
    reader, _ = open_blob(write_v1([V1Member("a", b"aaaa"), V1Member("b", b"bbbb", data_offset=18)]))
    assert reader.read("b") == b"aabb"
    assert [str(p) for p in reader.verify()] == ["b: data at 18 overlaps member 'a'"]


# --- fuzzing --------------------------------------------------------------------------------

FUZZ_EXTERNALS = {"ext/1": b"external bytes"}
FUZZ_BASES = [
    write_v1([]),
    write_v1([V1Member("one", b"0123456789", mime="text/plain")]),
    write_v1([
        V1Member("zażółć.pdf", b"%PDF" * 5, mime="application/pdf"),
        V1Member("空", b""),
        V1Member("dup", b"first"),
        V1Member("ext", b"external bytes", external_key="ext/1", mime="text/plain"),
        V1Member("dup", b"second!"),
        V1Member("gone", b"", flags=DELETED),
        V1Member("🎉", bytes(range(40))),
    ]),
    write_v1([V1Member(f"m{i}", bytes([i]) * i) for i in range(12)]),
]
INTERESTING = [0, 1, 15, 16, 17, 38, 72, 88, 255, 2**16 - 1, 2**31, 2**32 - 1, 2**48, 2**48 + 1, 2**63, 2**64 - 1]
POSITIONS = st.tuples(st.integers(0, 1 << 16), st.booleans())
MUTATIONS = st.one_of(
    st.tuples(st.just("flip"), POSITIONS, st.integers(0, 7)),
    st.tuples(st.just("truncate"), POSITIONS),
    st.tuples(st.just("splice"), POSITIONS, st.integers(0, 48), st.binary(max_size=48)),
    st.tuples(st.just("int"), POSITIONS, st.sampled_from([1, 2, 4, 8]), st.sampled_from(INTERESTING)),
    st.tuples(st.just("footer"), st.sampled_from(FOOTER_FIELDS), st.sampled_from(INTERESTING) | st.integers(-80, 80), st.booleans()),
)


def _at(blob: bytes, where: tuple[int, bool]) -> int:
    """A position in ``blob``, counted from its end when asked (where the footer and index are)."""
    if not blob:
        return 0
    n, from_end = where
    return len(blob) - 1 - n % len(blob) if from_end else n % len(blob)


def mutate(blob: bytes, mutation: tuple) -> bytes:  # type: ignore[type-arg]
    kind, where, *args = mutation
    if kind == "footer":
        if len(blob) < FOOTER.size:
            return blob
        value, relative = args
        return patch_footer(blob, **{where: (read_footer(blob)[where] + value if relative else value) % 2**64})
    at = _at(blob, where)
    if kind == "flip":
        return blob[:at] + bytes([blob[at] ^ (1 << args[0])]) + blob[at + 1 :] if blob else blob
    if kind == "truncate":
        return blob[at:] if where[1] else blob[:at]
    if kind == "splice":
        return blob[:at] + args[1] + blob[at + args[0] :]
    width, value = args
    return blob[:at] + (value % (1 << 8 * width)).to_bytes(width, "little") + blob[at + width :]


def exercise(blob: bytes, whole_suffix: bool) -> None:
    """Open and read everything; only container errors may come out, and reads stay in bounds."""
    source = CountingSource(blob)
    options = {"suffix": blob, "size": len(blob)} if whole_suffix else {}
    try:
        reader = DesV1Reader.open(source, external=opener(FUZZ_EXTERNALS), **options)  # type: ignore[arg-type]
    except ALLOWED as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert len(source.calls) <= 2
    problems = reader.verify()
    assert all(isinstance(p, Problem) and "\n" not in str(p) for p in problems)
    members = list(reader.members())
    assert len(members) == reader.count
    for m in members:
        try:
            data = reader.read(m.name)
        except ALLOWED as exc:
            assert str(exc) and "\n" not in str(exc)
            assert m.external or problems, f"read of {m.name!r} failed ({exc}) but verify found nothing"
            continue
        assert len(data) == m.size
        mid = m.size // 2
        assert reader.read_range(m.name, mid, m.size) == data[mid:]
        assert b"".join(reader.iter_range(m.name, 1 if m.size else 0, chunk_size=7)) == data[1:]
        assert reader.meta(m.name).size == m.size
    try:
        got = list(reader.read_many(m.name for m in members))
    except ALLOWED:
        return
    assert [(n, len(b)) for n, b in got] == [(m.name, m.size) for m in members]


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(base=st.sampled_from(FUZZ_BASES), mutations=st.lists(MUTATIONS, min_size=1, max_size=4), whole_suffix=st.booleans())
def test_fuzz_damaged_containers(base: bytes, mutations: list[tuple], whole_suffix: bool) -> None:  # type: ignore[type-arg]
    blob = base
    for mutation in mutations:
        blob = mutate(blob, mutation)
    exercise(blob, whole_suffix)


@pytest.mark.parametrize("base", FUZZ_BASES)
def test_fuzz_bases_are_clean(base: bytes) -> None:
    reader, _ = open_blob(base, external=opener(FUZZ_EXTERNALS))
    assert reader.verify() == []
    exercise(base, False)


def test_every_single_byte_truncation_and_flip() -> None:
    base = FUZZ_BASES[2]
    for cut in range(len(base)):
        exercise(base[:cut], False)
        exercise(base[cut:], True)
    for at in range(len(base)):
        for bit in (0, 7):
            exercise(base[:at] + bytes([base[at] ^ (1 << bit)]) + base[at + 1 :], bool(at % 2))


def test_footer_struct_matches_the_spec() -> None:
    assert (v1.HEADER.size, v1.FOOTER.size, v1.MIN_ENTRY_SIZE, FOOTER.size) == (16, 72, 38, 72)
