"""How S3Objects names S3's failures: the archive's messages, and a reason without the request."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from desq.storage import AccessDenied, BucketNotFound, NoCredentials, NotFound, StorageError, StorageUnavailable
from desq.storage.s3_objects import s3_error


def _client_error(status: int, code: str, message: str = "") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")


@pytest.mark.parametrize(("exc", "kind", "message", "reason"), [
    (_client_error(404, "NoSuchKey"), NotFound, "reading x: no such object", "no such object"),
    (_client_error(404, "NoSuchBucket"), BucketNotFound, "reading x: the bucket does not exist", "no such bucket"),
    (_client_error(403, "AccessDenied", "Access Denied"), AccessDenied, "reading x: S3 answered 403 AccessDenied: Access Denied", "access denied"),
    (_client_error(503, "SlowDown", "Slow\ndown"), StorageUnavailable, "reading x: S3 answered 503 SlowDown after retries", "S3 answered 503 SlowDown: Slow down"),
    (_client_error(400, "Odd", "Odd"), StorageError, "reading x: S3 answered 400 Odd: Odd", "S3 answered 400 Odd: Odd"),
    (EndpointConnectionError(endpoint_url="http://h"), StorageUnavailable, "reading x: EndpointConnectionError after retries",
     'EndpointConnectionError: Could not connect to the endpoint URL: "http://h"'),
    (NoCredentialsError(), NoCredentials, "reading x: no S3 credentials (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile)",
     "no S3 credentials (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile)"),
])
def test_s3_failures_are_typed_and_worded(exc: Exception, kind: type[StorageError], message: str, reason: str) -> None:
    error = s3_error(exc, "reading x")
    assert type(error) is kind and str(error) == message and error.reason == reason


def test_a_storage_error_raised_by_hand_gives_its_message_as_reason() -> None:
    assert StorageError("whole message").reason == "whole message"
