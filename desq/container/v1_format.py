"""DES v1 containers: byte layouts and parsing (pure: no I/O) of the footer, header, INDEX and META.

    HEADER(16) | DATA | META | INDEX | FOOTER(72)

``des-v1-format.md`` describes every byte. v1 has no checksums, so everything the layout
implies is checked here instead; ``v1.py`` reads containers with these checks.
"""

from __future__ import annotations

import json
import reprlib
import struct
from dataclasses import dataclass

from desq.container.errors import CorruptContainer

VERSION = 1
HEADER_MAGIC = b"DESHEAD1"
FOOTER_MAGIC = b"DESFOOT1"
HEADER = struct.Struct("<8sB7s")  # magic, version, 7 zero bytes
FOOTER = struct.Struct("<8sB7s7Q")
# magic, version, 7 reserved bytes, data_start, data_length, meta_start, meta_length,
# index_start, index_length, file_count
HEADER_SIZE = HEADER.size  # 16
FOOTER_SIZE = FOOTER.size  # 72
MIN_SIZE = HEADER_SIZE + FOOTER_SIZE  # 88
DATA_START = HEADER_SIZE

NAME_LEN = struct.Struct("<H")
ENTRY_FIELDS = struct.Struct("<QQQQI")  # data_offset, data_length, meta_offset, meta_length, flags
MIN_ENTRY_SIZE = NAME_LEN.size + ENTRY_FIELDS.size  # 38

FLAG_EXTERNAL = 0x1
FLAG_COMPRESSED = 0x2
FLAG_ENCRYPTED = 0x4
FLAG_DELETED = 0x8
KNOWN_FLAGS = FLAG_EXTERNAL | FLAG_COMPRESSED | FLAG_ENCRYPTED | FLAG_DELETED

MAX_MEMBER_SIZE = 1 << 48
MAX_INDEX_READ = 1 << 30
"""Largest META+INDEX span ``open`` reads into memory; a bigger one is refused as implausible."""

_short = reprlib.Repr()
_short.maxstring = 60
_short.maxother = 60


def is_des_v1(tail: bytes) -> bool:
    """Whether these last bytes of an object end with a DES v1 footer (magic and version)."""
    return len(tail) >= FOOTER_SIZE and tail[-FOOTER_SIZE:][:9] == FOOTER_MAGIC + bytes([VERSION])


@dataclass(frozen=True, slots=True)
class Footer:
    """A parsed and checked DES v1 footer, with the object size it was checked against."""

    size: int
    reserved: bytes
    data_start: int
    data_length: int
    meta_start: int
    meta_length: int
    index_start: int
    index_length: int
    file_count: int

    @property
    def data_end(self) -> int:
        return self.data_start + self.data_length

    @property
    def meta_end(self) -> int:
        return self.meta_start + self.meta_length

    @property
    def index_end(self) -> int:
        return self.index_start + self.index_length

    @property
    def footer_start(self) -> int:
        return self.size - FOOTER_SIZE


def parse_footer(tail: bytes, size: int) -> Footer:
    """Check the footer at the end of ``tail`` (the last bytes of an object of ``size`` bytes)."""
    if size < MIN_SIZE:
        raise CorruptContainer(f"{size} bytes is too short for a DES v1 container (at least {MIN_SIZE})")
    if len(tail) < FOOTER_SIZE:
        raise CorruptContainer("DES v1 footer is truncated")
    magic, version, reserved, *fields = FOOTER.unpack_from(tail, len(tail) - FOOTER_SIZE)
    if magic != FOOTER_MAGIC:
        raise CorruptContainer(f"not a DES v1 container: footer magic is {magic!r}, not {FOOTER_MAGIC!r}")
    if version != VERSION:
        raise CorruptContainer(f"DES v1 footer says version {version}, not {VERSION}")
    footer = Footer(size, reserved, *fields)
    check_regions(footer)
    return footer


def check_regions(f: Footer) -> None:
    """Regions inside the file, in order, not overlapping; a member count the index can hold."""
    if f.data_start != DATA_START:
        raise CorruptContainer(f"DES v1 DATA starts at {f.data_start}, not {DATA_START}")
    regions = (("DATA", f.data_start, f.data_end), ("META", f.meta_start, f.meta_end), ("INDEX", f.index_start, f.index_end))
    for region, start, end in regions:
        if end > f.footer_start:
            raise CorruptContainer(f"DES v1 {region} region [{start}, {end}) runs past the footer at {f.footer_start}")
    if f.meta_start < f.data_end:
        raise CorruptContainer(f"DES v1 META region at {f.meta_start} overlaps or precedes DATA ending at {f.data_end}")
    if f.index_start < f.meta_end:
        raise CorruptContainer(f"DES v1 INDEX region at {f.index_start} overlaps or precedes META ending at {f.meta_end}")
    most = f.index_length // MIN_ENTRY_SIZE
    if f.file_count > most:
        raise CorruptContainer(
            f"DES v1 footer claims {f.file_count} members; its {f.index_length}-byte index holds at most {most}"
        )
    span = f.index_end - f.meta_start
    if span > MAX_INDEX_READ:
        raise CorruptContainer(f"DES v1 META and INDEX span {span} bytes, more than the {MAX_INDEX_READ} a reader accepts")


def check_header(raw: bytes) -> None:
    """Check the 16-byte header."""
    if len(raw) < HEADER_SIZE:
        raise CorruptContainer("DES v1 header is truncated")
    magic, version, pad = HEADER.unpack_from(raw)
    if magic != HEADER_MAGIC:
        raise CorruptContainer(f"not a DES v1 container: header magic is {magic!r}, not {HEADER_MAGIC!r}")
    if version != VERSION:
        raise CorruptContainer(f"DES v1 header says version {version}, not {VERSION}")
    if any(pad):
        raise CorruptContainer("DES v1 header padding is not zero")


@dataclass(frozen=True, slots=True)
class Entry:
    """One INDEX entry as stored."""

    position: int
    name: str
    data_offset: int
    data_length: int
    meta_offset: int
    meta_length: int
    flags: int

    @property
    def external(self) -> bool:
        return bool(self.flags & FLAG_EXTERNAL)

    @property
    def deleted(self) -> bool:
        return bool(self.flags & FLAG_DELETED)

    @property
    def data_end(self) -> int:
        return self.data_offset + self.data_length


def parse_index(raw: bytes | memoryview, count: int) -> list[Entry]:
    """The ``count`` entries that must fill ``raw`` (the INDEX region) exactly."""
    entries = []
    pos, end = 0, len(raw)
    for i in range(count):
        if pos + NAME_LEN.size > end:
            raise CorruptContainer(f"DES v1 index entry {i} runs past the end of the index")
        (name_len,) = NAME_LEN.unpack_from(raw, pos)
        name_end = pos + NAME_LEN.size + name_len
        if name_end > end:
            raise CorruptContainer(f"DES v1 index entry {i}: its {name_len}-byte name runs past the end of the index")
        if name_end + ENTRY_FIELDS.size > end:
            raise CorruptContainer(f"DES v1 index entry {i}: its fields run past the end of the index")
        try:
            name = bytes(raw[pos + NAME_LEN.size : name_end]).decode("utf-8")
        except UnicodeDecodeError:
            raise CorruptContainer(f"DES v1 index entry {i}: the name is not valid UTF-8") from None
        entries.append(Entry(i, name, *ENTRY_FIELDS.unpack_from(raw, name_end)))
        pos = name_end + ENTRY_FIELDS.size
    if pos != end:
        raise CorruptContainer(f"DES v1 index has {end - pos} bytes after its {count} entries")
    return entries


@dataclass(frozen=True, slots=True)
class EntryCheck:
    """What is wrong with one entry: problems with its data, and with its metadata."""

    meta: dict[str, object] | None
    data_problems: tuple[str, ...]
    meta_problems: tuple[str, ...]

    @property
    def problems(self) -> tuple[str, ...]:
        return self.data_problems + self.meta_problems


def check_entry(entry: Entry, footer: Footer, meta_region: bytes | memoryview) -> EntryCheck:
    """Check one entry against the regions; ``meta_region`` holds the META bytes."""
    data: list[str] = []
    unknown = entry.flags & ~KNOWN_FLAGS
    if unknown:
        data.append(f"unknown flag bits 0x{unknown:x}")
    if entry.flags & FLAG_COMPRESSED:
        data.append("flagged compressed (0x2), which the DES v1 tool never wrote")
    if entry.flags & FLAG_ENCRYPTED:
        data.append("flagged encrypted (0x4), which the DES v1 tool never wrote")
    if entry.data_length > MAX_MEMBER_SIZE:
        data.append(f"data_length {entry.data_length} is beyond 2**48")
    elif entry.external:
        if entry.data_offset:
            data.append(f"external member has data_offset {entry.data_offset}, not 0")
    elif entry.data_offset < footer.data_start or entry.data_end > footer.data_end:
        data.append(f"data [{entry.data_offset}, {entry.data_end}) lies outside DATA [{footer.data_start}, {footer.data_end})")
    meta, meta_problems = _check_meta(entry, footer, meta_region)
    return EntryCheck(meta, tuple(data), meta_problems)


def _check_meta(
    entry: Entry, footer: Footer, meta_region: bytes | memoryview
) -> tuple[dict[str, object] | None, tuple[str, ...]]:
    """The entry's parsed metadata (None if unusable) and what is wrong with it."""
    end = entry.meta_offset + entry.meta_length
    if entry.meta_offset < footer.meta_start or end > footer.meta_end:
        return None, (f"metadata [{entry.meta_offset}, {end}) lies outside META [{footer.meta_start}, {footer.meta_end})",)
    start = entry.meta_offset - footer.meta_start
    meta, problem = parse_meta(bytes(meta_region[start : start + entry.meta_length]))
    if meta is None:
        return None, (problem,)
    problems = []
    size = meta.get("size")
    if "size" in meta and (type(size) is not int or size != entry.data_length):
        problems.append(f"metadata size {_short.repr(size)} does not match the index ({entry.data_length})")
    mime = meta.get("mime")
    if mime is not None and not isinstance(mime, str):
        problems.append(f"metadata mime {_short.repr(mime)} is not a string")
    flag = meta.get("is_external")
    if "is_external" in meta and flag is not entry.external:
        problems.append(f"metadata is_external {_short.repr(flag)} disagrees with the index flags (0x{entry.flags:x})")
    key = meta.get("external_key")
    if entry.external and not (isinstance(key, str) and key):
        problems.append(f"external member has no usable external_key in its metadata (got {_short.repr(key)})")
    return meta, tuple(problems)


def parse_meta(raw: bytes) -> tuple[dict[str, object] | None, str]:
    """``(object, "")`` for a JSON object, else ``(None, what is wrong)``."""
    try:
        value = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return None, "metadata is not valid UTF-8"
    except (ValueError, RecursionError):
        return None, "metadata is not valid JSON"
    if not isinstance(value, dict):
        return None, f"metadata is a JSON {type(value).__name__}, not an object"
    return value, ""
