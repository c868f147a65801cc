"""A storage that reports every request it passes on (for metrics, and for tests' request budgets)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import BinaryIO

from desq.storage.base import ObjectInfo, PendingUpload, Storage, Upload


class CountingStorage(Storage):
    """Delegates to ``inner``; calls ``on_request(op)`` before each request (op: read, suffix, head, ...)
    and adds up the bytes its reads returned in ``bytes_read``."""

    def __init__(self, inner: Storage, on_request: Callable[[str], None] | None = None) -> None:
        self.inner = inner
        self.url = inner.url
        self.requests: deque[str] = deque(maxlen=10_000)
        """The latest requests, for tests and debugging (bounded: a server runs for months)."""
        self._on_request = on_request
        self.bytes_read = 0
        """Bytes returned by ``read`` and ``read_suffix`` so far (what was fetched from storage)."""

    def _note(self, op: str, key: str, request: str | None = None) -> None:
        self.requests.append(f"{request or op} {key}")
        if self._on_request is not None:
            self._on_request(op)

    def read(self, key: str, offset: int, length: int, *, if_match: str | None = None) -> bytes:
        self._note("read", key)
        data = self.inner.read(key, offset, length, if_match=if_match)
        self.bytes_read += len(data)
        return data

    def read_suffix(self, key: str, length: int, *, if_match: str | None = None) -> tuple[bytes, ObjectInfo]:
        self._note("suffix", key)
        data, info = self.inner.read_suffix(key, length, if_match=if_match)
        self.bytes_read += len(data)
        return data, info

    def head(self, key: str) -> ObjectInfo:
        self._note("head", key)
        return self.inner.head(key)

    def open_upload(self, key: str, *, content_type: str | None = None, staged: bool = False) -> Upload:
        self._note("upload", key)
        return self.inner.open_upload(key, content_type=content_type, staged=staged)

    def put(self, key: str, data: bytes | BinaryIO, *, content_type: str | None = None) -> ObjectInfo:
        self._note("put", key)
        return self.inner.put(key, data, content_type=content_type)

    def publish(self, staging: str, key: str) -> ObjectInfo:
        self._note("publish", key)
        return self.inner.publish(staging, key)

    def delete(self, key: str) -> None:
        self._note("delete", key)
        self.inner.delete(key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        self._note("list", prefix)
        return self.inner.list(prefix)

    def folders(self, prefix: str = "") -> Iterator[str]:
        self._note("list", prefix, "folders")  # a listing, for the metric; recorded as what it was
        return self.inner.folders(prefix)

    def uploads(self) -> Iterator[PendingUpload]:
        self._note("uploads", "")
        return self.inner.uploads()

    def abort_stale_uploads(self, older_than_seconds: float) -> int:
        self._note("abort", "")
        return self.inner.abort_stale_uploads(older_than_seconds)
