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

import functools
import random
import re
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Self

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from desq.source.local_originals import LocalOriginals
from desq.source.mime import guess_content_type
from desq.source.original import FetchError, Original, OriginalChanged, OriginalsUnavailable, failed, one_line
from desq.source.readahead import Cancelled, Pace, Run, read_ahead
from desq.source.rows import SourceRow
from desq.storage.s3 import TRANSIENT_BODY_ERRORS, s3_client

S3_ATTEMPTS = 5
"""Attempts of every S3 request (botocore standard retries), and of a body that breaks off."""
S3_DEFAULT_TYPE = "binary/octet-stream"
"""What S3 answers when the uploader set no Content-Type: then the type is guessed from the name."""

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


class _RowFailed(Exception):
    """A per-row failure found after the reservation (its message is the row's error)."""


def _s3_message(url: str, exc: Exception) -> str:
    """One line for a failed S3 request; NoCredentialsError is a configuration error and raises."""
    if isinstance(exc, NoCredentialsError):
        raise FetchError("no S3 credentials (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile)") from exc
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in ("NoSuchKey", "404", "NotFound"):
            return f"{url!r}: no such object"
        if code == "NoSuchBucket":
            return f"{url!r}: no such bucket"
        if code in ("AccessDenied", "403", "Forbidden") or status == 403:
            return f"{url!r}: access denied"
        if code == "PreconditionFailed" or status == 412:
            return f"{url!r}: the object changed while it was fetched"
        return f"{url!r}: S3 answered {status} {code}: {one_line(err.get('Message') or code)}"
    return f"{url!r}: {type(exc).__name__}: {one_line(exc)}"


def _systemic(exc: Exception) -> bool:
    """Whether an S3 failure is the service's (unreachable, 5xx, throttled) rather than one object's."""
    if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError)):
        return True
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return status >= 500 or exc.response.get("Error", {}).get("Code") in ("SlowDown", "Throttling")
    return False


def _split_s3(url: str) -> tuple[str, str] | None:
    """(bucket, key) of ``s3://bucket/key``; None when either is missing."""
    bucket, _, key = url[5:].partition("/")
    return (bucket, key) if bucket and key else None


SLOW_LOCAL_READ = 100e-6
"""Seconds a local read may take on average and still be done inline rather than on the pool."""
PROBE_EVERY = 2048
"""Pooled rows after which local reads are timed inline again."""
PROBE_ROWS = 16
"""Local rows read inline to re-measure, once PROBE_EVERY rows went to the pool."""

__all__ = [
    "PROBE_EVERY", "PROBE_ROWS", "SLOW_LOCAL_READ", "FetchError", "Fetcher", "Original", "OriginalChanged",
    "OriginalsUnavailable", "guess_content_type",
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
        self._client = s3_client
        self._own_client = s3_client is None
        self._lock = threading.Lock()
        self._peak_lock = threading.Lock()
        self._peak = 0
        self._runs: set[Run] = set()
        self._closed = False
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
            client = self._client if self._own_client else None
        for run in runs:
            run.stop()
        if client is not None and hasattr(client, "close"):
            client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _s3(self) -> Any:
        with self._lock:
            if self._closed:
                raise FetchError("the fetcher is closed")
            if self._client is None:
                try:
                    self._client = s3_client(self.s3_endpoint_url, max_attempts=S3_ATTEMPTS, max_pool_connections=max(10, 2 * self.threads))
                except (BotoCoreError, ValueError) as exc:
                    raise FetchError(f"cannot make an S3 client: {one_line(exc)}") from exc
            return self._client

    # --- paths ------------------------------------------------------------------------------

    def resolve_local(self, path: str) -> Path:
        """The file a local path names: absolute as is, relative under the root and never outside it."""
        return self._local.resolve(path)

    def delete_original(self, row: SourceRow) -> None:
        """Delete a row's original (a symlink itself, not its target); already gone is fine."""
        path = row.path
        if isinstance(path, str) and path[:5].lower() == "s3://":
            parts = _split_s3(path)
            if parts is None:
                raise FetchError(f"{path!r} is not an s3://bucket/key URL")
            try:
                self._s3().delete_object(Bucket=parts[0], Key=parts[1])
            except (ClientError, BotoCoreError) as exc:
                message = _s3_message(path, exc)
                if not message.endswith(": no such object"):
                    raise FetchError(f"deleting {message}") from exc
            return
        if isinstance(path, str) and _URL.match(path):
            raise FetchError(f"{path!r} refused: only local paths and s3:// URLs are originals")
        self._local.delete(path)

    # --- fetching ---------------------------------------------------------------------------

    def fetch(self, rows: Iterable[SourceRow]) -> Iterator[Original]:
        """One Original per row, in the order of the rows, fetched concurrently in bounded memory.

        Rows are consumed lazily (at most ``window`` ahead). Closing the iterator early cancels
        pending work and stops its threads. Raises FetchError only for a bad configuration.
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
        pace = Pace(slow=SLOW_LOCAL_READ, probe_every=PROBE_EVERY, probe_rows=PROBE_ROWS)
        try:
            yield from read_ahead(
                rows, self._fetch_one, run=run, threads=self.threads, window=self.window,
                pace=pace, cheap=_is_local, on_inline=self._note_inline,
            )
        finally:
            with self._lock:
                self._runs.discard(run)

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
        url = row.path
        parts = _split_s3(url)
        if parts is None:
            return failed(row, f"{url!r} is not an s3://bucket/key URL"), 0
        bucket, key = parts
        client = self._s3()
        try:
            response = client.get_object(Bucket=bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            if _systemic(exc):
                raise OriginalsUnavailable(f"the originals' S3 does not answer: {_s3_message(url, exc)}") from exc
            return failed(row, _s3_message(url, exc)), 0
        body = response["Body"]
        size = int(response["ContentLength"])
        etag = response.get("ETag")
        content_type = response.get("ContentType")
        if not content_type or content_type == S3_DEFAULT_TYPE:
            content_type = guess_content_type(row.name, key)
        if size >= self.big_file_bytes:
            body.close()  # the consumer streams it through open()
            opener = functools.partial(self._open_s3, bucket, key, etag, size, url)
            return Original(row, size, None, opener, None, content_type), 0
        try:
            run.reserve(index, size)
        except Cancelled:
            body.close()
            raise
        try:
            data = self._read_s3_body(body, bucket, key, etag, size, url)
        except _RowFailed as exc:
            run.release(size)
            return failed(row, str(exc)), 0
        return Original(row, size, data, None, None, content_type), size

    def _read_s3_body(self, body: Any, bucket: str, key: str, etag: str | None, size: int, url: str) -> bytes:
        """The whole body; one that breaks off is fetched again, pinned to the same version."""
        pin = {"IfMatch": etag} if etag else {}
        for attempt in range(1, S3_ATTEMPTS + 1):
            try:
                data = body.read()
            except TRANSIENT_BODY_ERRORS as exc:
                body.close()
                if attempt == S3_ATTEMPTS:
                    raise _RowFailed(f"{url!r}: the download broke off {attempt} times ({type(exc).__name__})") from exc
                time.sleep(min(2.0, 0.05 * 2**attempt) * random.uniform(0.5, 1.0))
                try:
                    body = self._s3().get_object(Bucket=bucket, Key=key, **pin)["Body"]
                except (ClientError, BotoCoreError) as again:
                    raise _RowFailed(_s3_message(url, again)) from again
                continue
            except BotoCoreError as exc:
                raise _RowFailed(_s3_message(url, exc)) from exc
            if len(data) != size:
                raise _RowFailed(f"{url!r}: read {len(data)} of {size} bytes")
            return data
        raise AssertionError("unreachable")

    def _open_s3(self, bucket: str, key: str, etag: str | None, size: int, url: str) -> BinaryIO:
        """A big S3 original's streaming body, pinned to the version fetch() saw."""
        pin = {"IfMatch": etag} if etag else {}
        try:
            response = self._s3().get_object(Bucket=bucket, Key=key, **pin)
        except (ClientError, BotoCoreError) as exc:
            raise OriginalChanged(_s3_message(url, exc)) from exc
        if int(response["ContentLength"]) != size:
            response["Body"].close()
            raise OriginalChanged(f"{url!r}: now {response['ContentLength']} bytes, {size} when it was fetched")
        return response["Body"]


def _is_local(row: SourceRow) -> bool:
    """Whether a row's original is a local file (cheap to read inline while in the page cache)."""
    return isinstance(row.path, str) and not _URL.match(row.path)
