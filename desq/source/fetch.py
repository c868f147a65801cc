"""Fetching the originals of source rows: local files and ``s3://bucket/key`` objects.

``Fetcher.fetch`` reads originals on a bounded thread pool and yields them in the order of the
rows, so a container's bytes never depend on timing. Memory is bounded: before reading a body, a
worker reserves the original's size (from fstat, or the GET response headers) out of
``max_bytes_in_flight``; the reservation is given back when the consumer asks for the next
original. Reservations are granted in row order, so the original the consumer waits for can
always be reserved (no deadlock), and one original larger than the whole budget is fetched
alone. Originals of ``big_file_bytes`` or more are never read here: their ``open`` streams them.

Local originals that come from the page cache are read in the consumer's own thread: handing a
4 KiB read to a pool costs more than the read (a future, two lock hand-offs, a GIL switch). While
local reads take longer than ``SLOW_LOCAL_READ`` on average (a cold disk, NFS), they go to the pool,
where they overlap; every ``PROBE_EVERY`` pooled rows a few are read inline again to re-measure.

One row's failure (missing, unreadable, a refused path, an S3 error) becomes that row's
``Original.error``; only a bad configuration (FetchError) stops the iteration.
"""

from __future__ import annotations

import errno
import functools
import mimetypes
import os
import random
import re
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass
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

from desq.errors import DesqError
from desq.source.rows import SourceRow
from desq.storage.s3 import TRANSIENT_BODY_ERRORS, s3_client

S3_ATTEMPTS = 5
"""Attempts of every S3 request (botocore standard retries), and of a body that breaks off."""
S3_DEFAULT_TYPE = "binary/octet-stream"
"""What S3 answers when the uploader set no Content-Type: then the type is guessed from the name."""

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_MIME = mimetypes.MimeTypes()  # Python's built-in table only: the same guess on every machine
_ENCODING_TYPES = {
    "gzip": "application/gzip",
    "bzip2": "application/x-bzip2",
    "xz": "application/x-xz",
    "compress": "application/x-compress",
    "br": "application/x-brotli",
}
_OS_REASONS = {
    errno.ENOENT: "no such file",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EISDIR: "is a directory",
    errno.ENOTDIR: "a parent of it is not a directory",
    errno.ELOOP: "too many levels of symbolic links",
    errno.ENAMETOOLONG: "name too long",
}
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)  # a FIFO must not block


class FetchError(DesqError):
    """A bad fetcher configuration, or a refused path (empty, relative without a root, outside the root)."""


class OriginalChanged(DesqError):
    """Raised by ``Original.open``: the big original changed, vanished or became unreadable since fetch()."""


@dataclass(frozen=True, slots=True)
class Original:
    """One row's original, as ``Fetcher.fetch`` yields it."""

    row: SourceRow
    size: int
    """Its size in bytes (0 if error)."""
    data: bytes | None
    """The whole original, when it is smaller than ``big_file_bytes``."""
    open: Callable[[], BinaryIO] | None
    """For originals of ``big_file_bytes`` or more: opens a fresh binary stream (OriginalChanged if it changed)."""
    error: str | None
    """One line saying why the original could not be fetched; then ``data`` and ``open`` are None."""
    content_type: str | None = None
    """S3's Content-Type, else guessed from the row's name (or path) with Python's own table; None if unknown."""


def guess_content_type(*names: str) -> str | None:
    """The MIME type of the first name whose extension is known (``.gz`` and such give the compressed type)."""
    for name in names:
        base = name.rsplit("/", 1)[-1] if isinstance(name, str) else ""
        dot = base.find(".")
        if dot < 0:
            continue
        kind = _type_of_suffixes(base[dot:])
        if kind:
            return kind
    return None


@functools.lru_cache(maxsize=1024)
def _type_of_suffixes(suffixes: str) -> str | None:
    """The type of a name by its suffixes alone (``.tar.gz``): only they decide mimetypes' guess."""
    kind, encoding = _MIME.guess_type("x" + suffixes, strict=True)
    return _ENCODING_TYPES.get(encoding) if encoding else kind


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _os_message(shown: str, exc: OSError) -> str:
    reason = _OS_REASONS.get(exc.errno or 0) or exc.strerror or type(exc).__name__
    return f"{shown!r}: {reason}"


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
        return f"{url!r}: S3 answered {status} {code}: {_one_line(err.get('Message') or code)}"
    return f"{url!r}: {type(exc).__name__}: {_one_line(exc)}"


class OriginalsUnavailable(FetchError):
    """The store of the originals does not answer (after retries): a failure of the whole fetch,
    to be retried later, not something to record against every row."""


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


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _open_local(path: str, size: int, shown: str) -> BinaryIO:
    """A big local original's stream, refused if its size is no longer the one fetch() saw."""
    try:
        stream = open(path, "rb")  # noqa: SIM115 - the caller closes it
    except OSError as exc:
        raise OriginalChanged(_os_message(shown, exc)) from exc
    now = os.fstat(stream.fileno()).st_size
    if now != size:
        stream.close()
        raise OriginalChanged(f"{shown!r}: now {now} bytes, {size} when it was fetched")
    return stream


_END: Any = object()
_PARENTS_CACHED = 65536

SLOW_LOCAL_READ = 100e-6
"""Seconds a local read may take on average and still be done inline rather than on the pool."""
PROBE_EVERY = 2048
"""Pooled rows after which local reads are timed inline again."""
PROBE_ROWS = 16


class _Pace:
    """Chooses where local originals are read: inline while they are fast, else on the pool."""

    def __init__(self) -> None:
        self.cost = 0.0  # moving average of an inline local read, in seconds
        self.pooled = 0  # rows handed to the pool since the last inline read
        self.probing = 0  # inline reads still to do before the average decides again

    def probe_due(self) -> bool:
        """True when the pool has had PROBE_EVERY local rows: drain it, then ``start_probe``."""
        return self.pooled >= PROBE_EVERY

    def start_probe(self) -> None:
        self.pooled, self.probing = 0, PROBE_ROWS

    def inline(self) -> bool:
        return self.probing > 0 or self.cost < SLOW_LOCAL_READ

    def note_inline(self, seconds: float) -> None:
        self.probing = max(0, self.probing - 1)
        seconds = min(seconds, 4 * SLOW_LOCAL_READ)  # one stall (a page fault, a GC pass) is not a slow disk
        self.cost = 0.9 * self.cost + 0.1 * seconds  # from 0: the first read of a run pays for cold dentries

    def note_pooled(self) -> None:
        self.pooled += 1


class _Cancelled(Exception):
    """The fetch was closed while a worker waited for its reservation."""


class _RowFailed(Exception):
    """A per-row failure found after the reservation (its message is the row's error)."""


class _Run:
    """One fetch() call: its pool and its in-flight budget, reserved strictly in row order."""

    def __init__(self, limit: int, note_peak: Callable[[int], None]) -> None:
        self.limit = limit
        self.note_peak = note_peak
        self.cond = threading.Condition()
        self.turn = 0  # the row whose reservation comes next
        self.passed: set[int] = set()  # later rows that need no reservation
        self.in_flight = 0
        self.cancelled = False
        self.pool: ThreadPoolExecutor | None = None

    def _advance(self) -> None:
        while self.turn in self.passed:
            self.passed.discard(self.turn)
            self.turn += 1
        self.cond.notify_all()

    def reserve(self, index: int, size: int) -> None:
        """Wait for row ``index``'s turn and room for ``size`` bytes (or an empty budget), then take them."""
        with self.cond:
            while True:
                if self.cancelled:
                    raise _Cancelled
                if self.turn == index and (self.in_flight == 0 or self.in_flight + size <= self.limit):
                    break
                self.cond.wait()
            self.in_flight += size
            self.turn += 1
            self.note_peak(self.in_flight)
            self._advance()

    def skip(self, index: int) -> None:
        """Row ``index`` reserves nothing (a failure, a big original); no-op once it reserved."""
        with self.cond:
            if index >= self.turn:
                self.passed.add(index)
                self._advance()

    def release(self, size: int) -> None:
        if size:
            with self.cond:
                self.in_flight -= size
                self.cond.notify_all()

    def cancel(self) -> None:
        with self.cond:
            self.cancelled = True
            self.cond.notify_all()


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
        self._root_real: str | None = None
        if root:
            real = os.path.realpath(root)
            if not os.path.isdir(real):
                raise FetchError(f"source root {root!r} is not a directory")
            self._root_real = real
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
        self._runs: set[_Run] = set()
        self._closed = False
        self._parents: dict[str, str] = {}  # a relative parent folder -> its checked real path
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
            run.cancel()
            if run.pool is not None:
                run.pool.shutdown(wait=True, cancel_futures=True)
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
                    raise FetchError(f"cannot make an S3 client: {_one_line(exc)}") from exc
            return self._client

    # --- paths ------------------------------------------------------------------------------

    def resolve_local(self, path: str) -> Path:
        """The file a local path names: absolute as is, relative under the root and never outside it."""
        if not isinstance(path, str) or not path:
            raise FetchError("empty path refused")
        if "\x00" in path:
            raise FetchError(f"path {path!r} refused: it contains a NUL byte")
        if os.path.isabs(path):
            return Path(path)
        if self._root_real is None:
            raise FetchError(f"relative path {path!r} refused: no source root is set")
        real = os.path.realpath(os.path.join(self._root_real, path))
        if not _inside(real, self._root_real):
            raise FetchError(f"path {path!r} refused: it leads outside the source root")
        return Path(real)

    def _open_local_original(self, path: str) -> int:
        """A read-only fd of a local original, with resolve_local's refusals.

        The real path of each parent folder is checked once per fetcher; the last component is
        opened with O_NOFOLLOW, so only a symlink there costs a whole resolve_local.
        """
        root = self._root_real
        if root is not None and isinstance(path, str) and path and "\x00" not in path and not os.path.isabs(path):
            parent, base = os.path.split(path)
            if base not in ("", ".", ".."):
                real_parent = self._parents.get(parent)
                if real_parent is None:
                    real_parent = os.path.realpath(os.path.join(root, parent))
                    if not _inside(real_parent, root):
                        raise FetchError(f"path {path!r} refused: it leads outside the source root")
                    if os.path.isdir(real_parent):
                        if len(self._parents) >= _PARENTS_CACHED:
                            self._parents.clear()
                        self._parents[parent] = real_parent
                try:
                    return os.open(os.path.join(real_parent, base), _OPEN_FLAGS | os.O_NOFOLLOW)
                except OSError as exc:
                    if exc.errno != errno.ELOOP:
                        raise
        return os.open(self.resolve_local(path), _OPEN_FLAGS)

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
        self.resolve_local(path)  # the refusals
        named = path if os.path.isabs(path) else os.path.join(self._root_real or "", path)
        try:
            os.unlink(named)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise FetchError(f"deleting {_os_message(path, exc)}") from exc

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
        run = _Run(self.max_bytes_in_flight, self._note_peak)
        with self._lock:
            if self._closed:
                raise FetchError("the fetcher is closed")
            self._runs.add(run)
        pool = run.pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="desq-fetch")
        pending: deque[Future[tuple[Original, int]]] = deque()
        pace = _Pace()
        index = 0
        more = True
        try:
            while True:
                while more and len(pending) < self.window:
                    if pace.probe_due():
                        if pending:
                            break
                        pace.start_probe()
                    row = next(rows, _END)
                    if row is _END:
                        more = False
                        break
                    if run.cancelled:
                        raise FetchError("the fetcher was closed while fetching")
                    local = _is_local(row.path)
                    if local and not pending and pace.inline():
                        started = time.perf_counter()
                        original, reserved = self._fetch_one(run, index, row)
                        pace.note_inline(time.perf_counter() - started)
                        self.inline_rows += 1
                        index += 1
                        yield original
                        run.release(reserved)
                        continue
                    if local:
                        pace.note_pooled()
                    try:
                        pending.append(pool.submit(self._fetch_one, run, index, row))
                    except RuntimeError:  # the pool was shut down by close()
                        raise FetchError("the fetcher was closed while fetching") from None
                    index += 1
                if not pending:
                    return
                try:
                    original, reserved = pending.popleft().result()
                except (CancelledError, _Cancelled):
                    raise FetchError("the fetcher was closed while fetching") from None
                yield original
                run.release(reserved)
        finally:
            run.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
            with self._lock:
                self._runs.discard(run)

    def _fetch_one(self, run: _Run, index: int, row: SourceRow) -> tuple[Original, int]:
        """Row ``index``'s Original and the bytes it reserved (to release once it is consumed)."""
        try:
            path = row.path
            if isinstance(path, str) and path[:5].lower() == "s3://":
                return self._fetch_s3(run, index, row)
            if isinstance(path, str) and _URL.match(path):
                return _failed(row, f"{path!r} refused: only local paths and s3:// URLs are originals"), 0
            return self._fetch_local(run, index, row)
        finally:
            run.skip(index)  # every row takes its turn exactly once, whatever happened

    def _fetch_local(self, run: _Run, index: int, row: SourceRow) -> tuple[Original, int]:
        shown = row.path
        try:
            fd = self._open_local_original(shown)
        except FetchError as exc:
            return _failed(row, str(exc)), 0
        except OSError as exc:
            return _failed(row, _os_message(shown, exc)), 0
        try:
            info = os.fstat(fd)
            if stat.S_ISDIR(info.st_mode):
                return _failed(row, f"{shown!r}: is a directory"), 0
            if not stat.S_ISREG(info.st_mode):
                return _failed(row, f"{shown!r}: not a regular file"), 0
            size = info.st_size
            content_type = guess_content_type(row.name, shown)
            if size >= self.big_file_bytes:
                opener = functools.partial(_open_local, str(self.resolve_local(shown)), size, shown)
                return Original(row, size, None, opener, None, content_type), 0
            run.reserve(index, size)
            try:
                data = _read_exactly(fd, size, shown)
            except (OSError, _RowFailed) as exc:
                run.release(size)
                message = _os_message(shown, exc) if isinstance(exc, OSError) else str(exc)
                return _failed(row, message), 0
            return Original(row, size, data, None, None, content_type), size
        except OSError as exc:
            return _failed(row, _os_message(shown, exc)), 0
        except FetchError as exc:
            return _failed(row, str(exc)), 0
        finally:
            os.close(fd)

    def _fetch_s3(self, run: _Run, index: int, row: SourceRow) -> tuple[Original, int]:
        url = row.path
        parts = _split_s3(url)
        if parts is None:
            return _failed(row, f"{url!r} is not an s3://bucket/key URL"), 0
        bucket, key = parts
        client = self._s3()
        try:
            response = client.get_object(Bucket=bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            if _systemic(exc):
                raise OriginalsUnavailable(f"the originals' S3 does not answer: {_s3_message(url, exc)}") from exc
            return _failed(row, _s3_message(url, exc)), 0
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
        except _Cancelled:
            body.close()
            raise
        try:
            data = self._read_s3_body(body, bucket, key, etag, size, url)
        except _RowFailed as exc:
            run.release(size)
            return _failed(row, str(exc)), 0
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


def _is_local(path: object) -> bool:
    return isinstance(path, str) and not _URL.match(path)


def _failed(row: SourceRow, error: str) -> Original:
    return Original(row, 0, None, None, _one_line(error), None)


def _read_exactly(fd: int, size: int, shown: str) -> bytes:
    """``size`` bytes from ``fd``; _RowFailed if the file is now shorter or longer."""
    chunks: list[bytes] = []
    got = 0
    while got < size:
        chunk = os.read(fd, min(size - got, 1 << 30))
        if not chunk:
            raise _RowFailed(f"{shown!r}: read {got} of {size} bytes (the file shrank while it was read)")
        chunks.append(chunk)
        got += len(chunk)
    if os.read(fd, 1):
        raise _RowFailed(f"{shown!r}: the file grew past its {size} bytes while it was read")
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)  # one read is the rule: no copy
