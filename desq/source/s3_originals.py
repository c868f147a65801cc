"""Originals stored as ``s3://bucket/key`` objects, read through the storage layer's ``S3Objects``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO

from botocore.exceptions import ClientError

from desq.source.mime import guess_content_type
from desq.source.original import FetchError, Original, OriginalChanged, OriginalsUnavailable, failed
from desq.source.readahead import Cancelled
from desq.source.rows import SourceRow
from desq.storage.base import NoCredentials, NotFound, StaleObject, StorageError, StorageUnavailable
from desq.storage.s3_objects import S3Objects

if TYPE_CHECKING:
    from desq.source.readahead import Run

S3_DEFAULT_TYPE = "binary/octet-stream"
"""What S3 answers when the uploader set no Content-Type: then the type is guessed from the name."""


def split_s3(url: str) -> tuple[str, str] | None:
    """(bucket, key) of ``s3://bucket/key``; None when either is missing."""
    bucket, _, key = url[5:].partition("/")
    return (bucket, key) if bucket and key else None


def _message(url: str, exc: StorageError) -> str:
    """One line for a failed S3 request; missing credentials are a configuration error and raise."""
    if isinstance(exc, NoCredentials):
        raise FetchError(exc.reason) from exc
    if isinstance(exc, StaleObject):
        return f"{url!r}: the object changed while it was fetched"
    return f"{url!r}: {exc.reason}"


def _systemic(exc: StorageError) -> bool:
    """Whether a failed GET is the service's (unreachable, 5xx, throttled) rather than one object's:
    the first fails the whole fetch (retried later), the second only its row."""
    cause = exc.__cause__
    if isinstance(cause, ClientError):
        status = cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return status >= 500 or cause.response.get("Error", {}).get("Code") in ("SlowDown", "Throttling")
    return isinstance(exc, StorageUnavailable)


class S3Originals:
    """Fetches, opens and deletes ``s3://`` originals; a store that does not answer is OriginalsUnavailable."""

    def __init__(self, connect: Callable[[], S3Objects]) -> None:
        self._connect = connect  # called once a URL is known to be well formed; raises FetchError if closed

    def fetch(self, run: Run, index: int, row: SourceRow, big_file_bytes: int) -> tuple[Original, int]:
        """Row ``index``'s Original and the bytes it reserved in ``run`` (reserved once the size is known)."""
        url = row.path
        parts = split_s3(url)
        if parts is None:
            return failed(row, f"{url!r} is not an s3://bucket/key URL"), 0
        bucket, key = parts
        what = f"reading {url}"
        objects = self._connect()
        try:
            opened = objects.get(what, bucket, key)
        except StorageError as exc:
            if _systemic(exc):
                raise OriginalsUnavailable(f"the originals' S3 does not answer: {_message(url, exc)}") from exc
            return failed(row, _message(url, exc)), 0
        size = opened.size
        content_type = opened.content_type
        if not content_type or content_type == S3_DEFAULT_TYPE:
            content_type = guess_content_type(row.name, key)
        if size >= big_file_bytes:
            opened.body.close()  # the consumer streams it through open()
            opener = functools.partial(self._open, bucket, key, opened.etag, size, url)
            return Original(row, size, None, opener, None, content_type), 0
        try:
            run.reserve(index, size)
        except Cancelled:
            opened.body.close()
            raise
        try:
            data, _ = objects.read_body(what, opened, pin=True)
        except StorageError as exc:
            run.release(size)
            return failed(row, _message(url, exc)), 0
        if len(data) != size:
            run.release(size)
            return failed(row, f"{url!r}: read {len(data)} of {size} bytes"), 0
        return Original(row, size, data, None, None, content_type), size

    def _open(self, bucket: str, key: str, etag: str | None, size: int, url: str) -> BinaryIO:
        """A big S3 original's streaming body, pinned to the version fetch() saw."""
        objects = self._connect()  # FetchError once the fetcher is closed
        try:
            opened = objects.get(f"reading {url}", bucket, key, if_match=etag)
        except StorageError as exc:
            raise OriginalChanged(_message(url, exc)) from exc
        if opened.size != size:
            opened.body.close()
            raise OriginalChanged(f"{url!r}: now {opened.size} bytes, {size} when it was fetched")
        return opened.body

    def delete(self, url: str) -> None:
        """Delete an original; already gone is fine."""
        parts = split_s3(url)
        if parts is None:
            raise FetchError(f"{url!r} is not an s3://bucket/key URL")
        try:
            self._connect().delete(f"deleting {url}", *parts)
        except NotFound:
            return
        except StorageError as exc:
            raise FetchError(f"deleting {_message(url, exc)}") from exc
