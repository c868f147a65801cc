"""Byte sources: the one abstraction readers read through (a local file, an S3 object, memory).

A source answers two questions: the bytes at ``[offset, offset + length)`` and the last ``n``
bytes with the total size. Every call is one storage request, so readers can be held to a
request budget by counting calls.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from desq.container.errors import CorruptContainer
from desq.fileio import pread_exactly


@runtime_checkable
class ByteSource(Protocol):
    """Random access to one stored object."""

    def read(self, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes from ``offset``; CorruptContainer if the object is shorter."""

    def read_suffix(self, length: int) -> tuple[bytes, int]:
        """The last ``min(length, size)`` bytes and the object's total size."""


ExternalOpener = Callable[[str], ByteSource]
"""Opens the stored object holding an external member's bytes, given the key its container records."""


def _check_range(offset: int, length: int, size: int) -> None:
    if offset < 0 or length < 0:
        raise ValueError(f"bad range offset={offset} length={length}")
    if offset + length > size:
        raise CorruptContainer(f"range {offset}+{length} runs past the end of the object ({size} bytes)")


class BytesSource:
    """A source over bytes in memory."""

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._data = bytes(data)

    def read(self, offset: int, length: int) -> bytes:
        _check_range(offset, length, len(self._data))
        return self._data[offset : offset + length]

    def read_suffix(self, length: int) -> tuple[bytes, int]:
        size = len(self._data)
        return self._data[max(0, size - length) :], size


class FileSource:
    """A source over a local file, read with ``pread`` (safe to share between threads)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._fd = -1  # so that close() (and __del__) work when the open below fails
        self.path = os.fspath(path)
        self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        self.stat = os.fstat(self._fd)

    def read(self, offset: int, length: int) -> bytes:
        _check_range(offset, length, self.stat.st_size)
        data = pread_exactly(self._fd, offset, length)
        if data is None:
            raise CorruptContainer(f"{self.path}: file ended before {offset + length}")
        return data

    def read_suffix(self, length: int) -> tuple[bytes, int]:
        size = self.stat.st_size
        start = max(0, size - length)
        return self.read(start, size - start), size

    def close(self) -> None:
        """Release the file descriptor."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> FileSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()
