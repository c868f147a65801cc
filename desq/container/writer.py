"""The streaming container writer (format v2).

Memory stays constant apart from the index being built (about 40 bytes a member): a member's
bytes are copied through in blocks and never held whole. The output only needs ``write``, so a
pipe or an upload stream works as well as a file.
"""

from __future__ import annotations

import io
import os
import sys
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from stat import S_ISREG
from typing import BinaryIO, Protocol

from crc32c import crc32c

from desq.container import format as fmt
from desq.container.errors import ContainerError, WriterError
from desq.container.member import Member
from desq.layout import LAYOUT_VERSION

Data = bytes | bytearray | memoryview | BinaryIO | Iterable[bytes]
_ONE_BLOCK = 1 << fmt.MIN_BLOCK_SHIFT


class RawFrames(Protocol):
    """What ``merge`` copies from: verified raw frames of an existing container (any Reader)."""

    @property
    def layout_version(self) -> int | None:
        """The layout of the frames; None where the container records none (DES v1)."""

    def raw_frames(self, skip: set[str]) -> Iterable[tuple[fmt.Head, bytes]]:
        """Each member's (head, whole frame bytes), checked once, in container order."""


@dataclass(frozen=True, slots=True)
class Summary:
    """What ``close`` wrote."""

    count: int
    size: int
    data_bytes: int


class ContainerWriter:
    """Write one container: ``add`` members, then ``close``.

    >>> with ContainerWriter(open("x.des", "wb")) as w:
    ...     w.add("20251120_1", b"hello", content_type="text/plain")
    """

    def __init__(self, out: BinaryIO, *, layout_version: int = LAYOUT_VERSION) -> None:
        self._out = out
        self._layout_version = layout_version
        self._pos = 0
        self._hashes = array("Q")
        self._entries = bytearray()
        self._names = bytearray()
        self._seen: dict[int, int] = {}  # name hash -> position in _names (first with that hash)
        self._collided: list[bytes] = []  # names whose hash was already taken by another name
        self._data_bytes = 0
        self._state = "open"
        self._write(fmt.pack_header(layout_version))

    # --- adding -----------------------------------------------------------------------------

    def add(
        self,
        name: str,
        data: Data,
        *,
        size: int | None = None,
        content_type: str | None = None,
        path: str | None = None,
        created_at: datetime | None = None,
    ) -> Member:
        """Add one member from bytes, a binary file object, or an iterable of byte chunks.

        ``size`` is required for a stream whose length is not known up front; the stream must then
        deliver exactly that many bytes (a source that changes while it is read is refused).
        """
        raw_name, key = self._new_name(name)
        meta = fmt.encode_meta(fmt.Meta(content_type=content_type, path=path, created_at=created_at))
        if isinstance(data, (bytes, bytearray)) and len(data) <= _ONE_BLOCK and size in (None, len(data)):
            # The common small file: one block, one CRC, one write.
            head = fmt.pack_head(raw_name, len(data), meta)
            self._check_open()
            frame = b"".join((head, data, fmt.pack_tail([], crc32c(data))))
            self._write(frame)
            data_offset = self._pos - len(frame) + len(head)
            self._record(raw_name, key, data_offset, len(data), len(head), 0)
            return Member(name=name, size=len(data), offset=data_offset)
        if isinstance(data, (bytes, bytearray, memoryview)):
            view = memoryview(data).cast("B")
            if size is not None and size != len(view):
                raise WriterError(f"member {name!r}: size {size} given for {len(view)} bytes")
            size = len(view)
            chunks: Iterable[bytes | memoryview] = (view[i : i + (1 << 20)] for i in range(0, size, 1 << 20)) if size > (1 << 20) else ([view] if size else [])
        else:
            size = self._stream_size(name, data, size)
            chunks = _chunks(data)
        head = fmt.pack_head(raw_name, size, meta)
        self._check_open()
        self._state = "writing"  # a failure from here on leaves a partial frame: the writer is spent
        self._write(head)
        data_offset = self._pos
        block_crcs, data_crc = self._copy(name, chunks, size)
        self._write(fmt.pack_tail(block_crcs, data_crc))
        self._state = "open"
        self._record(raw_name, key, data_offset, size, len(head), 0)
        return Member(name=name, size=size, offset=data_offset)

    def add_external(
        self,
        name: str,
        *,
        size: int,
        checksum: int,
        block_checksums: list[int],
        external_key: str,
        content_type: str | None = None,
        path: str | None = None,
        created_at: datetime | None = None,
    ) -> Member:
        """Index a member whose bytes were stored as their own object at ``external_key``.

        ``checksum`` is the CRC32C of all its bytes and ``block_checksums`` one CRC32C per block
        of ``1 << block_shift_for(size)`` bytes, as ``external_checksums`` computes them.
        """
        raw_name, key = self._new_name(name)
        if not external_key:
            raise WriterError(f"member {name!r}: an external member needs its key")
        meta = fmt.encode_meta(fmt.Meta(content_type=content_type, path=path, created_at=created_at, external_key=external_key))
        head = fmt.pack_head(raw_name, size, meta, flags=fmt.FLAG_EXTERNAL)
        if len(block_checksums) != fmt.block_count(size, fmt.block_shift_for(size)):
            raise WriterError(f"member {name!r}: {len(block_checksums)} block checksums for {size} bytes")
        self._check_open()
        self._write(head)
        data_offset = self._pos
        self._write(fmt.pack_tail(block_checksums, checksum))
        self._record(raw_name, key, data_offset, size, len(head), fmt.FLAG_EXTERNAL)
        return Member(name=name, size=size, offset=0, external=True)

    def merge(self, source: RawFrames, *, skip: Iterable[str] = ()) -> int:
        """Copy every member of an existing container (except ``skip`` and names already added).

        Frames are copied as raw bytes after the source has checked them once; nothing is
        re-encoded. Returns how many members were copied. A source of another layout, or of none
        (a DES v1 container has no frames to copy), is refused with WriterError.
        """
        if source.layout_version is None:
            raise WriterError(f"cannot merge a container that records no layout (DES v1) into a layout {self._layout_version} one")
        if source.layout_version != self._layout_version:
            raise WriterError(f"cannot merge a layout {source.layout_version} container into a layout {self._layout_version} one")
        copied = 0
        for head, frame in source.raw_frames(set(skip)):
            raw_name = head.name.encode("utf-8")
            key = fmt.name_hash(raw_name)
            if self._is_duplicate(raw_name, key):
                continue
            self._check_open()
            start = self._pos
            self._write(frame)
            self._record(raw_name, key, start + head.head_len, head.size, head.head_len, head.flags)
            copied += 1
        return copied

    # --- finishing --------------------------------------------------------------------------

    def close(self) -> Summary:
        """Write NAMES, INDEX and FOOTER; the container is complete once this returns."""
        self._check_open()
        count = len(self._hashes)
        if count * fmt.ENTRY_SIZE > fmt.MAX_REGION_BYTES or len(self._names) > fmt.MAX_REGION_BYTES:
            raise WriterError(f"{count} members with {len(self._names)} bytes of names are more than one container holds (at most {fmt.MAX_REGION_BYTES} bytes of index and of names)")
        order = sorted(range(count), key=self._hashes.__getitem__)
        names_offset = self._pos
        names = self._names_in(order)
        entry_size = fmt.ENTRY.size
        hashes = array("Q", (self._hashes[i] for i in order))
        if hashes.itemsize != 8:  # pragma: no cover - every CPython platform has an 8-byte 'Q'
            raise ContainerError("this platform has no 8-byte unsigned array type")
        if sys.byteorder != "little":  # pragma: no cover
            hashes.byteswap()
        entries = b"".join(self._entries[i * entry_size : (i + 1) * entry_size] for i in order)
        index = hashes.tobytes() + entries
        self._write(names)
        index_offset = self._pos
        self._write(index)
        footer = fmt.Footer(
            names_offset=names_offset,
            names_length=len(names),
            index_offset=index_offset,
            count=count,
            names_crc=crc32c(names),
            index_crc=crc32c(index),
            layout_version=self._layout_version,
        )
        self._write(fmt.pack_footer(footer))
        flush = getattr(self._out, "flush", None)
        if flush:
            flush()
        self._state = "closed"
        return Summary(count=count, size=self._pos, data_bytes=self._data_bytes)

    def __enter__(self) -> ContainerWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None and self._state == "open":
            self.close()

    @property
    def count(self) -> int:
        """Members added so far."""
        return len(self._hashes)

    # --- internals --------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._state != "open":
            raise WriterError(f"the writer is {'closed' if self._state == 'closed' else 'spent after a failed add'}")

    def _write(self, chunk: bytes | memoryview) -> None:
        self._out.write(chunk)
        self._pos += len(chunk)

    def _is_duplicate(self, raw_name: bytes, key: int) -> bool:
        first = self._seen.get(key)
        if first is None:
            return False
        return self._name_at(first) == raw_name or raw_name in self._collided

    def _new_name(self, name: str) -> tuple[bytes, int]:
        raw = fmt.encode_name(name)
        key = fmt.name_hash(raw)
        if self._is_duplicate(raw, key):
            raise WriterError(f"member {name!r} is already in the container")
        return raw, key

    def _name_at(self, pos: int) -> bytes:
        (length,) = fmt.NAME_LEN.unpack_from(self._names, pos)
        return bytes(self._names[pos + 2 : pos + 2 + length])

    def _record(self, raw_name: bytes, key: int, data_offset: int, size: int, head_len: int, flags: int) -> None:
        if key in self._seen:
            self._collided.append(raw_name)
        else:
            self._seen[key] = len(self._names)
        self._hashes.append(key)
        self._entries += fmt.pack_entry(data_offset, size, head_len, flags)
        self._names += fmt.NAME_LEN.pack(len(raw_name)) + raw_name
        self._data_bytes += size if not flags & fmt.FLAG_EXTERNAL else 0

    def _names_in(self, order: list[int]) -> bytes:
        starts = []
        pos = 0
        names = self._names
        while pos < len(names):
            starts.append(pos)
            pos += 2 + fmt.NAME_LEN.unpack_from(names, pos)[0]
        return b"".join(names[starts[i] : starts[i + 1] if i + 1 < len(starts) else len(names)] for i in order)

    def _copy(self, name: str, chunks: Iterable[bytes | memoryview], size: int) -> tuple[list[int], int]:
        """Write ``size`` bytes from ``chunks``; return (CRC32C per block, CRC32C of all)."""
        return checksummed_copy(name, chunks, size, self._write)

    @staticmethod
    def _stream_size(name: str, data: BinaryIO | Iterable[bytes], size: int | None) -> int:
        if size is None:
            fileno = getattr(data, "fileno", None)
            try:
                stat = os.fstat(fileno()) if fileno else None
            except (OSError, io.UnsupportedOperation):
                stat = None
            if stat is None or not S_ISREG(stat.st_mode):
                raise WriterError(f"member {name!r}: size is required for a stream of unknown length")
            size = stat.st_size - (data.tell() if hasattr(data, "tell") else 0)  # type: ignore[union-attr]
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise WriterError(f"member {name!r}: size must be a non-negative integer, got {size!r}")
        return size


def _chunks(data: BinaryIO | Iterable[bytes], chunk_size: int = 1 << 20) -> Iterable[bytes]:
    read = getattr(data, "read", None)
    if read is None:
        yield from data  # type: ignore[misc]
        return
    while chunk := read(chunk_size):
        yield chunk


def checksummed_copy(name: str, chunks: Iterable[bytes | memoryview], size: int, write: Callable[[memoryview], object] | None = None) -> tuple[list[int], int]:
    """Pass exactly ``size`` bytes from ``chunks`` to ``write`` (if any), checksumming them on the way.

    Returns (CRC32C per block, CRC32C of all); WriterError if the chunks hold more or fewer bytes.
    """
    sums = fmt.Checksummer(size)
    for chunk in chunks:
        view = memoryview(chunk).cast("B")
        if sums.seen + len(view) > size:
            raise WriterError(f"member {name!r}: the source gave more than the {size} bytes declared")
        if write is not None:
            write(view)
        sums.update(view)
    if sums.seen != size:
        raise WriterError(f"member {name!r}: the source gave {sums.seen} bytes, {size} were declared")
    return sums.finish()


def external_checksums(chunks: Iterable[bytes], size: int) -> tuple[list[int], int]:
    """(CRC32C per block, CRC32C of all) of ``size`` bytes, as ``add_external`` wants them."""
    return checksummed_copy("external", chunks, size)
