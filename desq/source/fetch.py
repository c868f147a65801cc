"""Fetching the originals of source rows: local files and ``s3://bucket/key`` objects.

``Fetcher.fetch`` reads originals through ``readahead`` (a bounded thread pool, row order kept,
bytes in flight bounded by ``max_bytes_in_flight``). Originals of ``big_file_bytes`` or more are
never read here: their ``open`` streams them.

Local originals that come from the page cache are read in the consumer's own thread. While local
reads take longer than ``SLOW_LOCAL_READ`` on average (a cold disk, NFS), they go to the pool,
where they overlap; every ``PROBE_EVERY`` pooled rows ``PROBE_ROWS`` are read inline again to
re-measure.

One row's failure (missing, unreadable, a refused path, an S3 error) becomes that row's
``Original.error``; only a bad configuration (FetchError) stops the iteration.
"""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Self

from desq.source.local_originals import LocalOriginals
from desq.source.mime import guess_content_type
from desq.source.original import FetchError, Original, OriginalChanged, OriginalsUnavailable, failed
from desq.source.readahead import Pace, Run, read_ahead
from desq.source.rows import SourceRow
from desq.source.s3_originals import S3_DEFAULT_TYPE, S3Originals
from desq.storage.base import StorageError
from desq.storage.s3_objects import S3Objects

S3_ATTEMPTS = 5
"""Attempts of every S3 request (botocore standard retries), and of a body that breaks off."""

SLOW_LOCAL_READ = 100e-6
"""Seconds a local read may take on average and still be done inline rather than on the pool."""
PROBE_EVERY = 2048
"""Pooled rows after which local reads are timed inline again."""
PROBE_ROWS = 16
"""Local rows read inline to re-measure, once PROBE_EVERY rows went to the pool."""

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")

__all__ = [
    "PROBE_EVERY", "PROBE_ROWS", "S3_ATTEMPTS", "S3_DEFAULT_TYPE", "SLOW_LOCAL_READ", "FetchError", "Fetcher",
    "Original", "OriginalChanged", "OriginalsUnavailable", "guess_content_type",
]


class Fetcher:
    """Fetches originals of source rows; see ``fetch``. Close it (or use ``with``) when done."""

    def __init__(
        self,
        *,
        root: str = "",
        big_file_bytes: int = 64 << 20,
        s3_endpoint_url: str = "",
        threads: int = 32,
        max_bytes_in_flight: int = 64 << 20,
        s3_client: Any = None,
    ) -> None:
        if threads < 1:
            raise FetchError(f"fetch threads must be at least 1, not {threads}")
        if max_bytes_in_flight < 1:
            raise FetchError(f"max bytes in flight must be at least 1, not {max_bytes_in_flight}")
        if big_file_bytes < 0:
            raise FetchError(f"the big file threshold must not be negative, not {big_file_bytes}")
        if s3_endpoint_url and not re.match(r"https?://[^/]", s3_endpoint_url):
            raise FetchError(f"S3 endpoint {s3_endpoint_url!r} is not an http(s):// URL")
        self.root = root
        self._local = LocalOriginals(root)
        self.big_file_bytes = big_file_bytes
        self.s3_endpoint_url = s3_endpoint_url
        self.threads = threads
        self.max_bytes_in_flight = max_bytes_in_flight
        self.window = 2 * threads
        """How many rows are read ahead of the one the consumer waits for."""
        self._s3_client = s3_client
        self._s3_objects: S3Objects | None = None  # made on the first s3:// row
        self._s3 = S3Originals(self._connect_s3)
        self._lock = threading.Lock()
        self._peak_lock = threading.Lock()
        self._peak = 0
        self._runs: set[Run] = set()
        self._pool: ThreadPoolExecutor | None = None
        self._closed = False
        self._pace = Pace(slow=SLOW_LOCAL_READ, probe_every=PROBE_EVERY, probe_rows=PROBE_ROWS)
        """Where local reads go, learnt across fetches (a packer's fetcher serves many containers)."""
        self.inline_rows = 0
        """Rows whose original was read in the consumer's thread (for tests and benchmarks)."""

    # --- state ------------------------------------------------------------------------------

    @property
    def peak_bytes_in_flight(self) -> int:
        """The most bytes ever reserved at once by one fetch() of this fetcher (for tests and metrics)."""
        return self._peak

    def _note_peak(self, value: int) -> None:
        with self._peak_lock:
            self._peak = max(self._peak, value)

    def close(self) -> None:
        """Cancel fetches still running, stop their threads, close the S3 client made here."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            runs = list(self._runs)
            objects = self._s3_objects
            pool, self._pool = self._pool, None
        for run in runs:
            run.stop()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if objects is not None:
            objects.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _connect_s3(self) -> S3Objects:
        """The S3 access of the originals, made on first use; FetchError once the fetcher is closed."""
        with self._lock:
            if self._closed:
                raise FetchError("the fetcher is closed")
            if self._s3_objects is None:
                try:
                    self._s3_objects = S3Objects(
                        self.s3_endpoint_url, max_attempts=S3_ATTEMPTS,
                        max_pool_connections=max(10, 2 * self.threads), client=self._s3_client,
                    )
                except StorageError as exc:
                    raise FetchError(str(exc)) from exc
            return self._s3_objects

    # --- paths ------------------------------------------------------------------------------

    def resolve_local(self, path: str) -> Path:
        """The file a local path names: absolute as is, relative under the root and never outside it."""
        return self._local.resolve(path)

    def delete_original(self, row: SourceRow) -> None:
        """Delete a row's original (a symlink itself, not its target); already gone is fine."""
        path = row.path
        if isinstance(path, str) and path[:5].lower() == "s3://":
            self._s3.delete(path)
            return
        if isinstance(path, str) and _URL.match(path):
            raise FetchError(f"{path!r} refused: only local paths and s3:// URLs are originals")
        self._local.delete(path)

    # --- fetching ---------------------------------------------------------------------------

    def fetch(self, rows: Iterable[SourceRow]) -> Iterator[Original]:
        """One Original per row, in the order of the rows, fetched concurrently in bounded memory.

        Rows are consumed lazily (at most ``window`` ahead). Closing the iterator early cancels
        pending work and waits for the work already started. Raises FetchError only for a bad configuration.
        """
        if self._closed:
            raise FetchError("the fetcher is closed")
        return self._iterate(iter(rows))

    def _iterate(self, rows: Iterator[SourceRow]) -> Iterator[Original]:
        run = Run(self.max_bytes_in_flight, self._note_peak)
        with self._lock:
            if self._closed:
                raise FetchError("the fetcher is closed")
            self._runs.add(run)
        pace = self._pace
        try:
            yield from read_ahead(
                rows, self._fetch_one, run=run, pool=self._thread_pool, window=self.window,
                pace=pace, cheap=_is_local, on_inline=self._note_inline,
            )
        finally:
            with self._lock:
                self._runs.discard(run)

    def _thread_pool(self) -> ThreadPoolExecutor:
        """The fetcher's pool, started on the first read not done inline and kept until close."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the fetcher is closed")
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="desq-fetch")
            return self._pool

    def _note_inline(self) -> None:
        self.inline_rows += 1

    def _fetch_one(self, run: Run, index: int, row: SourceRow) -> tuple[Original, int]:
        """Row ``index``'s Original and the bytes it reserved (to release once it is consumed)."""
        try:
            path = row.path
            if isinstance(path, str) and path[:5].lower() == "s3://":
                return self._fetch_s3(run, index, row)
            if isinstance(path, str) and _URL.match(path):
                return failed(row, f"{path!r} refused: only local paths and s3:// URLs are originals"), 0
            return self._fetch_local(run, index, row)
        finally:
            run.skip(index)  # every row takes its turn exactly once, whatever happened

    def _fetch_local(self, run: Run, index: int, row: SourceRow) -> tuple[Original, int]:
        return self._local.fetch(run, index, row, self.big_file_bytes)

    def _fetch_s3(self, run: Run, index: int, row: SourceRow) -> tuple[Original, int]:
        return self._s3.fetch(run, index, row, self.big_file_bytes)


def _is_local(row: SourceRow) -> bool:
    """Whether a row's original is a local file (cheap to read inline while in the page cache)."""
    return isinstance(row.path, str) and not _URL.match(row.path)
