"""The storage interface every archive backend implements, and its errors.

Keys are ``/``-separated paths relative to the backend's root (``20251120/FE.des``). Every read
can be pinned to a version with ``if_match``: the backend refuses with StaleObject when the object
changed, so a reader holding a cached index never reads bytes from old offsets.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO

from desq.errors import CorruptContainer, DesqError


class StorageError(DesqError):
    """A storage request failed."""

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = message if reason is None else reason
        """Why, in one line that does not name the request (``no such object``)."""


class NotFound(StorageError):
    """No object under that key."""


class StaleObject(StorageError):
    """The object changed since the version a read was pinned to."""


class StorageUnavailable(StorageError):
    """The storage did not answer usefully, even after bounded retries."""


class AccessDenied(StorageError):
    """The credentials may not do that request."""


class BucketNotFound(StorageError):
    """The bucket a request names does not exist."""


class NoCredentials(StorageError):
    """No credentials to sign requests with: a configuration error."""


class InvalidKey(StorageError, ValueError):
    """A key that could name something outside the archive, or nothing at all."""


class RangeError(CorruptContainer, StorageError):
    """A read past the end of the object (a container shorter than its own offsets say)."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What ``head``, ``put`` and ``list`` tell about one object."""

    key: str
    size: int
    etag: str
    """Changes whenever the object is replaced (S3: its ETag; files: inode, mtime and size)."""
    modified: datetime | None = None


@dataclass(frozen=True, slots=True)
class PendingUpload:
    """An upload started and never committed: one in progress, or a crashed writer's."""

    key: str
    """The key it would have been committed under."""
    started: datetime | None
    """When it was started (local folders: its last write)."""
    size: int | None = None
    """Bytes written so far, where the storage can tell."""


_BAD_KEY = re.compile(r"[\x00-\x1f\x7f\\]")


def check_key(key: str) -> str:
    """Return ``key`` if it is a clean relative path: no empty, ``.`` or ``..`` parts, no ``\\``."""
    if not isinstance(key, str) or not key or len(key.encode("utf-8", "surrogatepass")) > 1024:
        raise InvalidKey(f"storage key {key!r} must be a non-empty string of at most 1024 bytes")
    if key.startswith("/") or _BAD_KEY.search(key) or any(part in ("", ".", "..") for part in key.split("/")):
        raise InvalidKey(f"storage key {key!r} is not a clean relative path")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidKey(f"storage key {key!r} is not valid UTF-8") from None
    return key


def top_folder(key: str) -> str | None:
    """The first part of ``key`` when it has more (``20251120`` for ``20251120/FE.des``), else None."""
    folder, slash, _ = key.partition("/")
    return folder if slash and folder else None


def join_key(folder_of: str, relative: str) -> str:
    """``relative`` resolved against the folder of the key ``folder_of`` (``a/b.des`` + ``x`` = ``a/x``)."""
    check_key(relative)
    head, _, _ = folder_of.rpartition("/")
    return check_key(f"{head}/{relative}" if head else relative)


class Upload(ABC):
    """A streaming write of one object: invisible until ``commit``, gone after ``abort``."""

    @abstractmethod
    def write(self, data: bytes | memoryview) -> int:
        """Append bytes; returns how many."""

    @abstractmethod
    def commit(self) -> ObjectInfo:
        """Make the object visible under its key, atomically replacing any older one."""

    @abstractmethod
    def abort(self) -> None:
        """Drop everything written; safe to call more than once and after a failure."""

    def __enter__(self) -> Upload:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is not None:
            self.abort()


class Storage(ABC):
    """One archive location (a local folder or an S3 bucket and prefix)."""

    url: str

    @abstractmethod
    def read(self, key: str, offset: int, length: int, *, if_match: str | None = None) -> bytes:
        """Exactly ``length`` bytes from ``offset``; RangeError past the end."""

    @abstractmethod
    def read_suffix(self, key: str, length: int, *, if_match: str | None = None) -> tuple[bytes, ObjectInfo]:
        """The last ``min(length, size)`` bytes, and the object's info (size, etag)."""

    @abstractmethod
    def head(self, key: str) -> ObjectInfo:
        """The object's info; NotFound if there is none."""

    @abstractmethod
    def open_upload(self, key: str, *, content_type: str | None = None, staged: bool = False) -> Upload:
        """Start a streaming write of ``key`` (bounded memory, however large). ``staged``: the
        object is only a step before ``publish``, which makes it durable where it lands, so its
        own commit may skip what only its own crash-safety needs (a folder's fsync)."""

    def put(self, key: str, data: bytes | BinaryIO, *, content_type: str | None = None) -> ObjectInfo:
        """Store ``data`` (bytes or a binary file object) under ``key``, atomically."""
        with self.open_upload(key, content_type=content_type) as upload:
            if isinstance(data, (bytes, bytearray, memoryview)):
                upload.write(data)
            else:
                while chunk := data.read(8 << 20):
                    upload.write(chunk)
            return upload.commit()

    @abstractmethod
    def publish(self, staging: str, key: str) -> ObjectInfo:
        """Move the object at ``staging`` to ``key`` atomically (replacing any older one there).

        Readers of ``key`` see the old object or the new one, never a mix; ``staging`` is gone after.
        """

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; no error if it is already gone."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every committed object whose key starts with ``prefix``, in key order."""

    def folders(self, prefix: str = "") -> Iterator[str]:
        """Each distinct ``<folder>`` of the committed keys ``<folder>/<rest>`` that start with
        ``prefix``, once, sorted by name: S3's top-level CommonPrefixes (``Delimiter="/"``)
        without their ``/``. Objects at the top level are no folders."""
        yield from sorted({folder for info in self.list(prefix) if (folder := top_folder(info.key)) is not None})

    def probe(self) -> None:
        """Raise StorageError unless the storage is there and answers (one cheap request)."""
        next(iter(self.list("_desq/probe-")), None)

    @abstractmethod
    def uploads(self) -> Iterator[PendingUpload]:
        """Every upload started and not yet committed or aborted."""

    @abstractmethod
    def abort_stale_uploads(self, older_than_seconds: float) -> int:
        """Abort uploads started longer ago than this and never committed; returns how many."""

    def iter_read(self, key: str, offset: int, length: int, *, chunk_size: int = 8 << 20, if_match: str | None = None) -> Iterator[bytes]:
        """Stream ``length`` bytes from ``offset`` in chunks of at most ``chunk_size``."""
        end = offset + length
        while offset < end:
            step = min(chunk_size, end - offset)
            yield self.read(key, offset, step, if_match=if_match)
            offset += step
