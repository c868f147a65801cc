"""DES v1 containers, the format of the earlier Datavision Easy Store tool: read-only.

    HEADER(16) | DATA | META | INDEX | FOOTER(72)

``des-v1-format.md`` describes every byte; ``v1_format`` parses them. desq reads v1 and never
writes it. v1 has no checksums, so everything the layout implies is checked instead: a damaged
container ends in CorruptContainer with a one-line message, never in another exception and never
in a read outside the regions the footer states.

Damage that makes the index unusable (footer, regions, index entries, names) fails ``open``.
Damage confined to one member (its data or metadata out of place, bad JSON, unsupported flags)
makes only that member unreadable; ``verify`` lists it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from desq.container.errors import ContainerError, CorruptContainer, MemberNotFound
from desq.container.format import Head
from desq.container.member import Member, MemberMeta, Problem
from desq.container.ranges import check_range, coalesce
from desq.container.source import ByteSource, ExternalOpener
from desq.container.v1_format import (
    FOOTER_SIZE, HEADER_SIZE, Entry, EntryCheck, Footer, check_entry, check_header, is_des_v1, parse_footer, parse_index,
)

__all__ = ["HEADER_MERGE_GAP", "DesV1Reader", "ExternalOpener", "is_des_v1"]

HEADER_MERGE_GAP = 64 << 10
"""A first data read starting this close to the header fetches the header with it."""


def _fetch(source: ByteSource, offset: int, length: int) -> bytes:
    """``source.read`` that also refuses a source answering with the wrong number of bytes."""
    data = source.read(offset, length)
    if len(data) != length:
        raise CorruptContainer(f"asked for {length} bytes at {offset}, the source returned {len(data)}")
    return data


class DesV1Reader:
    """Reads one DES v1 container through a ByteSource."""

    version = 1

    def __init__(
        self, source: ByteSource, footer: Footer, region: bytes, entries: list[Entry], *, external: ExternalOpener | None = None
    ) -> None:
        """Use ``open``; ``region`` is META through INDEX, ``entries`` the parsed INDEX."""
        self._source = source
        self.footer = footer
        self._meta_region = memoryview(region)[: footer.meta_length]
        self._entries = entries
        self._external = external
        latest: dict[str, Entry] = {}
        for entry in entries:
            latest[entry.name] = entry
        self._live = {name: entry for name, entry in latest.items() if not entry.deleted}
        self.count = len(self._live)
        self._checks: dict[int, EntryCheck] = {}
        self._order: list[Member] | None = None
        self._header_error: str | None = None
        self._header_checked = False

    @classmethod
    def open(
        cls,
        source: ByteSource,
        *,
        suffix: bytes | None = None,
        size: int | None = None,
        external: ExternalOpener | None = None,
    ) -> DesV1Reader:
        """Parse footer and index: one suffix read (none if ``suffix``/``size`` are given) and one read."""
        if (suffix is None) != (size is None):
            raise ValueError("suffix and size must be given together")
        if suffix is not None and size is not None and len(suffix) > size:
            raise ValueError(f"a suffix of {len(suffix)} bytes cannot come from an object of {size} bytes")
        if suffix is None or size is None or len(suffix) < min(FOOTER_SIZE, size):
            suffix, size = source.read_suffix(FOOTER_SIZE)
            if len(suffix) > size:
                raise CorruptContainer(f"the source returned {len(suffix)} bytes of a {size}-byte object")
        footer = parse_footer(suffix, size)
        tail_start = size - len(suffix)
        lo, hi = footer.meta_start, footer.index_end
        if lo >= tail_start or hi == lo:
            region = bytes(suffix[lo - tail_start : hi - tail_start])
        else:
            region = _fetch(source, lo, hi - lo)
        entries = parse_index(memoryview(region)[footer.index_start - lo :], footer.file_count)
        reader = cls(source, footer, region, entries, external=external)
        if tail_start == 0:
            reader._accept_header(suffix[:HEADER_SIZE])
        return reader

    @property
    def layout_version(self) -> None:
        """None: DES v1 records no layout version, so no v2 writer merges it."""
        return None

    @property
    def index_bytes(self) -> int:
        """About 128 bytes a live member: its entry and its share of the META and INDEX bytes."""
        return 128 * self.count

    # --- lookups ---

    def members(self) -> Iterator[Member]:
        """Live members in container order: by data offset, then external ones by name."""
        if self._order is None:
            inside = sorted((e for e in self._live.values() if not e.external), key=lambda e: (e.data_offset, e.position))
            outside = sorted((e for e in self._live.values() if e.external), key=lambda e: e.name)
            self._order = [_member(e) for e in inside + outside]
        return iter(self._order)

    def find(self, name: str) -> Member | None:
        """The live member called ``name``, or None."""
        entry = self._live.get(name)
        return None if entry is None else _member(entry)

    def size_hint(self, name: str) -> int | None:
        """The live member's size from the index (no request), or None if there is no such member."""
        entry = self._live.get(name)
        return None if entry is None else entry.data_length

    def meta(self, name: str) -> MemberMeta:
        """The member's metadata; CorruptContainer if it does not parse or disagrees with the index."""
        entry = self._entry(name)
        check = self._check(entry)
        if check.meta_problems or check.meta is None:
            raise CorruptContainer(f"member {name!r}: {check.meta_problems[0]}")
        mime = check.meta.get("mime")
        key = check.meta.get("external_key") if entry.external else None
        return MemberMeta(
            name=name,
            size=entry.data_length,
            content_type=mime if isinstance(mime, str) else None,
            external_key=key if isinstance(key, str) else None,
        )

    # --- reads ---

    def read(self, name: str) -> bytes:
        """The whole member."""
        entry, check = self._readable(name)
        if entry.external:
            return self._read_external_whole(entry, check)
        return self._read_data(entry.data_offset, entry.data_length, entry.data_length + HEADER_MERGE_GAP)

    def read_range(self, name: str, start: int, stop: int) -> bytes:
        """Bytes ``[start, stop)`` of the member."""
        entry, check = self._readable(name)
        check_range(entry.name, start, stop, entry.data_length)
        if entry.external:
            return _fetch(self._open_external(entry, check), start, stop - start) if stop > start else b""
        return self._read_data(entry.data_offset + start, stop - start, stop - start + HEADER_MERGE_GAP)

    def iter_range(self, name: str, start: int = 0, stop: int | None = None, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Bytes ``[start, stop)`` of the member in chunks of at most ``chunk_size`` bytes."""
        entry, check = self._readable(name)
        stop = entry.data_length if stop is None else stop
        check_range(entry.name, start, stop, entry.data_length)
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        if entry.external:
            return self._iter_external(entry, check, start, stop, chunk_size)
        return self._iter_data(entry.data_offset, start, stop, chunk_size)

    def open_range(self, name: str, start: int = 0, stop: int | None = None, chunk_size: int = 1 << 20) -> tuple[MemberMeta, Iterator[bytes]]:
        """``meta`` and ``iter_range`` of the member (v1 has no checksums to check first)."""
        return self.meta(name), self.iter_range(name, start, stop, chunk_size)

    def read_many(self, names: Iterable[str], *, max_merge: int = 8 << 20, max_gap: int = 64 << 10) -> Iterator[tuple[str, bytes]]:
        """``(name, bytes)`` of each named member once, in container order; nearby members share one read."""
        if max_merge < 0 or max_gap < 0:
            raise ValueError("max_merge and max_gap must not be negative")
        wanted = [self._readable(name) for name in dict.fromkeys(names)]
        inside = sorted((ec for ec in wanted if not ec[0].external), key=lambda ec: (ec[0].data_offset, ec[0].position))
        outside = sorted((ec for ec in wanted if ec[0].external), key=lambda ec: ec[0].name)
        return self._read_many(inside, outside, max_merge, max_gap)

    def read_members(self, names: Iterable[str], *, max_merge: int = 8 << 20, max_gap: int = 64 << 10) -> Iterator[tuple[MemberMeta, bytes]]:
        """``read_many`` with each member's metadata (held in memory since ``open``: no extra request)."""
        for name, data in self.read_many(names, max_merge=max_merge, max_gap=max_gap):
            yield self.meta(name), data

    def verify(self) -> list[Problem]:
        """Structural problems (v1 has no checksums); [] when all is well."""
        problems = [Problem(None, text) for text in self._footer_oddities()]
        try:
            self._ensure_header()
        except CorruptContainer as exc:
            problems.append(Problem(None, str(exc)))
        for entry in self._entries:
            live = self._live.get(entry.name) is entry
            label = "" if live else f"{'deleted' if entry.deleted else 'superseded'} index entry {entry.position}: "
            problems.extend(Problem(entry.name, label + text) for text in self._check(entry).problems)
        previous: Entry | None = None
        for member in self.members():
            entry = self._live[member.name]
            if entry.external or self._check(entry).data_problems:
                continue
            if previous is not None and entry.data_offset < previous.data_end:
                problems.append(Problem(entry.name, f"data at {entry.data_offset} overlaps member {previous.name!r}"))
            if previous is None or entry.data_end > previous.data_end:
                previous = entry
        return problems

    def raw_frames(self, skip: set[str]) -> Iterator[tuple[Head, bytes]]:
        """Refused: DES v1 holds no v2 frames (``ContainerWriter.merge`` refuses it by ``layout_version``)."""
        raise ContainerError("a DES v1 container has no v2 frames to copy")

    # --- internals ---

    def _footer_oddities(self) -> list[str]:
        """Harmless-looking but unexpected footer facts: unowned bytes, non-zero reserved bytes."""
        f = self.footer
        found = [f"{b - a} bytes between {what} belong to no region" for what, a, b in (
            ("DATA and META", f.data_end, f.meta_start),
            ("META and INDEX", f.meta_end, f.index_start),
            ("INDEX and the footer", f.index_end, f.footer_start),
        ) if b > a]
        if any(f.reserved):
            found.append("footer reserved bytes are not zero")
        return found

    def _entry(self, name: str) -> Entry:
        """The live entry called ``name``; MemberNotFound if none."""
        entry = self._live.get(name)
        if entry is None:
            raise MemberNotFound(name)
        return entry

    def _check(self, entry: Entry) -> EntryCheck:
        """``check_entry``, once per entry."""
        check = self._checks.get(entry.position)
        if check is None:
            check = self._checks[entry.position] = check_entry(entry, self.footer, self._meta_region)
        return check

    def _readable(self, name: str) -> tuple[Entry, EntryCheck]:
        """The live entry called ``name`` if nothing is wrong with it; CorruptContainer otherwise."""
        entry = self._entry(name)
        check = self._check(entry)
        if check.problems:
            raise CorruptContainer(f"member {name!r}: {check.problems[0]}")
        return entry, check

    def _accept_header(self, raw: bytes) -> None:
        """Check the header once; a bad one is remembered and fails every later data read."""
        try:
            check_header(raw)
        except CorruptContainer as exc:
            self._header_error = str(exc)
            raise
        finally:
            self._header_checked = True

    def _ensure_header(self) -> None:
        """Fetch and check the header unless that was done."""
        if self._header_error is not None:
            raise CorruptContainer(self._header_error)
        if not self._header_checked:
            self._accept_header(_fetch(self._source, 0, HEADER_SIZE))

    def _read_data(self, offset: int, length: int, merge_limit: int) -> bytes:
        """``length`` bytes at ``offset`` of the container, checking the header first (with them if near)."""
        if not self._header_checked and offset + length <= merge_limit:
            raw = _fetch(self._source, 0, offset + length)
            self._accept_header(raw[:HEADER_SIZE])
            return raw[offset:]
        self._ensure_header()
        return _fetch(self._source, offset, length) if length else b""

    def _iter_data(self, base: int, start: int, stop: int, chunk_size: int) -> Iterator[bytes]:
        """Bytes ``[start, stop)`` of the member whose data start at ``base``, one read a chunk."""
        pos = start
        while pos < stop:
            n = min(chunk_size, stop - pos)
            yield self._read_data(base + pos, n, chunk_size)
            pos += n

    def _read_many(
        self, inside: list[tuple[Entry, EntryCheck]], outside: list[tuple[Entry, EntryCheck]], max_merge: int, max_gap: int
    ) -> Iterator[tuple[str, bytes]]:
        """Members inside the container in coalesced reads, then the external ones."""
        for group in coalesce([e for e, _ in inside], _data_span, max_merge, max_gap):
            start = group[0].data_offset
            end = max(e.data_end for e in group)
            raw = self._read_data(start, end - start, end - start + HEADER_MERGE_GAP)
            for entry in group:
                yield entry.name, raw[entry.data_offset - start : entry.data_end - start]
        for entry, check in outside:
            yield entry.name, self._read_external_whole(entry, check)

    def _open_external(self, entry: Entry, check: EntryCheck) -> ByteSource:
        """The source of an external member's bytes (its key was checked by ``check_entry``)."""
        key = check.meta.get("external_key") if check.meta else None
        if self._external is None:
            raise ContainerError(
                f"member {entry.name!r} is stored outside the container as {key!r}, and no external source was given to read it"
            )
        return self._external(str(key))

    def _read_external_whole(self, entry: Entry, check: EntryCheck) -> bytes:
        """The whole external object in one request, which also checks its size against the index."""
        raw, total = self._open_external(entry, check).read_suffix(entry.data_length + 1)
        if total != entry.data_length or len(raw) != total:
            key = check.meta.get("external_key") if check.meta else None
            raise CorruptContainer(f"member {entry.name!r}: external object {key!r} has {total} bytes, the index says {entry.data_length}")
        return raw

    def _iter_external(self, entry: Entry, check: EntryCheck, start: int, stop: int, chunk_size: int) -> Iterator[bytes]:
        """Bytes ``[start, stop)`` of an external member, one read a chunk."""
        if start >= stop:
            return
        source = self._open_external(entry, check)
        pos = start
        while pos < stop:
            n = min(chunk_size, stop - pos)
            yield _fetch(source, pos, n)
            pos += n


def _member(entry: Entry) -> Member:
    """What a reader reports about an entry."""
    return Member(entry.name, entry.data_length, 0 if entry.external else entry.data_offset, entry.external)


def _data_span(entry: Entry) -> tuple[int, int]:
    return entry.data_offset, entry.data_end
