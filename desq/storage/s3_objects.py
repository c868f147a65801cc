"""Requests to S3 objects of any bucket: the one client construction, retry policy and error mapping.

``S3Storage`` (an archive under ``s3://bucket/prefix``) and the fetcher of ``s3://bucket/key``
originals both go through ``S3Objects``. Request retries (500/503/SlowDown/throttling, timeouts,
dropped connections) are botocore's "standard" mode with its bounded exponential backoff; a response
body that breaks off while it is read is fetched again here with the same kind of backoff.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO, TypeVar, cast

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

from desq.errors import one_line
from desq.storage.base import (
    AccessDenied,
    BucketNotFound,
    NoCredentials,
    NotFound,
    RangeError,
    StaleObject,
    StorageError,
    StorageUnavailable,
)

T = TypeVar("T")

TRANSIENT_BODY_ERRORS = (IncompleteReadError, ResponseStreamingError, ReadTimeoutError, ConnectionClosedError)
"""Failures of a response body while it is read: worth reading it again."""
_UNAVAILABLE = (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError)
_BUSY = ("SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling")
FINISH_READ_TIMEOUT = 600.0
"""Seconds to wait for the answer to a CompleteMultipartUpload: S3 may take minutes to assemble a big
object (AWS says so), and a retry after a lost answer finds the upload gone."""
_NO_CREDENTIALS = "no S3 credentials (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile)"


def s3_error(exc: Exception, what: str) -> StorageError:
    """A botocore failure as desq's typed storage error: ``what: ...``, and a ``reason`` without ``what``."""
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        message = err.get("Message") or code
        answered = f"S3 answered {status} {code}: {one_line(message)}"
        if code in ("NoSuchKey", "404", "NotFound"):
            return NotFound(f"{what}: no such object", reason="no such object")
        if code == "PreconditionFailed" or status == 412:
            return StaleObject(f"{what}: the object changed since it was opened", reason="the object changed since it was opened")
        if code == "InvalidRange" or status == 416:
            return RangeError(f"{what}: the range runs past the end of the object", reason=answered)
        if code == "NoSuchBucket":
            return BucketNotFound(f"{what}: the bucket does not exist", reason="no such bucket")
        if status >= 500 or code in _BUSY:
            return StorageUnavailable(f"{what}: S3 answered {status} {code} after retries", reason=answered)
        if code in ("AccessDenied", "403", "Forbidden") or status == 403:
            return AccessDenied(f"{what}: S3 answered {status} {code}: {message}", reason="access denied")
        return StorageError(f"{what}: S3 answered {status} {code}: {message}", reason=answered)
    if isinstance(exc, NoCredentialsError):
        return NoCredentials(f"{what}: {_NO_CREDENTIALS}", reason=_NO_CREDENTIALS)
    raised = f"{type(exc).__name__}: {one_line(exc)}"
    if isinstance(exc, _UNAVAILABLE) or isinstance(exc, TRANSIENT_BODY_ERRORS):
        return StorageUnavailable(f"{what}: {type(exc).__name__} after retries", reason=raised)
    return StorageError(f"{what}: {type(exc).__name__}: {exc}", reason=raised)


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
    with _SESSION_LOCK:  # a boto3 session is not thread-safe; the clients it makes are
        return _session().client("s3", endpoint_url=endpoint_url or None, config=config)


_SESSION_LOCK = threading.Lock()
_SESSIONS: dict[tuple[int, tuple[tuple[str, str], ...]], boto3.session.Session] = {}


def _session() -> boto3.session.Session:
    """This process's boto3 session for the current ``AWS_*`` environment (call with the lock held).

    One session finds the credentials (and botocore logs where it found them) once, and loads the
    S3 service model once, not for every client a packer or storage makes. A forked child, or a
    changed ``AWS_*`` environment, gets a session of its own."""
    key = (os.getpid(), tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_"))))
    session = _SESSIONS.get(key)
    if session is None:
        _SESSIONS.clear()
        session = _SESSIONS[key] = boto3.session.Session()
    return session


@dataclass(frozen=True, slots=True)
class OpenedObject:
    """An answered GET: the object's headers, its body not read yet (read it, or close ``body``)."""

    response: dict[str, Any]
    request: dict[str, Any] = field(repr=False)
    """What was asked (Bucket, Key, Range, IfMatch): asked again if the body breaks off."""

    @property
    def size(self) -> int:
        """The bytes the body has (of the range, for a ranged GET)."""
        return int(self.response["ContentLength"])

    @property
    def etag(self) -> str | None:
        return self.response.get("ETag")

    @property
    def content_type(self) -> str | None:
        return self.response.get("ContentType")

    @property
    def body(self) -> BinaryIO:
        return cast(BinaryIO, self.response["Body"])


class S3Objects:
    """S3 requests by bucket and key through one client; every failure is a typed StorageError."""

    def __init__(self, endpoint_url: str = "", *, max_attempts: int = 5, client: Any = None, **client_options: Any) -> None:
        """Through ``client``, else one ``s3_client(endpoint_url, max_attempts=..., **client_options)`` makes."""
        self.max_attempts = max_attempts
        """Attempts of every request (botocore's retries), and of a body that breaks off."""
        self._own_client = client is None
        self._endpoint_url = endpoint_url
        self._client_options = client_options
        if client is None:
            client = self._make_client(client_options)
        self.client = client
        self._patient: Any = None if self._own_client else client

    def _make_client(self, options: dict[str, Any]) -> Any:
        try:
            return s3_client(self._endpoint_url, max_attempts=self.max_attempts, **options)
        except (BotoCoreError, ValueError) as exc:
            raise StorageError(f"cannot make an S3 client: {one_line(exc)}") from exc

    @property
    def patient_client(self) -> Any:
        """A client that waits ``FINISH_READ_TIMEOUT`` for an answer: for requests S3 may take minutes
        over (CompleteMultipartUpload). The same client when one was given."""
        if self._patient is None:
            read_timeout = max(FINISH_READ_TIMEOUT, float(self._client_options.get("read_timeout", 30.0)))
            self._patient = self._make_client(self._client_options | {"read_timeout": read_timeout})
        return self._patient

    def call(self, what: str, fn: Callable[..., T], **kwargs: Any) -> T:
        """``fn(**kwargs)`` (a method of ``client``), its failure mapped to a StorageError about ``what``."""
        try:
            return fn(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise s3_error(exc, what) from exc

    def get(self, what: str, bucket: str, key: str, *, if_match: str | None = None, **request: Any) -> OpenedObject:
        """GET an object (``Range=`` and such in ``request``); StaleObject if it is no longer ``if_match``."""
        request = {"Bucket": bucket, "Key": key, **request} | ({"IfMatch": if_match} if if_match else {})
        return OpenedObject(self.call(what, self.client.get_object, **request), request)

    def read_body(self, what: str, opened: OpenedObject, *, pin: bool = False) -> tuple[bytes, OpenedObject]:
        """The whole body of ``opened``, and the GET that delivered it.

        A body that breaks off is asked for again (bounded backoff, ``max_attempts`` in all); with
        ``pin``, only from the version first answered (StaleObject if the object was replaced).
        """
        request = opened.request | ({"IfMatch": opened.etag} if pin and opened.etag else {})
        for attempt in range(1, self.max_attempts + 1):
            try:
                return opened.body.read(), opened
            except TRANSIENT_BODY_ERRORS as exc:
                opened.body.close()
                if attempt == self.max_attempts:
                    name = type(exc).__name__
                    raise StorageUnavailable(
                        f"{what}: {name} after retries", reason=f"the download broke off {attempt} times ({name})",
                    ) from exc
                time.sleep(min(2.0, 0.05 * 2**attempt) * random.uniform(0.5, 1.0))
                opened = OpenedObject(self.call(what, self.client.get_object, **request), request)
            except BotoCoreError as exc:
                raise s3_error(exc, what) from exc
        raise AssertionError("unreachable")

    def delete(self, what: str, bucket: str, key: str) -> None:
        """Delete an object; no error if it is already gone."""
        self.call(what, self.client.delete_object, Bucket=bucket, Key=key)

    def close(self) -> None:
        """Close the client if it was made here (a client passed in belongs to its owner)."""
        if self._own_client:
            for client in (self.client, self._patient):
                if client is not None and hasattr(client, "close"):
                    client.close()
