"""Containers on storage: opening by key with a cached index, stale-safe reads, big files.

An opened container is pinned to the version (ETag) its index came from: every later read sends
that version along, so a container replaced in the meantime is refused (StaleObject) instead of
read at old offsets. ``Archive`` then drops the cached index, reopens, and tries once more.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol, TypeVar

from desq.container import ContainerError, ContainerReader, Member, MemberMeta, Reader, open_container
from desq.container.writer import checksummed_copy
from desq.container.reader import DEFAULT_SUFFIX
from desq.storage import ObjectInfo, StaleObject, Storage, join_key

T = TypeVar("T")


class IndexTier(Protocol):
    """A cache of container indexes shared between processes (e.g. RedisIndexTier)."""

    def get(self, key: str) -> tuple[str, bytes] | None: ...  # noqa: D102
    def put(self, key: str, etag: str, blob: bytes) -> None: ...  # noqa: D102
    def drop(self, key: str) -> None: ...  # noqa: D102


class StorageSource:
    """A ByteSource over one object, pinned to the version its first suffix read saw."""

    def __init__(self, storage: Storage, key: str, etag: str | None = None) -> None:
        self.storage = storage
        self.key = key
        self.etag = etag
        self.info: ObjectInfo | None = None

    def read(self, offset: int, length: int) -> bytes:
        return self.storage.read(self.key, offset, length, if_match=self.etag)

    def read_suffix(self, length: int) -> tuple[bytes, int]:
        data, info = self.storage.read_suffix(self.key, length, if_match=self.etag)
        self.etag = self.etag or info.etag
        self.info = info
        return data, info.size


def _cost(reader: Reader) -> int:
    return reader.index_bytes + 256


class Archive:
    """Read members of the containers on one storage, with an LRU of opened indexes.

    ``cache_bytes`` bounds the memory of cached indexes (24 bytes a member for v2).
    Safe to share between threads.
    """

    def __init__(
        self,
        storage: Storage,
        *,
        cache_bytes: int = 256 << 20,
        suffix_bytes: int = DEFAULT_SUFFIX,
        on_cache: Callable[[bool], None] | None = None,
        shared: IndexTier | None = None,
    ) -> None:
        self.storage = storage
        self._on_cache = on_cache
        self._shared = shared
        self.cache_bytes = cache_bytes
        self.suffix_bytes = suffix_bytes
        self._cache: OrderedDict[str, tuple[Reader, int]] = OrderedDict()
        self._cached = 0
        self._lock = threading.Lock()

    # --- opening ----------------------------------------------------------------------------

    def open(self, key: str) -> Reader:
        """The reader of container ``key``: cached, or opened with one suffix read."""
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
        if self._on_cache is not None:
            self._on_cache(hit is not None)
        if hit is not None:
            return hit[0]
        reader = self._from_shared(key)
        if reader is None:
            source = StorageSource(self.storage, key)
            reader = open_container(source, suffix_bytes=self.suffix_bytes, external=self._externals(key))
            if self._shared is not None and isinstance(reader, ContainerReader) and source.etag:
                self._shared.put(key, source.etag, reader.index_blob)
        cost = _cost(reader)
        with self._lock:
            old = self._cache.pop(key, None)
            if old is not None:
                self._cached -= old[1]
            if cost <= self.cache_bytes:
                self._cache[key] = (reader, cost)
                self._cached += cost
                while self._cached > self.cache_bytes:
                    _, (_, dropped) = self._cache.popitem(last=False)
                    self._cached -= dropped
        return reader

    def _from_shared(self, key: str) -> Reader | None:
        if self._shared is None:
            return None
        entry = self._shared.get(key)
        if entry is None:
            return None
        etag, blob = entry
        try:
            return ContainerReader.from_index(StorageSource(self.storage, key, etag), blob, external=self._externals(key))
        except ContainerError:
            self._shared.drop(key)
            return None

    def invalidate(self, key: str) -> None:
        """Forget the cached index of ``key`` (here and in the shared tier)."""
        if self._shared is not None:
            self._shared.drop(key)
        with self._lock:
            old = self._cache.pop(key, None)
            if old is not None:
                self._cached -= old[1]

    def _externals(self, container_key: str) -> Callable[[str], StorageSource]:
        return lambda relative: StorageSource(self.storage, join_key(container_key, relative))

    def _fresh(self, key: str, use: Callable[[Reader], T]) -> T:
        try:
            return use(self.open(key))
        except StaleObject:
            self.invalidate(key)
            return use(self.open(key))

    # --- reading ----------------------------------------------------------------------------

    def find(self, key: str, name: str) -> Member | None:
        return self._fresh(key, lambda r: r.find(name))

    def meta(self, key: str, name: str) -> MemberMeta:
        return self._fresh(key, lambda r: r.meta(name))

    def read(self, key: str, name: str) -> bytes:
        return self._fresh(key, lambda r: r.read(name))

    def read_many(self, key: str, names: Iterable[str]) -> list[tuple[str, bytes]]:
        wanted = list(names)
        return self._fresh(key, lambda r: list(r.read_many(wanted)))

    def read_members(self, key: str, names: Iterable[str], *, max_merge: int = 8 << 20, max_gap: int = 64 << 10) -> list[tuple[MemberMeta, bytes]]:
        """Several members with their metadata, adjacent ones in one request (by container offset)."""
        wanted = list(names)
        return self._fresh(key, lambda r: list(r.read_members(wanted, max_merge=max_merge, max_gap=max_gap)))

    def size_hint(self, key: str, name: str) -> int | None:
        """The member's size from the cached index (no request once the index is cached)."""
        return self.open(key).size_hint(name)

    def open_range(self, key: str, name: str, start: int = 0, stop: int | None = None, chunk_size: int = 1 << 20) -> tuple[MemberMeta, Iterator[bytes]]:
        """Metadata and a checked stream of a member's bytes; a replaced container is reopened."""

        return self._fresh(key, lambda reader: reader.open_range(name, start, stop, chunk_size))

    def iter_range(self, key: str, name: str, start: int = 0, stop: int | None = None, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Stream bytes of a member. A replacement noticed before the first chunk is retried;
        one noticed later ends the stream with StaleObject (never with old bytes)."""

        def first(reader: Reader) -> tuple[bytes | None, Iterator[bytes]]:
            chunks = iter(reader.iter_range(name, start, stop, chunk_size))
            return next(chunks, None), chunks

        head, rest = self._fresh(key, first)
        if head is not None:
            yield head
            yield from rest


# --- big files: stored beside their container ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExternalRef:
    """A big member stored as its own object, as ``ContainerWriter.add_external`` wants it."""

    external_key: str
    size: int
    checksum: int
    block_checksums: list[int]


def external_key_for(container_key: str, name: str) -> str:
    """Where a big member of ``container_key`` is stored, relative to the container's folder.

    Derived from the container and the name only, so packing the same member again writes the
    same object (the originals desq archives do not change).
    """
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=16).hexdigest()
    return f"{container_key.rpartition('/')[2]}.big/{digest}"


def store_external(storage: Storage, container_key: str, name: str, chunks: Iterable[bytes], size: int, *, content_type: str | None = None) -> ExternalRef:
    """Upload a big member beside its container, streaming, checksummed as it goes.

    Memory stays at one upload part whatever the size; on any failure the upload is aborted and
    nothing becomes visible.
    """
    relative = external_key_for(container_key, name)
    with storage.open_upload(join_key(container_key, relative), content_type=content_type) as upload:
        block_crcs, crc = checksummed_copy(name, chunks, size, upload.write)
        upload.commit()
    return ExternalRef(external_key=relative, size=size, checksum=crc, block_checksums=block_crcs)
