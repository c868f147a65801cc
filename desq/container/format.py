"""Container format v2: byte layouts, packing and parsing (pure: no I/O).

``docs/format.md`` describes every byte; this module is its executable form.

    HEADER(16) | FRAME ... | NAMES | INDEX | FOOTER(64)

A FRAME is one member: ``HEAD | DATA | TAIL``. HEAD holds the name, size and metadata (the
records of ``format_meta``, re-exported here) and its own CRC32C; TAIL holds the data's CRC32C
(and one per block for members over one block). A frame depends on nothing outside itself, so
frames can be copied between containers as raw bytes and recovered by scanning for FRAME_MAGIC
when the index is lost. INDEX is two arrays: the 64-bit hashes of the names, sorted, then one
16-byte entry per hash; lookups binary-search the raw bytes. FOOTER, fixed-size at the very end,
locates NAMES and INDEX and carries their CRC32Cs. All integers are little-endian.
"""

from __future__ import annotations

import hashlib
import struct
import sys
from array import array
from bisect import bisect_left
from dataclasses import dataclass

from crc32c import crc32c

from desq.container.errors import ChecksumMismatch, CorruptContainer, WriterError
from desq.container.format_meta import (  # noqa: F401 - re-exported: callers use fmt.Meta, fmt.META_RECORD, ...
    MAX_META_BYTES, META_RECORD, TAG_CONTENT_TYPE, TAG_CREATED_AT, TAG_EXTERNAL_KEY, TAG_PATH, Meta, decode_meta, encode_meta,
)

FORMAT_VERSION = 2

HEADER_MAGIC = b"DESQHDR2"
HEADER = struct.Struct("<8sHHI")  # magic, format version, layout version, CRC32C of the first 12 bytes
HEADER_SIZE = HEADER.size  # 16

FRAME_MAGIC = b"DQMB"
HEAD_FIXED = struct.Struct("<4sHHHBBQ")  # magic, head_len, name_len, meta_len, flags, block_shift, size
HEAD_CRC = struct.Struct("<I")
FLAG_EXTERNAL = 0x01
KNOWN_FLAGS = FLAG_EXTERNAL
MAX_NAME_BYTES = 1024
MIN_BLOCK_SHIFT = 20  # blocks of 1 MiB ...
MAX_BLOCKS = 8192  # ... growing (by powers of two) so that no member has more than 8192
MAX_MEMBER_SIZE = (1 << 48) - 1
MIN_HEAD = HEAD_FIXED.size + 1 + HEAD_CRC.size
MAX_HEAD = HEAD_FIXED.size + MAX_NAME_BYTES + MAX_META_BYTES + HEAD_CRC.size

ENTRY = struct.Struct("<IHIHHBB")  # offset lo/hi (u48), size lo/hi (u48), head_len, flags, reserved
HASH_SIZE = 8
ENTRY_SIZE = HASH_SIZE + ENTRY.size  # 24 bytes a member: all the index memory a reader holds

NAME_LEN = struct.Struct("<H")
MAX_REGION_BYTES = 1 << 30
"""Largest INDEX, and largest NAMES, a writer writes and a reader accepts (INDEX: 44,739,242 members)."""

FOOTER_MAGIC = b"DESQEND2"
FOOTER = struct.Struct("<QQQQIIHHIII8s")
# names_offset, names_length, index_offset, count, names_crc, index_crc, format version,
# layout version, flags, reserved, CRC32C of the 52 bytes before it, magic
FOOTER_SIZE = FOOTER.size  # 64
_FOOTER_CRC_SPAN = FOOTER_SIZE - 12

def name_hash(name: bytes) -> int:
    """The 64-bit hash the index is sorted by: BLAKE2b-64 of the UTF-8 name, as a LE integer."""
    return int.from_bytes(hashlib.blake2b(name, digest_size=HASH_SIZE).digest(), "little")


def block_shift_for(size: int) -> int:
    """log2 of the block size for a member of ``size`` bytes (at least 1 MiB, <= 8192 blocks)."""
    return max(MIN_BLOCK_SHIFT, (size - 1).bit_length() - MAX_BLOCKS.bit_length() + 1) if size else MIN_BLOCK_SHIFT


def block_count(size: int, shift: int) -> int:
    """Blocks of ``1 << shift`` bytes in ``size`` bytes."""
    return (size + (1 << shift) - 1) >> shift


def tail_size(size: int, shift: int) -> int:
    """Bytes of a frame's TAIL: the per-block CRCs (only with 2+ blocks), then the data CRC."""
    blocks = block_count(size, shift)
    return 4 * (blocks if blocks > 1 else 0) + 4


def encode_name(name: str) -> bytes:
    """A member name as stored: non-empty UTF-8 of at most MAX_NAME_BYTES; WriterError otherwise."""
    if not isinstance(name, str) or not name:
        raise WriterError(f"member name must be a non-empty string, got {name!r}")
    try:
        raw = name.encode("utf-8")
    except UnicodeEncodeError:
        raise WriterError(f"member name {name!r} is not valid UTF-8 text") from None
    if len(raw) > MAX_NAME_BYTES:
        raise WriterError(f"member name is {len(raw)} bytes; at most {MAX_NAME_BYTES} are allowed")
    return raw


def decode_name(raw: bytes, where: str) -> str:
    """UTF-8 bytes back to a name; CorruptContainer if they are not valid UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CorruptContainer(f"{where}: a member name is not valid UTF-8") from None


# --- header ---------------------------------------------------------------------------------


def pack_header(layout_version: int) -> bytes:
    """The 16 bytes every v2 container starts with."""
    head = HEADER.pack(HEADER_MAGIC, FORMAT_VERSION, layout_version, 0)[:12]
    return head + struct.pack("<I", crc32c(head))


def parse_header(raw: bytes) -> int:
    """Check the container header; return its layout version."""
    if len(raw) < HEADER_SIZE:
        raise CorruptContainer("container header is truncated")
    magic, version, layout_version, crc = HEADER.unpack_from(raw)
    if magic != HEADER_MAGIC:
        raise CorruptContainer("container header has the wrong magic")
    if crc != crc32c(raw[:12]):
        raise CorruptContainer("container header checksum does not match")
    if version != FORMAT_VERSION:
        raise CorruptContainer(f"container header says format version {version}, not {FORMAT_VERSION}")
    return layout_version


# --- frames ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Head:
    """A parsed frame HEAD."""

    name: str
    size: int
    flags: int
    block_shift: int
    head_len: int
    meta: Meta

    @property
    def external(self) -> bool:
        return bool(self.flags & FLAG_EXTERNAL)

    @property
    def data_len(self) -> int:
        """Bytes of DATA inside the container (0 for an external member)."""
        return 0 if self.external else self.size

    @property
    def tail_len(self) -> int:
        return tail_size(self.size, self.block_shift)

    @property
    def frame_len(self) -> int:
        return self.head_len + self.data_len + self.tail_len


def pack_head(name: bytes, size: int, meta: bytes, flags: int = 0) -> bytes:
    """A frame HEAD for a member of ``size`` bytes (name and meta already encoded)."""
    if not 0 <= size <= MAX_MEMBER_SIZE:
        raise WriterError(f"member size {size} is outside 0..{MAX_MEMBER_SIZE}")
    head_len = HEAD_FIXED.size + len(name) + len(meta) + HEAD_CRC.size
    body = HEAD_FIXED.pack(FRAME_MAGIC, head_len, len(name), len(meta), flags, block_shift_for(size), size) + name + meta
    return body + HEAD_CRC.pack(crc32c(body))


def parse_head(raw: bytes | memoryview, where: str) -> Head:
    """Parse and check a frame HEAD at the start of ``raw`` (which may hold more after it)."""
    if len(raw) < HEAD_FIXED.size:
        raise CorruptContainer(f"{where}: frame head is truncated")
    magic, head_len, name_len, meta_len, flags, shift, size = HEAD_FIXED.unpack_from(raw)
    if magic != FRAME_MAGIC:
        raise CorruptContainer(f"{where}: no frame starts here")
    if head_len != HEAD_FIXED.size + name_len + meta_len + HEAD_CRC.size or not name_len:
        raise CorruptContainer(f"{where}: frame head lengths do not add up")
    if len(raw) < head_len:
        raise CorruptContainer(f"{where}: frame head is truncated")
    body = raw[: head_len - HEAD_CRC.size]
    if HEAD_CRC.unpack_from(raw, head_len - HEAD_CRC.size)[0] != crc32c(body):
        raise CorruptContainer(f"{where}: frame head checksum does not match")
    if name_len > MAX_NAME_BYTES or meta_len > MAX_META_BYTES or flags & ~KNOWN_FLAGS:
        raise CorruptContainer(f"{where}: frame head has out-of-range fields")
    if shift != block_shift_for(size) or size > MAX_MEMBER_SIZE:
        raise CorruptContainer(f"{where}: frame head has an inconsistent size or block size")
    start = HEAD_FIXED.size
    name = decode_name(bytes(raw[start : start + name_len]), where)
    meta = decode_meta(raw[start + name_len : start + name_len + meta_len], where)
    if flags & FLAG_EXTERNAL and not meta.external_key:
        raise CorruptContainer(f"{where}: external member {name!r} has no external key")
    return Head(name=name, size=size, flags=flags, block_shift=shift, head_len=head_len, meta=meta)


def pack_tail(block_crcs: list[int], data_crc: int) -> bytes:
    """A frame TAIL: the block CRCs when there are two or more blocks, then the data CRC."""
    blocks = block_crcs if len(block_crcs) > 1 else []
    return struct.pack(f"<{len(blocks) + 1}I", *blocks, data_crc)


class Checksummer:
    """Running CRC32Cs of a member's bytes: one per block and one over all of them."""

    __slots__ = ("size", "seen", "_block", "_in_block", "_block_crc", "data_crc", "block_crcs")

    def __init__(self, size: int) -> None:
        self.size = size
        self.seen = 0
        self._block = 1 << block_shift_for(size)
        self._in_block = 0
        self._block_crc = 0
        self.data_crc = 0
        self.block_crcs: list[int] = []

    def update(self, view: memoryview) -> None:
        """Take the next bytes of the member."""
        self.seen += len(view)
        self.data_crc = crc32c(view, self.data_crc)
        while len(view):
            take = min(self._block - self._in_block, len(view))
            self._block_crc = crc32c(view[:take], self._block_crc)
            self._in_block += take
            view = view[take:]
            if self._in_block == self._block:
                self.block_crcs.append(self._block_crc)
                self._block_crc, self._in_block = 0, 0

    def finish(self) -> tuple[list[int], int]:
        """(CRC32C per block, CRC32C of all); WriterError unless exactly ``size`` bytes came."""
        if self.seen != self.size:
            raise WriterError(f"{self.seen} bytes came where {self.size} were declared")
        if self._in_block:
            self.block_crcs.append(self._block_crc)
            self._in_block = 0
        return self.block_crcs, self.data_crc


def parse_tail(raw: bytes | memoryview, size: int, shift: int) -> tuple[list[int], int]:
    """TAIL bytes -> (one CRC per block, data CRC); a one-block member's block CRC is its data CRC."""
    count = block_count(size, shift)
    values = list(struct.unpack(f"<{len(raw) // 4}I", raw))
    data_crc = values[-1]
    return (values[:-1] if count > 1 else [data_crc] * count), data_crc


def checked_data(name: str, frame: memoryview, head_len: int, size: int, shift: int) -> memoryview:
    """DATA of a whole in-container frame, after checking it against its TAIL's CRCs
    (ChecksumMismatch if they do not match)."""
    data = frame[head_len : head_len + size]
    block_crcs, data_crc = parse_tail(frame[head_len + size :], size, shift)
    if len(block_crcs) > 1:
        block = 1 << shift
        for i, expected in enumerate(block_crcs):
            if crc32c(data[i * block : (i + 1) * block]) != expected:
                raise ChecksumMismatch(name, f"block {i} checksum does not match")
    if crc32c(data) != data_crc:
        raise ChecksumMismatch(name, "data checksum does not match")
    return data


# --- index and footer -----------------------------------------------------------------------


def pack_entry(offset: int, size: int, head_len: int, flags: int) -> bytes:
    """One 16-byte index entry (the hash is stored apart, in the sorted hash array)."""
    return ENTRY.pack(offset & 0xFFFFFFFF, offset >> 32, size & 0xFFFFFFFF, size >> 32, head_len, flags, 0)


def unpack_entry(raw: bytes | memoryview, at: int) -> tuple[int, int, int, int]:
    """``(data offset, size, head_len, flags)`` of the entry at byte ``at``."""
    off_lo, off_hi, size_lo, size_hi, head_len, flags, _ = ENTRY.unpack_from(raw, at)
    return off_lo | off_hi << 32, size_lo | size_hi << 32, head_len, flags


@dataclass(frozen=True, slots=True)
class Footer:
    """A parsed FOOTER."""

    names_offset: int
    names_length: int
    index_offset: int
    count: int
    names_crc: int
    index_crc: int
    layout_version: int

    @property
    def index_length(self) -> int:
        return self.count * ENTRY_SIZE


def pack_footer(f: Footer) -> bytes:
    """The 64 bytes every v2 container ends with."""
    body = FOOTER.pack(
        f.names_offset, f.names_length, f.index_offset, f.count, f.names_crc, f.index_crc,
        FORMAT_VERSION, f.layout_version, 0, 0, 0, FOOTER_MAGIC,
    )[:_FOOTER_CRC_SPAN]
    return body + struct.pack("<I8s", crc32c(body), FOOTER_MAGIC)


def is_v2(tail: bytes) -> bool:
    """Whether these last bytes of an object end like a v2 container."""
    return tail.endswith(FOOTER_MAGIC)


def parse_footer(tail: bytes, size: int) -> Footer:
    """Check the footer at the end of ``tail`` against an object of ``size`` bytes."""
    if size < HEADER_SIZE + FOOTER_SIZE or len(tail) < FOOTER_SIZE:
        raise CorruptContainer(f"{size} bytes is too short for a container")
    raw = tail[-FOOTER_SIZE:]
    fields = FOOTER.unpack(raw)
    names_offset, names_length, index_offset, count, names_crc, index_crc, version, layout_version, _, _, crc, magic = fields
    if magic != FOOTER_MAGIC:
        raise CorruptContainer("container footer has the wrong magic")
    if crc != crc32c(raw[:_FOOTER_CRC_SPAN]):
        raise CorruptContainer("container footer checksum does not match")
    if version != FORMAT_VERSION:
        raise CorruptContainer(f"container footer says format version {version}, not {FORMAT_VERSION}")
    footer = Footer(names_offset, names_length, index_offset, count, names_crc, index_crc, layout_version)
    if not (
        HEADER_SIZE <= names_offset
        and names_offset + names_length == index_offset
        and index_offset + footer.index_length == size - FOOTER_SIZE
        and count * (NAME_LEN.size + 1) <= names_length <= count * (NAME_LEN.size + MAX_NAME_BYTES)
    ):
        raise CorruptContainer("container footer regions do not fit the object")
    if footer.index_length > MAX_REGION_BYTES or names_length > MAX_REGION_BYTES:
        raise CorruptContainer(f"container footer claims {count} members in a {footer.index_length}-byte index and {names_length} bytes of names; a reader accepts at most {MAX_REGION_BYTES} bytes of each")
    return footer


class Index:
    """The in-memory index: the raw INDEX bytes (24 per member) and nothing per member besides.

    A lookup binary-searches the sorted hash array in C (``bisect`` over a memoryview) and
    unpacks only the entries whose hash matches.
    """

    __slots__ = ("raw", "count", "_hashes", "_entries")

    def __init__(self, raw: bytes, count: int) -> None:
        if len(raw) != count * ENTRY_SIZE:
            raise CorruptContainer("index length does not match the member count")
        self.raw = raw
        self.count = count
        split = count * HASH_SIZE
        if sys.byteorder == "little":
            self._hashes: memoryview | array[int] = memoryview(raw)[:split].cast("Q")
        else:  # pragma: no cover - big-endian hosts keep a byte-swapped copy of the hashes
            swapped = array("Q", raw[:split])
            swapped.byteswap()
            self._hashes = swapped
        self._entries = memoryview(raw)[split:]

    def candidates(self, name: bytes) -> list[int]:
        """Positions whose hash equals the name's (normally one; none if absent)."""
        key = name_hash(name)
        hashes = self._hashes
        i = bisect_left(hashes, key)
        found = []
        while i < self.count and hashes[i] == key:
            found.append(i)
            i += 1
        return found

    def entry(self, i: int) -> tuple[int, int, int, int]:
        """``(data offset, size, head_len, flags)`` of position ``i``."""
        return unpack_entry(self._entries, i * ENTRY.size)

    def hash_at(self, i: int) -> int:
        return self._hashes[i]
