"""The composition root: one deployment's settings turned into desq's objects, once.

The night's side of desq (the commands that touch the source database, the Celery tasks, the
pipeline) asks a ``Deployment`` for the layout, the mode, the archive storage, the originals, the
source table, desq's own state and the leases, so how they are built (and where desq's tables
live) is decided here only. The database side is built when first asked for (and its modules
imported then). The read side (``web/``, ``desq/files.py``) needs only the mode (``mode_for``)
and a storage of its own (a larger connection pool, counted for metrics), and never loads this.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from desq.archive import Archive
from desq.layout import Layout
from desq.mode import Mode, mode_for
from desq.settings import Settings
from desq.storage import Storage, storage_for

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from desq.pipeline.lease import Leases
    from desq.pipeline.pack import Packer
    from desq.source.fetch import Fetcher
    from desq.source.table import SourceTable
    from desq.spool import Spool
    from desq.state import StateStore


class Deployment:
    """The objects of one deployment; each is built on first use and then reused."""

    def __init__(self, settings: Settings, *, storage: Storage | None = None, source: SourceTable | None = None) -> None:
        """``storage`` and ``source``: objects already built (tests, the night in one process)."""
        self.settings = settings
        self.layout: Layout = settings.layout
        self.mode: Mode = mode_for(self.layout)
        if storage is not None:
            self.storage = storage
        if source is not None:
            self.source = source

    @functools.cached_property
    def storage(self) -> Storage:
        """The archive's storage (containers, big files, published documents)."""
        return storage_for(self.settings)

    def archive(self) -> Archive:
        """Containers on the archive storage; the night reads each once, so it caches nothing."""
        return Archive(self.storage, cache_bytes=0)

    @functools.cached_property
    def source(self) -> SourceTable:
        """The business application's file table (connected on first use)."""
        from desq.source.table import SourceTable

        return SourceTable.connect(self.settings)

    @functools.cached_property
    def state_engine(self) -> Engine:
        """Where desq's own tables live: ``state.db_url``, else the source database."""
        from desq.source.table import create_engine

        url = self.settings.state.db_url
        return create_engine(url) if url else self.source.engine

    @functools.cached_property
    def state(self) -> StateStore:
        """desq's key-value state (uid mode's cutoff, the night records)."""
        from desq.state import StateStore

        return StateStore(self.state_engine)

    @functools.cached_property
    def leases(self) -> Leases:
        """The packers' leases on containers."""
        from desq.pipeline.lease import Leases

        return Leases(self.state_engine)

    @functools.cached_property
    def spool(self) -> Spool:
        """The night's spool of planned rows, beside the leases."""
        from desq.spool import Spool

        return Spool(self.state_engine)

    def fetcher(self) -> Fetcher:
        """A reader of originals (a context manager: its threads end with it)."""
        from desq.source.fetch import Fetcher

        s = self.settings
        return Fetcher(root=s.source.root, big_file_bytes=s.archive.big_file_bytes, s3_endpoint_url=s.source.s3_endpoint_url or s.archive.s3_endpoint_url, threads=s.source.fetch_threads)

    def packer(self, *, worker: str | None = None, lease_ttl: float | None = None) -> Packer:
        """A packer of (date, shard)s for this deployment."""
        from desq.pipeline.pack import Packer

        return Packer(self, worker=worker, lease_ttl=lease_ttl)
