"""pack_shard: one (date, shard) from READY rows to a verified container.

The order of the steps is what makes it safe to kill at any line and run again:

1. take the lease of the container's key (another packer holding it: report "busy" and stop);
2. stream a new container to a staging key: this night's files first, in row order, then every
   member of the existing container that is not among them (late files never drop earlier ones);
3. read the staged container back and check every member against its checksum, and this night's
   members against the CRC32C of the bytes fetched;
4. check the lease is still ours (fencing), then publish the staging object over the key atomically;
5. only then mark the rows PACKED (name mode) and, if configured, delete their originals.

Rows whose names the existing container already holds are neither fetched nor written again: a
run with nothing to add rewrites nothing. A crash before 4 leaves the old container untouched (and
a staging object for ``recover``); a crash after 4 leaves READY rows whose files are already in the
container, which the next run finds there and marks PACKED. Runs converge on the same container
and the same row states.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any, BinaryIO

from crc32c import crc32c
from sqlalchemy.exc import SQLAlchemyError

from desq.archive import external_key_for, store_external
from desq.container import ContainerError, ContainerWriter, Reader
from desq.days import aware
from desq.errors import DesqError
from desq.failpoints import failpoint
from desq.layout import LAYOUT_VERSION, container_key, shard_hex
from desq.pipeline.lease import Lease, LeaseLost, seconds_left
from desq.source.rows import SourceRow
from desq.storage import NotFound, join_key

if TYPE_CHECKING:
    from desq.deployment import Deployment
    from desq.source.fetch import Fetcher

STAGING = ".staging-"
"""Staging objects are ``<key>.staging-<token>``; ``recover`` removes old ones."""


class PackFailed(DesqError):
    """The container could not be built or did not verify; nothing was published or marked."""


@dataclass
class PackReport:
    """What one pack_shard run did (JSON-able, for task results and the night's summary)."""

    date: str
    shard: str
    container: str
    status: str = "packed"
    """packed; present (every row's file is in the container already: nothing rewritten);
    nothing (no rows); busy (another packer holds the lease); failed."""
    worker: str = ""
    rewrote: bool = False
    """An existing container was replaced (with this night's files added to it)."""
    files: int = 0
    present: int = 0
    """Rows whose files the container held already (not fetched or written again)."""
    kept: int = 0
    bytes: int = 0
    failed_rows: int = 0
    failures: list[str] = field(default_factory=list)
    marked_packed: int = 0
    deleted_originals: int = 0
    seconds: float = 0.0
    retry_in: float = 0.0
    """busy: seconds until the holder's lease expires (1 if it was freed meanwhile); try again then."""

    @classmethod
    def failed(cls, day: date, shard: int, bits: int, error: str) -> PackReport:
        """The report of a pack that raised instead of reporting."""
        return cls(date=day.isoformat(), shard=shard_hex(shard, bits), container="", status="failed", failures=[error])

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _chunks(stream: BinaryIO, size: int = 8 << 20) -> Iterator[bytes]:
    with stream:
        while chunk := stream.read(size):
            yield chunk


class Packer:
    """Packs (date, shard)s for one deployment, with its source, storage and lease table."""

    def __init__(self, deployment: Deployment, *, worker: str | None = None, lease_ttl: float | None = None) -> None:
        self.deployment = deployment
        self.settings = deployment.settings
        self.mode = deployment.mode
        self.worker = worker or socket.gethostname()
        self.source = deployment.source
        self.storage = deployment.storage
        self.leases = deployment.leases
        self.lease_ttl = float(lease_ttl or self.settings.pipeline.lease_seconds)
        self._fetcher: Fetcher | None = None

    @contextlib.contextmanager
    def _fetching(self) -> Iterator[Fetcher]:
        """This packer's fetcher, made once: its read pace and S3 client carry over from one
        container to the next."""
        if self._fetcher is None:
            self._fetcher = self.deployment.fetcher()
        yield self._fetcher

    def close(self) -> None:
        """Close the fetcher (its S3 client); the packer can be used again after."""
        if self._fetcher is not None:
            self._fetcher.close()
            self._fetcher = None

    def __enter__(self) -> Packer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def rows(self, day: date, shard: int) -> Iterator[SourceRow]:
        """The rows to pack into (day, shard), read from the source."""
        return self.mode.rows_for(self.source, day, shard)

    def pack(self, day: date, shard: int, rows: Iterable[SourceRow] | None = None, *, night: str | None = None) -> PackReport:
        """Pack (day, shard): the rows the planner spooled for ``night``, else ``rows`` when given,
        else those the source gives for (day, shard) now (``desq pack`` by hand)."""
        started = time.monotonic()
        bits = self.settings.shard_bits
        key = container_key(day, shard, bits)
        report = PackReport(date=day.isoformat(), shard=shard_hex(shard, bits), container=key, worker=self.worker)
        lease = self.leases.acquire(f"pack:{key}", self.worker, self.lease_ttl)
        if lease is None:
            held = self.leases.holder(f"pack:{key}")
            report.status = "busy"
            report.retry_in = round(seconds_left(held[1]), 3) if held else 1.0
            report.failures.append(f"{key} is being packed by {held[0] if held else 'another packer'}")
            return report
        try:
            with lease.keep_alive():
                failpoint("pack.after_lease")
                if night is not None:
                    todo = self.deployment.spool.rows(night, day, shard)
                else:
                    todo = list(rows if rows is not None else self.rows(day, shard))
                if not todo:
                    report.status = "nothing"
                    return report
                existing = self._existing(key)
                present = {m.name for m in existing.members()} if existing is not None else set()
                already = [r for r in todo if r.name in present]
                todo = [r for r in todo if r.name not in present]
                report.present = len(already)
                packed: list[SourceRow] = []
                if todo:
                    packed = self._pack_new(key, lease, existing, todo, report)
                    if not packed and not already:
                        report.status = "nothing"
                        return report
                if packed:
                    failpoint("pack.after_publish")
                else:
                    report.status = "present"
                done = packed + already
                report.marked_packed = self.mode.packed(self.source, [r.id for r in done], self.settings.source.batch_size)
                if self.settings.archive.delete_originals:
                    safe = packed + (self._matching(existing, already, report) if existing is not None and already else [])
                    lease.check()
                    report.deleted_originals = self._delete_originals(safe, report)
        except LeaseLost as exc:
            raise PackFailed(str(exc)) from exc
        finally:
            try:
                lease.release()
            except SQLAlchemyError:  # the lease expires by itself; what the pack did stands
                pass
            report.seconds = round(time.monotonic() - started, 3)
        failpoint("pack.done")
        return report

    def _existing(self, key: str) -> Reader | None:
        """The container now under ``key`` (None if there is none), if desq may merge into it."""
        try:
            existing = self.deployment.archive().open(key)
        except NotFound:
            return None
        if existing.version != 2:
            raise PackFailed(f"{key} is a DES v{existing.version} container; desq merges only into its own format")
        if existing.layout_version != LAYOUT_VERSION:
            raise PackFailed(f"{key} was written with layout {existing.layout_version}, this desq uses {LAYOUT_VERSION}")
        return existing

    def _pack_new(self, key: str, lease: Lease, existing: Reader | None, todo: list[SourceRow], report: PackReport) -> list[SourceRow]:
        """Write, verify and publish a container with ``todo`` added to ``existing``; the rows packed."""
        staging = f"{key}{STAGING}{lease.token:x}"
        beside: list[str] = []
        publishing = False
        try:
            expected, packed = self._write(key, staging, existing, todo, report, beside)
            if not packed:
                self.storage.delete(staging)
                return []
            self._verify(staging, expected)
            lease.check()
            failpoint("pack.after_verify")
            publishing = True
            self.storage.publish(staging, key)
        except Exception:
            self._discard(lease, staging, [] if publishing else beside)
            raise
        report.rewrote = existing is not None
        return packed

    def _discard(self, lease: Lease, staging: str, beside: list[str]) -> None:
        """After a failed pack: remove its staging object and the big members it stored that no
        published container references (only while the lease is ours: another packer stores the
        same names under the same keys). Best effort: ``recover`` clears what is left."""
        try:
            self.storage.delete(staging)
            if beside:
                lease.check()
                for external in beside:
                    self.storage.delete(external)
        except Exception:  # noqa: BLE001 - the failure that brought us here is the one to report
            pass

    def _write(self, key: str, staging: str, existing: Reader | None, rows: list[SourceRow], report: PackReport, beside: list[str] | None = None) -> tuple[dict[str, int], list[SourceRow]]:
        """Stream the new container to ``staging``; return (CRC32C of each new member, rows packed).

        ``rows`` are names the existing container lacks; ``beside`` gets the keys of their big members."""
        settings = self.settings
        expected: dict[str, int] = {}
        packed: list[SourceRow] = []
        with self.storage.open_upload(staging, staged=True) as upload:
            writer = ContainerWriter(upload)
            with self._fetching() as fetcher:
                for original in fetcher.fetch(rows):
                    failpoint("pack.fetched")
                    row = original.row
                    if original.error is not None:
                        report.failed_rows += 1
                        if len(report.failures) < 20:
                            report.failures.append(f"row {row.id}: {original.error}")
                        continue
                    created = aware(row.created_at, settings.zone)
                    if original.data is not None:
                        writer.add(row.name, original.data, content_type=original.content_type, path=row.path, created_at=created)
                        expected[row.name] = crc32c(original.data)
                    else:
                        assert original.open is not None
                        if beside is not None:
                            beside.append(join_key(key, external_key_for(key, row.name)))
                        ref = store_external(self.storage, key, row.name, _chunks(original.open()), original.size, content_type=original.content_type)
                        writer.add_external(
                            row.name, size=ref.size, checksum=ref.checksum, block_checksums=ref.block_checksums,
                            external_key=ref.external_key, content_type=original.content_type, path=row.path, created_at=created,
                        )
                        expected[row.name] = ref.checksum
                    failpoint("pack.member_written")
                    report.files += 1
                    report.bytes += original.size
                    packed.append(row)
            if existing is not None:
                report.kept = writer.merge(existing)
            writer.close()
            upload.commit()
            failpoint("pack.after_upload")
        return expected, packed

    def _verify(self, staging: str, expected: dict[str, int]) -> None:
        """Read the staged container back: every member's checksum, and the new ones' CRC32C."""
        try:
            reader = self.deployment.archive().open(staging)
            members = {m.name: m for m in reader.members()}
            missing = sorted(set(expected) - set(members))
            if missing:
                raise PackFailed(f"{staging}: {len(missing)} member(s) missing after writing, e.g. {missing[0]!r}")
            inside = [n for n, m in members.items() if not m.external]
            for name, data in reader.read_many(inside):
                if name in expected and crc32c(data) != expected[name]:
                    raise PackFailed(f"{staging}: member {name!r} differs from the original fetched")
            for name in (n for n, m in members.items() if m.external):
                crc = 0
                for chunk in reader.iter_range(name, chunk_size=8 << 20):
                    crc = crc32c(chunk, crc)
                if name in expected and crc != expected[name]:
                    raise PackFailed(f"{staging}: member {name!r} differs from the original fetched")
        except ContainerError as exc:
            raise PackFailed(f"{staging} did not verify: {exc}") from exc

    def _matching(self, existing: Reader, rows: list[SourceRow], report: PackReport) -> list[SourceRow]:
        """Of rows whose names the container held already, those whose original is byte for byte the
        archived member (by CRC32C): only these originals may be deleted."""
        same = []
        with self._fetching() as fetcher:
            for original in fetcher.fetch(rows):
                row = original.row
                if original.error is not None:
                    continue  # gone already, or unreadable: nothing to delete
                if original.data is not None:
                    crc = crc32c(original.data)
                else:
                    assert original.open is not None
                    crc = 0
                    for chunk in _chunks(original.open()):
                        crc = crc32c(chunk, crc)
                if crc == existing.meta(row.name).checksum:
                    same.append(row)
                elif len(report.failures) < 20:
                    report.failures.append(f"row {row.id}: original differs from the archived {row.name!r}; not deleted")
        return same

    def _delete_originals(self, rows: list[SourceRow], report: PackReport) -> int:
        deleted = 0
        with self._fetching() as fetcher:
            for row in rows:
                try:
                    fetcher.delete_original(row)
                    deleted += 1
                    failpoint("pack.deleted")
                except DesqError as exc:
                    if len(report.failures) < 20:
                        report.failures.append(f"row {row.id}: original not deleted: {exc}")
        return deleted
