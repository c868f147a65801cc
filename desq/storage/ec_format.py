"""The erasure-coded archive's layout, pure: stripes, fragments, their footer and who is visible.

An object of ``L`` bytes is cut into stripes of K cells. Every stripe but the last has cells of
``cell`` bytes; the last has cells of ``ceil(rest / K)`` bytes, zero-padded, so that padding is
under K bytes whatever the size. Data cell ``j`` of every stripe goes to fragment ``j``, parity
cell ``K + p`` to fragment ``K + p``: a byte range inside one cell is a range of one fragment,
read with one request.

A fragment is its cells back to back, cut into blocks of ``block`` bytes, each followed by its
CRC32C seeded with (version, index, block number), so a misplaced or stale block never passes;
then a fixed footer (the "header" of the issue, kept at the end because its object length and
checksum are known only once a streamed write ends; one suffix read fetches it).

Fragments of version ``v`` of ``key`` are stored as ``key~v`` on node ``index``. A version id
never names two contents, so replacing an object writes new fragments beside the old ones and a
pinned read never sees a mix. A version is committed once K+1 of its fragments are durably
stored; the writer then records that with an empty *marker* ``key~v~L-cell-block`` on every node.
Readers see the newest marked version (its length and geometry are in the marker's name, so a
listing is enough to open it). A write killed before K+1 fragments is invisible and ``recover``
clears it; one killed after them but before its markers is whole, and ``recover`` marks it.
"""

from __future__ import annotations

import functools
import os
import re
import struct
import time
from dataclasses import dataclass

from crc32c import crc32c

MAGIC = b"DESQECF1"
FORMAT = 1
FOOTER_SIZE = 128
_FOOTER = struct.Struct("<8sHBBBxIIQ16sII")
_FOOTER_CRC = struct.Struct("<I")
VERSION_BYTES = 16
_FRAGMENT_KEY = re.compile(r"(?s)(.+)~([0-9a-f]{32})")
_MARKER_KEY = re.compile(r"(?s)(.+)~([0-9a-f]{32})~([0-9a-f]{1,16})-([0-9a-f]{1,8})-([0-9a-f]{1,8})")
_ETAG = re.compile(r"ec1-([0-9a-f]{32})-([0-9a-f]{1,16})-([0-9a-f]{1,8})-([0-9a-f]{1,8})")


class FragmentError(Exception):
    """A fragment that cannot be used: missing, damaged or not the one asked for."""


@dataclass(frozen=True, slots=True)
class Geometry:
    """How objects are cut: K data and M parity fragments, cells of ``cell``, blocks of ``block``."""

    k: int
    m: int
    cell: int = 1 << 20
    block: int = 16 << 10

    def __post_init__(self) -> None:
        if not (1 <= self.k <= 128 and 1 <= self.m <= 128 and self.k + self.m <= 256):
            raise ValueError(f"K={self.k} M={self.m}: need 1 <= K, 1 <= M and K + M <= 256")
        if self.block < 512 or self.cell % self.block:
            raise ValueError(f"cell {self.cell} must be a multiple of the block {self.block} (>= 512)")

    @property
    def n(self) -> int:
        """Fragments an object has: K + M."""
        return self.k + self.m

    @property
    def stripe(self) -> int:
        """Bytes of the object a full stripe holds."""
        return self.k * self.cell

    def stripes(self, length: int) -> int:
        """Stripes an object of ``length`` bytes has (0 when empty)."""
        return -(-length // self.stripe)

    def cell_size(self, length: int, stripe: int) -> int:
        """The cell size of ``stripe`` in an object of ``length`` bytes."""
        count = self.stripes(length)
        if stripe < count - 1:
            return self.cell
        return -(-(length - (count - 1) * self.stripe) // self.k)

    def fragment_length(self, length: int) -> int:
        """Bytes of cells each fragment holds (without block checksums and footer)."""
        count = self.stripes(length)
        return 0 if count == 0 else (count - 1) * self.cell + self.cell_size(length, count - 1)

    def stored_size(self, length: int) -> int:
        """Bytes one fragment takes on its node."""
        cells = self.fragment_length(length)
        return cells + 4 * -(-cells // self.block) + FOOTER_SIZE

    def segments(self, length: int, offset: int, size: int) -> list[Segment]:
        """The pieces of object range [offset, offset + size), each inside one cell, in order."""
        out: list[Segment] = []
        end = offset + size
        while offset < end:
            stripe = offset // self.stripe
            cell = self.cell_size(length, stripe)
            within = offset - stripe * self.stripe
            index, at = divmod(within, cell)
            take = min(cell - at, end - offset)
            out.append(Segment(stripe=stripe, index=index, at=stripe * self.cell + at, size=take, offset=offset))
            offset += take
        return out

    def blocks(self, fragment_length: int, at: int, size: int) -> BlockSpan:
        """The stored bytes of fragment range [at, at + size): whole blocks with their checksums."""
        first, last = at // self.block, (at + size - 1) // self.block
        stop = min((last + 1) * self.block, fragment_length)
        return BlockSpan(first=first, start=first * (self.block + 4), stored=stop - first * self.block + 4 * (last - first + 1), skip=at - first * self.block, size=size)


@dataclass(frozen=True, slots=True)
class Segment:
    """A piece of an object range that lies in one cell: fragment range [at, at + size)."""

    stripe: int
    index: int
    """The data fragment that holds it."""
    at: int
    size: int
    offset: int
    """Where it starts in the object."""


@dataclass(frozen=True, slots=True)
class BlockSpan:
    """Stored bytes to read for a fragment range, and where the range lies in their data."""

    first: int
    """Number of the first block."""
    start: int
    stored: int
    """Offset and length of the read on the node."""
    skip: int
    size: int


def block_seed(version: bytes, index: int, number: int) -> int:
    """The CRC32C seed of block ``number`` of fragment ``index`` of ``version``."""
    return crc32c(struct.pack("<16sBQ", version, index, number))


def seal_block(data: bytes | memoryview, version: bytes, index: int, number: int) -> bytes:
    """The 4 checksum bytes stored after a block."""
    return struct.pack("<I", crc32c(data, block_seed(version, index, number)))


def seal_cell(cell: bytes, version: bytes, index: int, first: int, block: int) -> bytes:
    """A cell as stored: its blocks, numbered from ``first``, each followed by its checksum."""
    stored = bytearray()
    for n, at in enumerate(range(0, len(cell), block)):
        body = cell[at : at + block]
        stored += body
        stored += seal_block(body, version, index, first + n)
    return bytes(stored)


def open_blocks(stored: bytes, span: BlockSpan, block: int, version: bytes, index: int) -> bytes:
    """The fragment bytes of ``span`` from its stored bytes, every block checked; FragmentError if not."""
    view = memoryview(stored)
    if len(view) != span.stored:
        raise FragmentError(f"got {len(view)} stored bytes, expected {span.stored}")
    data = bytearray()
    number, at = span.first, 0
    while at < len(view):
        piece = view[at : at + block + 4]
        body, crc = piece[:-4], piece[-4:]
        if len(piece) <= 4 or struct.pack("<I", crc32c(body, block_seed(version, index, number))) != crc:
            raise FragmentError(f"block {number} fails its checksum")
        data += body
        number += 1
        at += block + 4
    return bytes(memoryview(data)[span.skip : span.skip + span.size])  # one copy, not two


@dataclass(frozen=True, slots=True)
class Footer:
    """What every fragment says of itself and of its object."""

    k: int
    m: int
    index: int
    cell: int
    block: int
    length: int
    """The object's length."""
    version: bytes
    object_crc: int
    """CRC32C of the object's bytes."""
    fragment_crc: int
    """CRC32C of this fragment's cells (padding included)."""

    def pack(self) -> bytes:
        """The footer's 128 bytes."""
        body = _FOOTER.pack(MAGIC, FORMAT, self.k, self.m, self.index, self.cell, self.block, self.length,
                            self.version, self.object_crc, self.fragment_crc)
        body += bytes(FOOTER_SIZE - len(body) - 4)
        return body + _FOOTER_CRC.pack(crc32c(body))

    @classmethod
    def parse(cls, data: bytes) -> Footer:
        """Read a footer; FragmentError if it is not one."""
        if len(data) != FOOTER_SIZE:
            raise FragmentError(f"a footer is {FOOTER_SIZE} bytes, got {len(data)}")
        if data[:8] != MAGIC:
            raise FragmentError("no fragment footer (bad magic)")
        if _FOOTER_CRC.unpack(data[-4:])[0] != crc32c(data[:-4]):
            raise FragmentError("the footer fails its checksum")
        magic, fmt, k, m, index, cell, block, length, version, object_crc, fragment_crc = _FOOTER.unpack_from(data)
        if fmt != FORMAT:
            raise FragmentError(f"fragment format {fmt} is not {FORMAT}")
        footer = cls(k, m, index, cell, block, length, version, object_crc, fragment_crc)
        try:
            footer.geometry()
        except ValueError as exc:
            raise FragmentError(f"the footer's geometry is impossible: {exc}") from None
        if index >= k + m:
            raise FragmentError(f"fragment index {index} of {k}+{m}")
        return footer

    def geometry(self) -> Geometry:
        """The geometry the object was written with."""
        return Geometry(self.k, self.m, self.cell, self.block)


def new_version() -> bytes:
    """A fresh version id: nanoseconds since the epoch then 8 random bytes, so ids sort by age."""
    return time.time_ns().to_bytes(8, "big") + os.urandom(8)


def version_time(version: bytes) -> float:
    """When a version was started, in seconds since the epoch."""
    return int.from_bytes(version[:8], "big") / 1e9


def fragment_key(key: str, version: bytes) -> str:
    """The node key of a fragment of ``version`` of ``key``."""
    return f"{key}~{version.hex()}"


def parse_fragment_key(node_key: str) -> tuple[str, bytes] | None:
    """(object key, version) of a node key, or None if it names no fragment."""
    match = _FRAGMENT_KEY.fullmatch(node_key)
    return (match.group(1), bytes.fromhex(match.group(2))) if match else None


@dataclass(frozen=True, slots=True, order=True)
class Version:
    """One committed version of an object: id, length and geometry, as its marker and ETag say.

    A deletion is a version too, with no geometry (its marker ``key~<id>~0-0-0``): stored when a
    delete could not reach every node, it hides the versions a node that was away still holds."""

    id: bytes
    length: int
    cell: int
    block: int

    @classmethod
    def deletion(cls, after: bytes) -> Version:
        """A deletion ranked just above version id ``after`` (the newest it hides), so that any
        write started after that one, even one published after the delete, still wins."""
        return cls((int.from_bytes(after, "big") + 1).to_bytes(len(after), "big"), 0, 0, 0)

    @property
    def deleted(self) -> bool:
        return self.cell == 0

    @property
    def etag(self) -> str:
        return f"ec1-{self.id.hex()}-{self.length:x}-{self.cell:x}-{self.block:x}"

    @property
    def started(self) -> float:
        return version_time(self.id)

    def marker(self, key: str) -> str:
        """The node key of this version's commit marker."""
        return f"{key}~{self.id.hex()}~{self.length:x}-{self.cell:x}-{self.block:x}"

    @classmethod
    def from_etag(cls, etag: str) -> Version | None:
        """The version an ETag names; None if it is not an erasure-coded object's."""
        return _version_of_etag(etag)

    @classmethod
    def _of(cls, groups: tuple[str, ...]) -> Version:
        version, length, cell, block = groups
        return cls(bytes.fromhex(version), int(length, 16), int(cell, 16), int(block, 16))


@functools.lru_cache(maxsize=4096)
def _version_of_etag(etag: str) -> Version | None:
    match = _ETAG.fullmatch(etag)
    return None if match is None else Version._of(match.groups())


def parse_marker_key(node_key: str) -> tuple[str, Version] | None:
    """(object key, version) of a commit marker's node key, or None if it is none."""
    match = _MARKER_KEY.fullmatch(node_key)
    return None if match is None else (match.group(1), Version._of(match.groups()[1:]))
