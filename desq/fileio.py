"""File descriptor reads shared by the container code and the local storage backend."""

from __future__ import annotations

import os


def pread_exactly(fd: int, offset: int, length: int) -> bytes | None:
    """``length`` bytes at ``offset`` of a file descriptor, or None if the file ends first."""
    parts = []
    while length:
        chunk = os.pread(fd, length, offset)
        if not chunk:
            return None
        parts.append(chunk)
        offset += len(chunk)
        length -= len(chunk)
    return b"".join(parts)
