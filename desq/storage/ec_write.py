"""Streaming writes to the erasure-coded backend: stripes encoded as they fill, one upload a node.

A write commits once K+1 fragments are stored, then stores the commit marker (format in
``desq.storage.ec_format``); with fewer it deletes what it stored and fails. A staged write
stores no marker: its process remembers the version for ``publish``, which marks the key it
publishes (a staged write its process never published is unmarked, and ``recover`` clears it). A node that fails
mid-write is dropped while K+1 remain; its fragment is missing (``desq repair`` rebuilds it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from crc32c import crc32c

from desq.failpoints import failpoint
from desq.storage.base import ObjectInfo, StorageError, Upload, check_key
from desq.storage.ec_format import Footer, Version, fragment_key, new_version, seal_cell

if TYPE_CHECKING:
    from desq.storage.ec import ECStorage


class CodedUpload(Upload):
    """Streams stripes to one upload per node; commits once K+1 fragments are stored, then marks."""

    def __init__(self, ec: ECStorage, key: str, staged: bool) -> None:
        self._ec = ec
        self._key = key
        self._staged = staged
        self._version = new_version()
        name = check_key(fragment_key(key, self._version))
        check_key(Version(self._version, 0, ec.geometry.cell, ec.geometry.block).marker(key))
        self._uploads: dict[int, Upload] = {}
        self._failed: dict[int, str] = {}
        for i, opened in ec._each(lambda i: ec.nodes[i].open_upload(name, staged=staged), range(len(ec.nodes))).items():
            if isinstance(opened, StorageError):
                self._failed[i] = opened.reason
            elif isinstance(opened, BaseException):
                self._failed[i] = str(opened)
            else:
                self._uploads[i] = opened
        self._buffer = bytearray()
        self._length = 0
        self._crc = 0
        self._fragment_crcs = [0] * len(ec.nodes)
        self._blocks = 0
        self._done = False
        self._enough()

    def _what(self) -> str:
        return f"writing {self._key!r} to {self._ec.url}"

    def _enough(self) -> None:
        if len(self._uploads) < self._ec.k + 1:
            reasons = "; ".join(f"node {i}: {why}" for i, why in sorted(self._failed.items()))
            self.abort()
            raise StorageError(f"{self._what()}: only {len(self._uploads)} nodes take the write, {self._ec.k + 1} needed ({reasons})")

    def _send(self, pieces: dict[int, bytes]) -> None:
        uploads = self._uploads
        for i, got in self._ec._each(lambda i: uploads[i].write(pieces[i]), list(uploads)).items():
            if isinstance(got, BaseException):
                self._drop(i, got)
        self._enough()

    def _drop(self, i: int, exc: BaseException) -> None:
        self._failed[i] = getattr(exc, "reason", str(exc))
        upload = self._uploads.pop(i)
        try:
            upload.abort()
        except StorageError:
            pass

    def _stripe(self, data: bytes, cell: int) -> None:
        ec = self._ec
        block = ec.geometry.block
        cells = [data[j * cell : (j + 1) * cell].ljust(cell, b"\0") for j in range(ec.k)]
        cells += ec.codec.parity(cells)
        pieces = {i: seal_cell(cells[i], self._version, i, self._blocks, block) for i in self._uploads}
        for i, content in enumerate(cells):
            self._fragment_crcs[i] = crc32c(content, self._fragment_crcs[i])
        self._blocks += -(-cell // block)
        self._send(pieces)

    def write(self, data: bytes | memoryview) -> int:
        if self._done:
            raise StorageError(f"{self._what()}: the upload is already finished")
        stripe = self._ec.geometry.stripe
        self._buffer += data
        self._length += len(data)
        self._crc = crc32c(data, self._crc)
        try:
            while len(self._buffer) >= stripe:
                chunk = bytes(self._buffer[:stripe])
                del self._buffer[:stripe]
                self._stripe(chunk, self._ec.geometry.cell)
        except StorageError:
            self.abort()
            raise
        return len(data)

    def commit(self) -> ObjectInfo:
        if self._done:
            raise StorageError(f"{self._what()}: the upload is already finished")
        ec = self._ec
        geometry = ec.geometry
        version = Version(self._version, self._length, geometry.cell, geometry.block)
        try:
            if self._buffer:
                self._stripe(bytes(self._buffer), geometry.cell_size(self._length, geometry.stripes(self._length) - 1))
                self._buffer = bytearray()
            footers = {i: Footer(ec.k, ec.m, i, geometry.cell, geometry.block, self._length, self._version, self._crc, self._fragment_crcs[i]).pack()
                       for i in self._uploads}
            self._send(footers)
            uploads = self._uploads
            def store(i: int) -> None:
                uploads[i].commit()
                failpoint("ec.fragment_stored")
            committed = ec._each(store, list(uploads))
            stored = [i for i, got in committed.items() if not isinstance(got, BaseException)]
            for i, got in committed.items():
                if isinstance(got, BaseException):
                    self._failed[i] = getattr(got, "reason", str(got))
            self._uploads = {}
            if len(stored) < ec.k + 1:
                ec._each(lambda i: ec.nodes[i].delete(fragment_key(self._key, self._version)), stored)
                reasons = "; ".join(f"node {i}: {why}" for i, why in sorted(self._failed.items()))
                raise StorageError(f"{self._what()}: only {len(stored)} fragments stored, {ec.k + 1} needed ({reasons})")
            if self._staged:  # only a step before publish, in this process: it marks the published key
                ec._staged[self._key] = version
                self._done = True
                return ec._info(self._key, version)
            marked = ec._mark(self._key, version, range(len(ec.nodes)))
            if len(marked) < ec.k + 1:
                ec._each(lambda i: ec.nodes[i].delete(version.marker(self._key)), marked)
                ec._each(lambda i: ec.nodes[i].delete(fragment_key(self._key, self._version)), stored)
                raise StorageError(f"{self._what()}: only {len(marked)} nodes took the commit marker, {ec.k + 1} needed")
        except StorageError:
            self.abort()
            raise
        self._done = True
        ec._drop(self._key, older_than=version)
        return ec._info(self._key, version)

    def abort(self) -> None:
        self._done = True
        self._buffer = bytearray()
        uploads, self._uploads = self._uploads, {}
        for upload in uploads.values():
            try:
                upload.abort()
            except StorageError:
                pass
