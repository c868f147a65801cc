"""One conformance suite for every container reader (fsspec's tests/abstract style).

A reader's test module subclasses ``ReaderConformance``: it says how to ``write`` members in its
format, and states in class attributes where its format differs from the others (DES v1 has no
checksums and no layout version, lists external members last, and cannot be merged into a v2
writer). Every test here must pass unchanged for every reader.
"""

from __future__ import annotations

import io
import random
from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from crc32c import crc32c

from desq.container import ContainerError, ContainerWriter, MemberNotFound, Reader, WriterError, open_container
from desq.container.source import ByteSource, BytesSource
from sources import CountingSource

MiB = 1 << 20


@dataclass(frozen=True)
class Spec:
    """One member to write; ``external`` ones are stored as their own object."""

    name: str
    data: bytes
    content_type: str | None = None
    external: bool = False


_rng = random.Random(17)
MEMBERS = [
    Spec("20251120_1", b"hello, archive", "text/plain"),
    Spec("empty", b""),
    Spec("outside.bin", _rng.randbytes(MiB + 3), "application/octet-stream", external=True),
    Spec("zażółć gęślą jaźń.pdf", bytes(range(256)) * 40, "application/pdf"),
    Spec("big", _rng.randbytes(2 * MiB + MiB // 2)),
    Spec("🙂", b"emoji"),
]
SMALL = [Spec(f"20251120_{i}", bytes([i]) * (100 + i)) for i in range(6)]
BY_NAME = {s.name: s for s in MEMBERS}


@dataclass
class Built:
    """A container written by the format under test, opened through a counting source."""

    reader: Reader
    blob: bytes
    source: CountingSource

    def reads(self) -> int:
        """Storage requests made so far (the open included)."""
        return len(self.source.calls)


class ReaderConformance:
    """The behaviour every container reader promises; subclasses state their format's differences."""

    VERSION: int
    LAYOUT_VERSION: int | None
    CHECKSUMS: bool
    """Whether ``meta`` carries the CRC32C of the member's bytes."""
    EXTERNALS_LAST: bool
    """Whether ``members`` lists external members after the others (by name) instead of in place."""
    INDEX_BYTES_PER_MEMBER: int
    MERGEABLE: bool
    """Whether ``ContainerWriter.merge`` copies this format's members."""

    def write(self, specs: Sequence[Spec]) -> tuple[bytes, dict[str, bytes]]:
        """The container holding ``specs``, and the external objects by the key it records."""
        raise NotImplementedError

    def build(self, specs: Sequence[Spec] = MEMBERS, *, externals: bool = True) -> Built:
        blob, objects = self.write(specs)

        def open_key(key: str) -> ByteSource:
            return BytesSource(objects[key])

        source = CountingSource(blob)
        return Built(open_container(source, external=open_key if externals else None), blob, source)

    def order(self, specs: Sequence[Spec]) -> list[str]:
        """Member names in the order ``members`` lists them."""
        if not self.EXTERNALS_LAST:
            return [s.name for s in specs]
        return [s.name for s in specs if not s.external] + sorted(s.name for s in specs if s.external)

    # --- the container and its members ----------------------------------------------------------

    def test_version_count_layout_and_index_bytes(self) -> None:
        reader = self.build().reader
        assert (reader.version, reader.count, reader.layout_version) == (self.VERSION, len(MEMBERS), self.LAYOUT_VERSION)
        assert reader.index_bytes == self.INDEX_BYTES_PER_MEMBER * len(MEMBERS)

    def test_members_in_container_order(self) -> None:
        built = self.build()
        members = list(built.reader.members())
        assert [m.name for m in members] == self.order(MEMBERS)
        for m in members:
            spec = BY_NAME[m.name]
            assert (m.size, m.external) == (len(spec.data), spec.external)
            if m.external:
                assert m.offset == 0
            else:
                assert built.blob[m.offset : m.offset + m.size] == spec.data

    def test_find_and_size_hint(self) -> None:
        built = self.build()
        listed = {m.name: m for m in built.reader.members()}
        before = built.reads()
        for spec in MEMBERS:
            assert built.reader.size_hint(spec.name) == len(spec.data)
        assert built.reads() == before  # size_hint answers from the index
        for spec in MEMBERS:
            assert built.reader.find(spec.name) == listed[spec.name]
        for absent in ("nope", "", "x" * 2000, "20251120_1 "):
            assert built.reader.find(absent) is None
            assert built.reader.size_hint(absent) is None

    def test_meta(self) -> None:
        reader = self.build().reader
        for spec in MEMBERS:
            meta = reader.meta(spec.name)
            assert (meta.name, meta.size, meta.content_type) == (spec.name, len(spec.data), spec.content_type)
            assert (meta.external_key is not None) == spec.external
            assert meta.checksum == (crc32c(spec.data) if self.CHECKSUMS else None)
        with pytest.raises(MemberNotFound):
            reader.meta("nope")

    # --- reading ---------------------------------------------------------------------------

    def test_read_every_member(self) -> None:
        reader = self.build().reader
        for spec in MEMBERS:
            assert reader.read(spec.name) == spec.data
            assert b"".join(reader.iter_range(spec.name)) == spec.data
        for call in (lambda: reader.read("nope"), lambda: reader.read_range("nope", 0, 0), lambda: reader.iter_range("nope")):
            with pytest.raises(MemberNotFound):
                call()

    @pytest.mark.parametrize("name", ["20251120_1", "zażółć gęślą jaźń.pdf", "big", "outside.bin"])
    def test_ranges_at_boundaries(self, name: str) -> None:
        reader = self.build().reader
        data = BY_NAME[name].data
        n = len(data)
        for start, stop in ((0, 0), (n, n), (0, n), (1, n - 1), (0, 1), (n - 1, n), (n // 2, min(n, n // 2 + 100))):
            assert reader.read_range(name, start, stop) == data[start:stop]
            assert b"".join(reader.iter_range(name, start, stop, chunk_size=4096)) == data[start:stop]
        if n > MiB + 5:  # across the first 1 MiB block boundary
            assert reader.read_range(name, MiB - 5, MiB + 5) == data[MiB - 5 : MiB + 5]

    def test_chunks_of_a_small_member(self) -> None:
        reader = self.build().reader
        data = BY_NAME["zażółć gęślą jaźń.pdf"].data
        chunks = list(reader.iter_range("zażółć gęślą jaźń.pdf", 10, len(data), chunk_size=4096))
        assert [len(c) for c in chunks] == [4096, 4096, len(data) - 10 - 8192]
        assert list(reader.iter_range("20251120_1", 3, 3)) == []

    def test_the_empty_member(self) -> None:
        reader = self.build().reader
        assert reader.read("empty") == b"" and reader.read_range("empty", 0, 0) == b""
        assert list(reader.iter_range("empty")) == []
        with pytest.raises(ValueError):
            reader.read_range("empty", 0, 1)

    @pytest.mark.parametrize("name", ["20251120_1", "big", "outside.bin", "empty"])
    def test_a_range_outside_the_member_is_a_value_error_before_any_byte(self, name: str) -> None:
        reader = self.build().reader
        n = len(BY_NAME[name].data)
        for start, stop in ((0, n + 1), (n + 1, n + 1), (-1, n), (2, 1) if n >= 2 else (1, 0)):
            with pytest.raises(ValueError, match=r"range \[.*\) is outside member"):
                reader.read_range(name, start, stop)
            with pytest.raises(ValueError):
                reader.iter_range(name, start, stop)  # raised by the call, not by the first chunk
            with pytest.raises(ValueError):
                reader.open_range(name, start, stop)

    def test_open_range(self) -> None:
        reader = self.build().reader
        for spec in MEMBERS:
            n = len(spec.data)
            for start, stop in ((0, None), (0, n), (n // 3, n - n // 3)):
                meta, chunks = reader.open_range(spec.name, start, stop, chunk_size=MiB)
                assert meta == reader.meta(spec.name)
                assert b"".join(chunks) == spec.data[start:stop]
        with pytest.raises(MemberNotFound):
            reader.open_range("nope")

    def test_external_members_need_their_opener(self) -> None:
        reader = self.build(externals=False).reader
        assert reader.read("20251120_1") == b"hello, archive"
        with pytest.raises(ContainerError, match="outside the container"):
            reader.read("outside.bin")

    # --- several members at once -----------------------------------------------------------

    def test_read_many(self) -> None:
        reader = self.build().reader
        names = [s.name for s in MEMBERS]
        got = list(reader.read_many([*names[::-1], names[0]]))
        assert dict(got) == {s.name: s.data for s in MEMBERS} and len(got) == len(MEMBERS)
        inside = [name for name, _ in got if not BY_NAME[name].external]
        assert inside == [name for name in self.order(MEMBERS) if not BY_NAME[name].external]

    def test_read_members_gives_each_members_metadata_with_no_extra_request(self) -> None:
        built = self.build(SMALL)
        names = [s.name for s in SMALL]
        metas = {name: built.reader.meta(name) for name in names}
        before = built.reads()
        got = list(built.reader.read_members(names[::-1]))
        assert [(m.name, d) for m, d in got] == [(s.name, s.data) for s in SMALL]
        assert all(meta == metas[meta.name] for meta, _ in got) and built.reads() == before + 1
        everything = self.build().reader
        assert {m.name: (m, d) for m, d in everything.read_members(BY_NAME)} == {n: (everything.meta(n), everything.read(n)) for n in BY_NAME}

    def test_read_many_refuses_an_unknown_name_before_reading(self) -> None:
        built = self.build()
        before = built.reads()
        with pytest.raises(MemberNotFound):
            list(built.reader.read_many(["20251120_1", "nope"]))
        assert built.reads() == before

    def test_read_many_coalesces_adjacent_members(self) -> None:
        built = self.build(SMALL)
        names = [s.name for s in SMALL]
        before = built.reads()
        assert list(built.reader.read_many(names)) == [(s.name, s.data) for s in SMALL]
        assert built.reads() == before + 1
        assert dict(built.reader.read_many(names, max_merge=1)) == {s.name: s.data for s in SMALL}
        assert built.reads() == before + 1 + len(SMALL)

    # --- checking and merging --------------------------------------------------------------

    def test_verify_a_clean_container(self) -> None:
        assert self.build().reader.verify() == []
        assert self.build(SMALL).reader.verify() == []

    def test_merge_into_a_v2_writer(self) -> None:
        reader = self.build().reader
        out = io.BytesIO()
        writer = ContainerWriter(out)
        if not self.MERGEABLE:
            with pytest.raises(WriterError, match="records no layout"):
                writer.merge(reader)
            return
        assert writer.merge(reader, skip=["🙂"]) == len(MEMBERS) - 1
        writer.close()
        merged = open_container(BytesSource(out.getvalue()))
        assert [m.name for m in merged.members()] == [n for n in self.order(MEMBERS) if n != "🙂"]
        assert all(merged.read(s.name) == s.data for s in MEMBERS if not s.external and s.name != "🙂")

