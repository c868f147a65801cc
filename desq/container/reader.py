"""The container reader (format v2) over any ByteSource.

Request budget: ``open`` costs one suffix read when the INDEX fits in it (else one more), and
reading a member costs one read of its whole frame (HEAD, DATA and TAIL are contiguous). Members
of more than one block are streamed block by block, each block checked before it is handed out.
Nothing is ever returned that failed a checksum.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from crc32c import crc32c

from desq.container import format as fmt
from desq.container.errors import ChecksumMismatch, ContainerError, CorruptContainer, MemberNotFound, WriterError
from desq.container.member import Member, MemberMeta, Problem
from desq.container.ranges import check_range, coalesce
from desq.container.source import ByteSource, ExternalOpener

DEFAULT_SUFFIX = 64 * 1024
"""First read of a container: the footer and, for up to ~2,500 members, the whole index."""
MAX_MERGE = 8 << 20
KEEP_NAMES = 64 << 10
"""NAMES regions up to this size stay in memory; larger ones are read again when listing."""
MAX_GAP = 64 << 10


@dataclass(frozen=True, slots=True)
class _Slot:
    """One index entry, checked against the container's regions."""

    position: int
    offset: int
    size: int
    head_len: int
    flags: int
    shift: int
    """log2 of the member's block size (``fmt.block_shift_for(size)``)."""
    end: int
    """Where the frame ends: after its DATA (none for an external member) and TAIL."""

    @classmethod
    def of(cls, position: int, offset: int, size: int, head_len: int, flags: int) -> _Slot:
        """The slot of an index entry, with what every read asks of it computed once."""
        shift = fmt.block_shift_for(size)
        data_len = 0 if flags & fmt.FLAG_EXTERNAL else size
        return cls(position, offset, size, head_len, flags, shift, offset + data_len + fmt.tail_size(size, shift))

    @property
    def external(self) -> bool:
        return bool(self.flags & fmt.FLAG_EXTERNAL)

    @property
    def start(self) -> int:
        return self.offset - self.head_len

    @property
    def data_len(self) -> int:
        return 0 if self.external else self.size

    @property
    def blocks(self) -> int:
        return fmt.block_count(self.size, self.shift)


class ContainerReader:
    """Read a v2 container: look up, read (checked), stream ranges, list and verify."""

    version = 2

    def __init__(self, source: ByteSource, footer: fmt.Footer, index: fmt.Index, *, names: bytes | None = None, external: ExternalOpener | None = None) -> None:
        self.source = source
        self.footer = footer
        self.index = index
        self._names = names
        self._external = external

    @classmethod
    def open(
        cls,
        source: ByteSource,
        *,
        suffix: bytes | None = None,
        size: int | None = None,
        suffix_bytes: int = DEFAULT_SUFFIX,
        external: ExternalOpener | None = None,
    ) -> ContainerReader:
        """Open from the end of the object (``suffix``/``size`` if the caller already read them)."""
        if suffix is None or size is None:
            suffix, size = source.read_suffix(suffix_bytes)
        footer = fmt.parse_footer(suffix, size)
        tail_start = size - len(suffix)
        index_end = footer.index_offset + footer.index_length
        if footer.index_offset >= tail_start:
            index = suffix[footer.index_offset - tail_start : index_end - tail_start]
        else:  # read whole, again with its end in the suffix: no copy of a big INDEX to join the two
            index = source.read(footer.index_offset, footer.index_length)
        if crc32c(index) != footer.index_crc:
            raise CorruptContainer("container index checksum does not match")
        names = None
        if footer.names_offset >= tail_start and footer.names_length <= KEEP_NAMES:
            names = suffix[footer.names_offset - tail_start : footer.index_offset - tail_start]
        return cls(source, footer, fmt.Index(bytes(index), footer.count), names=names, external=external)

    @classmethod
    def from_index(cls, source: ByteSource, index_blob: bytes, *, external: ExternalOpener | None = None) -> ContainerReader:
        """Re-open from ``index_blob`` (a cached copy of INDEX + FOOTER) with no storage request."""
        if len(index_blob) < fmt.FOOTER_SIZE:
            raise CorruptContainer("cached index is too short")
        footer_raw = index_blob[-fmt.FOOTER_SIZE :]
        footer = fmt.parse_footer(footer_raw, _size_from_footer(footer_raw))
        index = index_blob[:-fmt.FOOTER_SIZE]
        if len(index) != footer.index_length or crc32c(index) != footer.index_crc:
            raise CorruptContainer("cached index does not match its footer")
        return cls(source, footer, fmt.Index(bytes(index), footer.count), external=external)

    @property
    def index_blob(self) -> bytes:
        """INDEX + FOOTER: what a cache keeps to re-open this container without reading it."""
        return self.index.raw + fmt.pack_footer(self.footer)

    @property
    def count(self) -> int:
        return self.footer.count

    @property
    def layout_version(self) -> int:
        return self.footer.layout_version

    @property
    def index_bytes(self) -> int:
        """Memory the open index holds: INDEX as stored, 24 bytes a member."""
        return len(self.index.raw)

    # --- lookups ----------------------------------------------------------------------------

    def _slot(self, position: int) -> _Slot:
        offset, size, head_len, flags = self.index.entry(position)
        slot = _Slot.of(position, offset, size, head_len, flags)
        if not (
            fmt.MIN_HEAD <= head_len <= fmt.MAX_HEAD
            and slot.start >= fmt.HEADER_SIZE
            and slot.end <= self.footer.names_offset
            and not flags & ~fmt.KNOWN_FLAGS
            and size <= fmt.MAX_MEMBER_SIZE
        ):
            raise CorruptContainer(f"index entry {position} points outside the container's frames")
        return slot

    def _slots(self, name: str) -> list[_Slot]:
        try:
            raw = fmt.encode_name(name)
        except WriterError:
            return []
        return [self._slot(i) for i in self.index.candidates(raw)]

    def _frame_head(self, slot: _Slot, frame: bytes | memoryview) -> fmt.Head:
        head = fmt.parse_head(frame, f"index entry {slot.position}")
        if (head.head_len, head.size, head.flags) != (slot.head_len, slot.size, slot.flags):
            raise CorruptContainer(f"member {head.name!r}: its frame and its index entry disagree")
        return head

    def _find_head(self, name: str, whole: Callable[[_Slot], bool] = lambda slot: False) -> tuple[_Slot, fmt.Head, bytes | None]:
        """The slot and head of ``name``, with the whole frame when ``whole(slot)`` asks for it.

        Single-block members always come whole: it is the same one request, and their one CRC
        covers any range of them.
        """
        for slot in self._slots(name):
            take = slot.blocks <= 1 or (whole(slot) and slot.end - slot.start <= MAX_MERGE)
            raw = self.source.read(slot.start, (slot.end if take else slot.offset) - slot.start)
            head = self._frame_head(slot, raw)
            if head.name == name:
                return slot, head, raw if take else None
        raise MemberNotFound(name)

    def find(self, name: str) -> Member | None:
        """The member called ``name`` (one request: its frame head), or None."""
        try:
            slot, _, _ = self._find_head(name)
        except MemberNotFound:
            return None
        return Member(name=name, size=slot.size, offset=0 if slot.external else slot.offset, external=slot.external)

    def size_hint(self, name: str) -> int | None:
        """The size the index gives ``name`` (no request; confirmed when the member is read)."""
        slots = self._slots(name)
        return slots[0].size if len(slots) == 1 else None

    def open_range(self, name: str, start: int = 0, stop: int | None = None, chunk_size: int = 1 << 20) -> tuple[MemberMeta, Iterator[bytes]]:
        """A member's metadata and a checked stream of bytes ``[start, stop)``, from one frame read
        for members of one block (the stream raises before its first byte if they fail a check)."""
        slot, head, frame, stop = self._find_range(name, start, stop)
        return self._meta_of(slot, head, frame), self._iter_checked(slot, head, frame, start, stop, chunk_size)

    def meta(self, name: str) -> MemberMeta:
        """A member's stored metadata and checksum (one request)."""
        slot, head, frame = self._find_head(name)
        return self._meta_of(slot, head, frame)

    def _meta_of(self, slot: _Slot, head: fmt.Head, frame: bytes | None) -> MemberMeta:
        name = head.name
        if frame is None:
            frame = self.source.read(slot.start, slot.end - slot.start) if slot.external else None
        if frame is None:
            _, data_crc = fmt.parse_tail(self.source.read(slot.offset + slot.data_len, slot.end - slot.offset - slot.data_len), slot.size, slot.shift)
        else:
            _, data_crc = fmt.parse_tail(memoryview(frame)[slot.offset + slot.data_len - slot.start :], slot.size, slot.shift)
        m = head.meta
        return MemberMeta(name=name, size=head.size, content_type=m.content_type, path=m.path, created_at=m.created_at, checksum=data_crc, external_key=m.external_key)

    # --- reading ----------------------------------------------------------------------------

    def read(self, name: str) -> bytes:
        """A whole member, checked; one request for a member in the container."""
        return b"".join(self.iter_range(name))

    def read_range(self, name: str, start: int, stop: int) -> bytes:
        """Bytes ``[start, stop)`` of a member, checked."""
        return b"".join(self.iter_range(name, start, stop))

    def iter_range(self, name: str, start: int = 0, stop: int | None = None, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Stream bytes ``[start, stop)`` of a member; each block is checked before it is yielded.

        Raises MemberNotFound or ValueError (bad range) before yielding anything.
        """
        slot, head, frame, stop = self._find_range(name, start, stop)
        return self._iter_checked(slot, head, frame, start, stop, chunk_size)

    def _find_range(self, name: str, start: int, stop: int | None) -> tuple[_Slot, fmt.Head, bytes | None, int]:
        """``_find_head`` for bytes ``[start, stop)`` (the whole frame for the whole member), with
        ``stop`` resolved; ValueError for a range outside the member."""
        slot, head, frame = self._find_head(name, whole=lambda slot: start == 0 and stop in (None, slot.size))
        stop = slot.size if stop is None else stop
        check_range(name, start, stop, slot.size)
        return slot, head, frame, stop

    def _iter_checked(self, slot: _Slot, head: fmt.Head, frame: bytes | None, start: int, stop: int, chunk_size: int) -> Iterator[bytes]:
        if frame is not None and not slot.external:
            data = fmt.checked_data(head.name, memoryview(frame), slot.head_len, slot.size, slot.shift)
            for at in range(start, stop, chunk_size):
                yield bytes(data[at : min(stop, at + chunk_size)])
            return
        if start == stop:
            return
        yield from self._iter_blocks(slot, head, start, stop, chunk_size)

    def _iter_blocks(self, slot: _Slot, head: fmt.Head, start: int, stop: int, chunk_size: int) -> Iterator[bytes]:
        tail_at = slot.offset + slot.data_len
        block_crcs, data_crc = fmt.parse_tail(self.source.read(tail_at, slot.end - tail_at), slot.size, slot.shift)
        if slot.external:
            source, base = self._open_external(head), 0
        else:
            source, base = self.source, slot.offset
        block = 1 << slot.shift
        first, last = start // block, (stop - 1) // block
        per_read = max(1, min(chunk_size, MAX_MERGE) // block)
        whole = start == 0 and stop == slot.size
        running = 0
        for group in range(first, last + 1, per_read):
            group_end = min(last + 1, group + per_read)
            lo, hi = group * block, min(slot.size, group_end * block)
            raw = memoryview(source.read(base + lo, hi - lo))
            for i in range(group, group_end):
                piece = raw[(i - group) * block : (i - group + 1) * block]
                if crc32c(piece) != block_crcs[i]:
                    raise ChecksumMismatch(head.name, f"block {i} checksum does not match")
                if whole:
                    running = crc32c(piece, running)
                a, b = max(start, i * block), min(stop, (i + 1) * block)
                yield bytes(piece[a - i * block : b - i * block])
        if whole and running != data_crc:
            raise ChecksumMismatch(head.name, "data checksum does not match")

    def _open_external(self, head: fmt.Head) -> ByteSource:
        key = head.meta.external_key or ""
        if self._external is None:
            raise ContainerError(f"member {head.name!r} is stored outside the container as {key!r}, and no storage was given to read it")
        return self._external(key)

    def read_many(self, names: Iterable[str], *, max_merge: int = MAX_MERGE, max_gap: int = MAX_GAP) -> Iterator[tuple[str, bytes]]:
        """Read several members, adjacent ones with one request; yields (name, bytes) by offset.

        MemberNotFound for an unknown name is raised before anything is read.
        """
        for meta, data in self.read_members(names, max_merge=max_merge, max_gap=max_gap):
            yield meta.name, data

    def read_members(self, names: Iterable[str], *, max_merge: int = MAX_MERGE, max_gap: int = MAX_GAP) -> Iterator[tuple[MemberMeta, bytes]]:
        """``read_many`` with each member's metadata, from the frames it reads anyway (no extra request)."""
        wanted: list[tuple[str, _Slot]] = []
        for name in dict.fromkeys(names):
            slots = self._slots(name)
            if not slots:
                raise MemberNotFound(name)
            wanted.append((name, slots[0]))
        small = [(n, s) for n, s in wanted if not s.external and s.end - s.start <= max_merge]
        for group in coalesce(sorted(small, key=lambda p: p[1].start), _frame_span, max_merge, max_gap):
            lo, hi = group[0][1].start, max(s.end for _, s in group)
            raw = memoryview(self.source.read(lo, hi - lo))
            for name, slot in group:
                frame = raw[slot.start - lo : slot.end - lo]
                head = self._frame_head(slot, frame)
                if head.name != name:  # another name with the same hash: look it up alone
                    yield self._whole(name)
                    continue
                data = bytes(fmt.checked_data(name, frame, slot.head_len, slot.size, slot.shift))
                yield self._meta_of(slot, head, frame), data
        for name, slot in wanted:
            if slot.external or slot.end - slot.start > max_merge:
                yield self._whole(name)

    def _whole(self, name: str) -> tuple[MemberMeta, bytes]:
        meta, chunks = self.open_range(name, chunk_size=MAX_MERGE)
        return meta, b"".join(chunks)

    # --- listing, merging and verifying -----------------------------------------------------

    def _load_names(self) -> list[str]:
        raw = self._names
        if raw is None:
            raw = self.source.read(self.footer.names_offset, self.footer.names_length)
            if crc32c(raw) != self.footer.names_crc:
                raise CorruptContainer("container names checksum does not match")
            if len(raw) <= KEEP_NAMES:
                self._names = raw
        elif crc32c(raw) != self.footer.names_crc:
            raise CorruptContainer("container names checksum does not match")
        names, pos = [], 0
        for _ in range(self.count):
            if pos + 2 > len(raw):
                raise CorruptContainer("container names region is truncated")
            (length,) = fmt.NAME_LEN.unpack_from(raw, pos)
            names.append(fmt.decode_name(raw[pos + 2 : pos + 2 + length], "names region"))
            pos += 2 + length
        if pos != len(raw):
            raise CorruptContainer("container names region has bytes past its last name")
        return names

    def _slots_in_order(self) -> list[_Slot]:
        return sorted((self._slot(i) for i in range(self.count)), key=lambda s: s.start)

    def members(self) -> Iterator[Member]:
        """Every member in container order (needs the NAMES region: at most one request)."""
        names = self._load_names()
        slots = self._slots_in_order()
        for slot in slots:
            yield Member(name=names[slot.position], size=slot.size, offset=0 if slot.external else slot.offset, external=slot.external)

    def raw_frames(self, skip: set[str]) -> Iterator[tuple[fmt.Head, bytes]]:
        """Each member's (head, whole frame), checked once, for ``ContainerWriter.merge``."""
        names = self._load_names()
        slots = self._slots_in_order()
        keep = [(names[s.position], s) for s in slots if names[s.position] not in skip]
        for group in coalesce(keep, _frame_span, MAX_MERGE, 0):
            lo, hi = group[0][1].start, max(s.end for _, s in group)
            if hi - lo > MAX_MERGE:  # one frame bigger than a merge: stream its blocks, checked
                name, slot = group[0]
                head = self._frame_head(slot, self.source.read(slot.start, slot.head_len))
                parts = [self.source.read(slot.start, slot.head_len), *self._iter_blocks(slot, head, 0, slot.size, MAX_MERGE)]
                yield head, b"".join(parts) + self.source.read(slot.offset + slot.data_len, slot.end - slot.offset - slot.data_len)
                continue
            raw = memoryview(self.source.read(lo, hi - lo))
            for name, slot in group:
                frame = raw[slot.start - lo : slot.end - lo]
                head = self._frame_head(slot, frame)
                if head.name != name:
                    raise CorruptContainer(f"index entry {slot.position}: frame holds {head.name!r}, names region says {name!r}")
                if not slot.external:
                    fmt.checked_data(name, frame, slot.head_len, slot.size, slot.shift)
                yield head, bytes(frame)

    def verify(self) -> list[Problem]:
        """Check header, footer, index, names and every member's checksums; [] when all is well."""
        problems: list[Problem] = []
        try:
            layout_version = fmt.parse_header(self.source.read(0, fmt.HEADER_SIZE))
            if layout_version != self.layout_version:
                problems.append(Problem(None, f"header says layout {layout_version}, footer says {self.layout_version}"))
        except CorruptContainer as exc:
            problems.append(Problem(None, str(exc)))
        try:
            names = self._load_names()
            slots = self._slots_in_order()
        except CorruptContainer as exc:
            return [*problems, Problem(None, str(exc))]
        expected = fmt.HEADER_SIZE
        for slot in slots:
            if slot.start != expected:
                problems.append(Problem(names[slot.position], f"frame starts at {slot.start}, the previous one ended at {expected}"))
            expected = slot.end
            name = names[slot.position]
            if fmt.name_hash(name.encode("utf-8")) != self.index.hash_at(slot.position):
                problems.append(Problem(name, "index hash does not match the name"))
        if expected != self.footer.names_offset:
            problems.append(Problem(None, f"frames end at {expected}, the names region starts at {self.footer.names_offset}"))
        return problems + self._verify_members(names, slots)

    def _verify_members(self, names: list[str], slots: list[_Slot]) -> list[Problem]:
        """Every member's checksums, by index position. Adjacent small frames are read together (at
        most MAX_MERGE bytes a read); a frame that fails is checked again alone, for its own message."""
        spans = [(s, s.start, s.end) for s in slots]  # computed once: the properties cost per call
        alone = [s for s, start, end in spans if s.external or end - start > MAX_MERGE]
        for group in coalesce([p for p in spans if not p[0].external and p[2] - p[1] <= MAX_MERGE], _span, MAX_MERGE, MAX_GAP):
            lo, hi = group[0][1], max(end for _, _, end in group)
            try:
                raw = memoryview(self.source.read(lo, hi - lo))
            except CorruptContainer:
                alone.extend(s for s, _, _ in group)
                continue
            for slot, start, end in group:
                frame = raw[start - lo : end - lo]
                try:
                    if self._frame_head(slot, frame).name != names[slot.position]:
                        raise CorruptContainer("another name")
                    fmt.checked_data(names[slot.position], frame, slot.head_len, slot.size, slot.shift)
                except (CorruptContainer, ContainerError):
                    alone.append(slot)
        problems: list[Problem] = []
        for slot in sorted(alone, key=lambda s: s.position):
            name = names[slot.position]
            try:
                for _ in self.iter_range(name, chunk_size=MAX_MERGE):
                    pass
            except (CorruptContainer, ContainerError) as exc:
                problems.append(Problem(name, str(exc).removeprefix(f"member {name!r}: ")))
        return problems


def _span(item: tuple[_Slot, int, int]) -> tuple[int, int]:
    return item[1], item[2]


def _frame_span(item: tuple[str, _Slot]) -> tuple[int, int]:
    return item[1].start, item[1].end


def _size_from_footer(footer_raw: bytes) -> int:
    """The container size a footer implies (index end + footer), for cached indexes."""
    try:
        fields = fmt.FOOTER.unpack(footer_raw)
    except Exception:  # noqa: BLE001 - struct.error: wrong length
        raise CorruptContainer("cached footer is malformed") from None
    return fields[2] + fields[3] * fmt.ENTRY_SIZE + fmt.FOOTER_SIZE
