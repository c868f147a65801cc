"""The S3 backend (AWS S3, Ceph RGW, MinIO) with boto3.

Request retries (500/503/SlowDown/throttling, timeouts, dropped connections) are botocore's own
"standard" retry mode with its bounded exponential backoff; a response body that breaks off while
it is read is retried here with the same kind of backoff. Ranged reads pinned to a version send
``If-Match`` and turn 412 into StaleObject. Uploads buffer at most one part in memory and are
aborted on any failure, so nothing half-written becomes visible.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    IncompleteReadError,
    NoCredentialsError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from desq.storage.base import NotFound, ObjectInfo, RangeError, StaleObject, Storage, StorageError, StorageUnavailable, Upload, check_key

T = TypeVar("T")

PART_SIZE = 8 << 20
MAX_PARTS = 10_000
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
TRANSIENT_BODY_ERRORS = (IncompleteReadError, ResponseStreamingError, ReadTimeoutError, ConnectionClosedError)
"""Failures of a response body while it is read: worth reading it again."""
_UNAVAILABLE = (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError)


def _error(exc: Exception, what: str) -> StorageError:
    """A botocore failure as desq's typed storage error."""
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        message = err.get("Message") or code
        if code in ("NoSuchKey", "404", "NotFound"):
            return NotFound(f"{what}: no such object")
        if code == "PreconditionFailed" or status == 412:
            return StaleObject(f"{what}: the object changed since it was opened")
        if code == "InvalidRange" or status == 416:
            return RangeError(f"{what}: the range runs past the end of the object")
        if code == "NoSuchBucket":
            return StorageError(f"{what}: the bucket does not exist")
        if status >= 500 or code in ("SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling"):
            return StorageUnavailable(f"{what}: S3 answered {status} {code} after retries")
        return StorageError(f"{what}: S3 answered {status} {code}: {message}")
    if isinstance(exc, NoCredentialsError):
        return StorageError(f"{what}: no S3 credentials (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile)")
    if isinstance(exc, _UNAVAILABLE) or isinstance(exc, TRANSIENT_BODY_ERRORS):
        return StorageUnavailable(f"{what}: {type(exc).__name__} after retries")
    return StorageError(f"{what}: {type(exc).__name__}: {exc}")


def s3_client(
    endpoint_url: str = "",
    *,
    max_attempts: int = 5,
    max_pool_connections: int = 32,
    connect_timeout: float = 5.0,
    read_timeout: float = 30.0,
) -> Any:
    """A boto3 S3 client as desq uses them: standard retries, timeouts, path-style with an endpoint."""
    config = Config(
        retries={"mode": "standard", "total_max_attempts": max_attempts},  # attempts, first included
        max_pool_connections=max_pool_connections,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        s3={"addressing_style": "path" if endpoint_url else "auto"},
    )
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url or None, config=config)


class S3Storage(Storage):
    """Objects under ``s3://bucket/prefix``."""

    def __init__(
        self,
        url: str,
        *,
        endpoint_url: str = "",
        max_pool_connections: int = 32,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_attempts: int = 5,
        part_size: int = PART_SIZE,
        client: Any = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise StorageError(f"{url!r} is not an s3://bucket/prefix URL")
        self.url = url
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        self.part_size = max(5 << 20, part_size)
        self.max_attempts = max_attempts
        self.client = client or s3_client(
            endpoint_url,
            max_attempts=max_attempts,
            max_pool_connections=max_pool_connections,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        )

    # --- keys and calls ---------------------------------------------------------------------

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, what: str, fn: Callable[..., T], **kwargs: Any) -> T:
        try:
            return fn(Bucket=self.bucket, **kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise _error(exc, what) from exc

    def _get_body(self, what: str, **kwargs: Any) -> tuple[bytes, dict[str, Any]]:
        """GET and read the body, retrying a body that breaks off midway (bounded backoff)."""
        for attempt in range(1, self.max_attempts + 1):
            response = self._call(what, self.client.get_object, **kwargs)
            try:
                return response["Body"].read(), response
            except TRANSIENT_BODY_ERRORS as exc:
                if attempt == self.max_attempts:
                    raise _error(exc, what) from exc
                time.sleep(min(2.0, 0.05 * 2**attempt) * random.uniform(0.5, 1.0))
            except BotoCoreError as exc:
                raise _error(exc, what) from exc
        raise AssertionError("unreachable")

    # --- reads ------------------------------------------------------------------------------

    def read(self, key: str, offset: int, length: int, *, if_match: str | None = None) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError(f"bad range offset={offset} length={length}")
        full = self._key(key)
        if length == 0:
            return b""
        extra = {"IfMatch": if_match} if if_match else {}
        what = f"reading {self.url}/{key}"
        body, response = self._get_body(what, Key=full, Range=f"bytes={offset}-{offset + length - 1}", **extra)
        if len(body) != length:
            total = _total_size(response)
            if total is not None and offset + length > total:
                raise RangeError(f"{what}: range {offset}+{length} runs past the end ({total} bytes)")
            raise StorageUnavailable(f"{what}: got {len(body)} of {length} bytes")
        return body

    def read_suffix(self, key: str, length: int, *, if_match: str | None = None) -> tuple[bytes, ObjectInfo]:
        full = self._key(key)
        what = f"reading {self.url}/{key}"
        if length <= 0:
            info = self.head(key)
            if if_match and info.etag != if_match:
                raise StaleObject(f"{what}: the object changed since it was opened")
            return b"", info
        extra = {"IfMatch": if_match} if if_match else {}
        try:
            body, response = self._get_body(what, Key=full, Range=f"bytes=-{length}", **extra)
        except RangeError:  # an empty object has no suffix to return
            info = self.head(key)
            return b"", info
        total = _total_size(response)
        size = total if total is not None else len(body)
        return body, ObjectInfo(key=key, size=size, etag=response["ETag"], modified=response.get("LastModified"))

    def head(self, key: str) -> ObjectInfo:
        response = self._call(f"looking up {self.url}/{key}", self.client.head_object, Key=self._key(key))
        return ObjectInfo(key=key, size=response["ContentLength"], etag=response["ETag"], modified=response.get("LastModified"))

    # --- writes -----------------------------------------------------------------------------

    def open_upload(self, key: str, *, content_type: str | None = None) -> Upload:
        return _S3Upload(self, key, self._key(key), content_type)

    def publish(self, staging: str, key: str) -> ObjectInfo:
        """Server-side copy (multipart for big objects), pinned to the staged version, then delete it."""
        source = self.head(staging)
        what = f"publishing {self.url}/{staging} as {key}"
        try:
            self.client.copy(
                {"Bucket": self.bucket, "Key": self._key(staging)}, self.bucket, self._key(key),
                ExtraArgs={"CopySourceIfMatch": source.etag},
            )
        except (ClientError, BotoCoreError) as exc:
            raise _error(exc, what) from exc
        published = self.head(key)
        if published.size != source.size:
            raise StorageError(f"{what}: the copy has {published.size} bytes, the staged object {source.size}")
        self.delete(staging)
        return published

    def delete(self, key: str) -> None:
        self._call(f"deleting {self.url}/{key}", self.client.delete_object, Key=self._key(key))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        base = f"{self.prefix}/" if self.prefix else ""
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=base + prefix):
                for item in page.get("Contents", []):
                    yield ObjectInfo(key=item["Key"][len(base) :], size=item["Size"], etag=item["ETag"], modified=item.get("LastModified"))
        except (ClientError, BotoCoreError) as exc:
            raise _error(exc, f"listing {self.url}/{prefix}") from exc

    def abort_stale_uploads(self, older_than_seconds: float) -> int:
        cutoff = datetime.now(timezone.utc) - timedelta(seconds=older_than_seconds)
        base = f"{self.prefix}/" if self.prefix else ""
        aborted = 0
        paginator = self.client.get_paginator("list_multipart_uploads")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=base):
                for upload in page.get("Uploads", []):
                    if upload["Initiated"] < cutoff:
                        self.client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                        aborted += 1
        except (ClientError, BotoCoreError) as exc:
            raise _error(exc, f"aborting abandoned uploads under {self.url}") from exc
        return aborted


def _total_size(response: dict[str, Any]) -> int | None:
    match = _CONTENT_RANGE.fullmatch(response.get("ContentRange") or "")
    if match and match.group(3) != "*":
        return int(match.group(3))
    if not response.get("ContentRange"):
        return response.get("ContentLength")
    return None


class _S3Upload(Upload):
    """A multipart upload created only once a whole part is buffered; small objects are one PUT."""

    def __init__(self, storage: S3Storage, key: str, full_key: str, content_type: str | None) -> None:
        self._s3 = storage
        self._key = key
        self._full = full_key
        self._extra = {"ContentType": content_type} if content_type else {}
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._size = 0
        self._done = False

    def _what(self) -> str:
        return f"writing {self._s3.url}/{self._key}"

    def write(self, data: bytes | memoryview) -> int:
        if self._done:
            raise StorageError(f"{self._what()}: the upload is already finished")
        self._buffer += data
        self._size += len(data)
        try:
            while len(self._buffer) >= self._s3.part_size:
                self._send_part(self._s3.part_size)
        except StorageError:
            self.abort()
            raise
        return len(data)

    def _send_part(self, length: int) -> None:
        s3 = self._s3
        if self._upload_id is None:
            created = s3._call(self._what(), s3.client.create_multipart_upload, Key=self._full, **self._extra)
            self._upload_id = created["UploadId"]
        if len(self._parts) >= MAX_PARTS:
            raise StorageError(f"{self._what()}: more than {MAX_PARTS} parts; raise the part size")
        number = len(self._parts) + 1
        body = bytes(self._buffer[:length])
        del self._buffer[:length]
        sent = s3._call(self._what(), s3.client.upload_part, Key=self._full, UploadId=self._upload_id, PartNumber=number, Body=body)
        self._parts.append({"PartNumber": number, "ETag": sent["ETag"]})

    def commit(self) -> ObjectInfo:
        if self._done:
            raise StorageError(f"{self._what()}: the upload is already finished")
        s3 = self._s3
        try:
            if self._upload_id is None:
                done = s3._call(self._what(), s3.client.put_object, Key=self._full, Body=bytes(self._buffer), **self._extra)
            else:
                if self._buffer:
                    self._send_part(len(self._buffer))
                done = s3._call(
                    self._what(), s3.client.complete_multipart_upload,
                    Key=self._full, UploadId=self._upload_id, MultipartUpload={"Parts": self._parts},
                )
        except StorageError:
            self.abort()
            raise
        self._done = True
        self._buffer = bytearray()
        return ObjectInfo(key=self._key, size=self._size, etag=done["ETag"], modified=None)

    def abort(self) -> None:
        self._done = True
        self._buffer = bytearray()
        if self._upload_id is not None:
            upload_id, self._upload_id = self._upload_id, None
            try:
                self._s3.client.abort_multipart_upload(Bucket=self._s3.bucket, Key=self._full, UploadId=upload_id)
            except (ClientError, BotoCoreError):
                pass  # `desq recover` aborts what is left (abort_stale_uploads)
