"""Containers: the v2 format desq writes, and DES v1 read for migration.

``open_container`` reads the end of an object once and opens whichever version it is.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

from desq.container import format as fmt
from desq.container.errors import ChecksumMismatch, ContainerError, CorruptContainer, MemberNotFound, WriterError
from desq.container.member import Member, MemberMeta, Problem
from desq.container.reader import DEFAULT_SUFFIX, ContainerReader, ExternalOpener
from desq.container.source import ByteSource, BytesSource, FileSource
from desq.container.writer import ContainerWriter, RawFrames, Summary, external_checksums

__all__ = [
    "ByteSource", "BytesSource", "ChecksumMismatch", "ContainerError", "ContainerReader", "ContainerWriter",
    "CorruptContainer", "FileSource", "Member", "MemberMeta", "MemberNotFound", "Problem", "RawFrames", "Reader", "Summary",
    "WriterError", "external_checksums", "open_container",
]


class Reader(RawFrames, Protocol):
    """What every container version's reader offers (v2: ContainerReader, v1: DesV1Reader).

    Being a RawFrames, any reader can be given to ``ContainerWriter.merge``, which refuses one
    of another layout (a DES v1 container records none).
    """

    @property
    def version(self) -> int:
        """The container format: 2, or 1 for DES v1."""

    @property
    def count(self) -> int:
        """How many members the container holds."""

    @property
    def layout_version(self) -> int | None:
        """The layout the container was written with; None where the format records none (v1)."""

    @property
    def index_bytes(self) -> int:
        """About how much memory the open index holds: what a cache of readers charges for it."""

    def members(self) -> Iterator[Member]:
        """Every member, in container order."""

    def find(self, name: str) -> Member | None:
        """The member called ``name``, or None."""

    def size_hint(self, name: str) -> int | None:
        """The size the index gives ``name`` (no request), or None when it cannot tell."""

    def meta(self, name: str) -> MemberMeta:
        """A member's stored metadata."""

    def read(self, name: str) -> bytes:
        """A whole member (checked where the format has checksums)."""

    def read_range(self, name: str, start: int, stop: int) -> bytes:
        """Bytes ``[start, stop)`` of a member."""

    def iter_range(self, name: str, start: int = 0, stop: int | None = None, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Stream bytes ``[start, stop)`` of a member."""

    def open_range(self, name: str, start: int = 0, stop: int | None = None, chunk_size: int = 1 << 20) -> tuple[MemberMeta, Iterator[bytes]]:
        """A member's metadata and a stream of its bytes ``[start, stop)``."""

    def read_many(self, names: Iterable[str], *, max_merge: int = ..., max_gap: int = ...) -> Iterator[tuple[str, bytes]]:
        """Several members, adjacent ones in one request."""

    def read_members(self, names: Iterable[str], *, max_merge: int = ..., max_gap: int = ...) -> Iterator[tuple[MemberMeta, bytes]]:
        """``read_many`` with each member's stored metadata."""

    def verify(self) -> list[Problem]:
        """Everything found wrong; [] when all is well."""


def open_container(source: ByteSource, *, suffix_bytes: int = DEFAULT_SUFFIX, external: ExternalOpener | None = None) -> Reader:
    """Open a v2 or DES v1 container, telling them apart by their last bytes."""
    from desq.container.v1 import DesV1Reader, is_des_v1

    suffix, size = source.read_suffix(suffix_bytes)
    if fmt.is_v2(suffix):
        return ContainerReader.open(source, suffix=suffix, size=size, external=external)
    if is_des_v1(suffix):
        return DesV1Reader.open(source, suffix=suffix, size=size, external=external)
    raise CorruptContainer("not a desq container (no v2 or DES v1 footer at its end)")
