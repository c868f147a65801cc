"""desq.s3.requests: which operation a request is, its checked parameters, conditions and ranges."""

from __future__ import annotations

from datetime import date, datetime, timezone

import pytest

from desq.s3.requests import ListParams, S3Error, byte_range, decide, list_params, listing_after, parse_key, preconditions


def code_of(fn, *args) -> tuple[str, int]:  # noqa: ANN001
    with pytest.raises(S3Error) as info:
        fn(*args)
    return info.value.code, info.value.status


@pytest.mark.parametrize(
    ("method", "path", "args", "name"),
    [
        ("GET", "/", {}, "ListBuckets"),
        ("HEAD", "/desq", {}, "HeadBucket"),
        ("HEAD", "/desq/", {}, "HeadBucket"),
        ("GET", "/desq", {"location": ""}, "GetBucketLocation"),
        ("GET", "/desq", {"list-type": "2", "fetch-owner": "true"}, "ListObjectsV2"),
        ("GET", "/desq/", {}, "ListObjects"),
        ("GET", "/desq/20251120/20251120_1", {"x-id": "GetObject"}, "GetObject"),
        ("HEAD", "/desq/20251120/20251120_1", {}, "HeadObject"),
    ],
)
def test_operations(method: str, path: str, args: dict[str, str], name: str) -> None:
    assert decide(method, path, args, "desq").name == name


def test_an_object_is_located_by_its_key() -> None:
    op = decide("GET", "/desq/20251120/20251120_zażółć", {}, "desq")
    assert (op.key, op.day, op.member) == ("20251120/20251120_zażółć", date(2025, 11, 20), "20251120_zażółć")


@pytest.mark.parametrize(
    ("method", "path", "args"),
    [
        ("PUT", "/desq/20251120/x", {}),
        ("PUT", "/desq", {}),
        ("PUT", "/desq/20251120/x", {"acl": ""}),
        ("PUT", "/desq/20251120/x", {"tagging": ""}),
        ("POST", "/desq", {"delete": ""}),
        ("POST", "/desq/20251120/x", {"uploads": ""}),
        ("PUT", "/desq/20251120/x", {"partNumber": "1", "uploadId": "u"}),
        ("DELETE", "/desq/20251120/20251120_1", {}),
        ("DELETE", "/desq", {}),
        ("PUT", "/other-bucket", {}),
        ("PATCH", "/desq/20251120/x", {}),
    ],
)
def test_every_write_is_access_denied(method: str, path: str, args: dict[str, str]) -> None:
    assert code_of(decide, method, path, args, "desq") == ("AccessDenied", 403)


@pytest.mark.parametrize(
    ("method", "path", "args", "code"),
    [
        ("OPTIONS", "/desq", {}, "MethodNotAllowed"),
        ("PROPFIND", "/desq", {}, "MethodNotAllowed"),
        ("HEAD", "/", {}, "MethodNotAllowed"),
        ("GET", "/other", {}, "NoSuchBucket"),
        ("GET", "/desq2/20251120/x", {}, "NoSuchBucket"),
        ("GET", "/healthz2", {}, "NoSuchBucket"),
        ("GET", "/desq", {"acl": ""}, "InvalidRequest"),
        ("GET", "/desq/20251120/20251120_1", {"tagging": ""}, "InvalidRequest"),
        ("GET", "/desq", {"versions": ""}, "InvalidRequest"),
        ("GET", "/desq", {"list-type": "3"}, "InvalidArgument"),
        ("GET", "/desq", {"list-type": ""}, "InvalidArgument"),
        ("GET", "/desq/20251120/..", {}, "InvalidArgument"),
        ("GET", "/desq/../20251120/x", {}, "InvalidArgument"),
        ("GET", "/desq/20251120/x\x00y", {}, "InvalidArgument"),
        ("GET", "/desq/20251120/x\ufffd", {}, "InvalidArgument"),
        ("GET", "/desq/20251120/" + "x" * 1020, {}, "KeyTooLongError"),
        ("GET", "/desq/20251120", {}, "NoSuchKey"),
        ("GET", "/desq/20251120/", {}, "NoSuchKey"),
        ("GET", "/desq/20251120/a/b", {}, "NoSuchKey"),
        ("GET", "/desq/20251340/x", {}, "NoSuchKey"),
        ("GET", "/desq/notaday/x", {}, "NoSuchKey"),
    ],
)
def test_refused_reads(method: str, path: str, args: dict[str, str], code: str) -> None:
    assert code_of(decide, method, path, args, "desq")[0] == code


def test_a_key_of_1024_bytes_is_a_key() -> None:
    key = "20251120/" + "é" * 507 + "x"
    assert len(key.encode()) == 1024 and parse_key(key)[1].endswith("x")


@pytest.mark.parametrize(
    ("args", "code_or_value"),
    [
        ({}, 1000),
        ({"max-keys": "0"}, 0),
        ({"max-keys": "7"}, 7),
        ({"max-keys": "1000"}, 1000),
        ({"max-keys": "1001"}, 1000),
        ({"max-keys": "2147483647"}, 1000),
        ({"max-keys": "2147483648"}, "InvalidArgument"),
        ({"max-keys": "99999999999999999999999"}, "InvalidArgument"),
        ({"max-keys": "-1"}, "InvalidArgument"),
        ({"max-keys": "ten"}, "InvalidArgument"),
        ({"max-keys": "1e3"}, "InvalidArgument"),
        ({"max-keys": ""}, "InvalidArgument"),
    ],
)
def test_max_keys(args: dict[str, str], code_or_value: object) -> None:
    if isinstance(code_or_value, int):
        assert list_params(args, 2).max_keys == code_or_value
    else:
        assert code_of(list_params, args, 2)[0] == code_or_value


def test_listing_parameters() -> None:
    params = list_params({"prefix": "20251120/", "delimiter": "/", "start-after": "20251120/a", "encoding-type": "url", "continuation-token": "t"}, 2)
    assert params == ListParams(version=2, prefix="20251120/", delimiter="/", start_after="20251120/a", token="t", encode_url=True)
    assert list_params({"delimiter": ""}, 2).delimiter is None
    v1 = list_params({"marker": "20251120/b", "start-after": "ignored", "continuation-token": "ignored"}, 1)
    assert (v1.marker, v1.start_after, v1.token, v1.fetch_owner) == ("20251120/b", "", None, True)
    for bad in ({"encoding-type": "xml"}, {"encoding-type": ""}, {"continuation-token": ""}, {"prefix": "x" * 1025}, {"start-after": "a\x00"}):
        assert code_of(list_params, bad, 2)[0] == "InvalidArgument"


def test_listing_starts_after_the_later_of_start_after_and_the_token() -> None:
    def decode(token: str) -> str:
        if token != "good":
            raise ValueError("forged")
        return "20251120/m"

    assert listing_after(ListParams(version=2, start_after="20251120/a"), decode) == "20251120/a"
    assert listing_after(ListParams(version=2, start_after="20251120/a", token="good"), decode) == "20251120/m"
    assert listing_after(ListParams(version=2, start_after="20251121/", token="good"), decode) == "20251121/"
    assert listing_after(ListParams(version=1, marker="20251120/c"), decode) == "20251120/c"
    with pytest.raises(S3Error) as info:
        listing_after(ListParams(version=2, token="forged"), decode)
    assert (info.value.code, info.value.message) == ("InvalidArgument", "The continuation token provided is incorrect")


MODIFIED = datetime(2025, 11, 20, 8, 30, 0, 500_000, tzinfo=timezone.utc)
BEFORE, AT, AFTER = "Thu, 20 Nov 2025 08:29:59 GMT", "Thu, 20 Nov 2025 08:30:00 GMT", "Thu, 20 Nov 2025 08:30:01 GMT"


@pytest.mark.parametrize(
    ("headers", "verdict"),
    [
        ({}, None),
        ({"If-Match": '"e1"'}, None),
        ({"If-Match": '"x", "e1"'}, None),
        ({"If-Match": "*"}, None),
        ({"If-Match": '"x"'}, 412),
        ({"If-Unmodified-Since": AT}, None),
        ({"If-Unmodified-Since": BEFORE}, 412),
        ({"If-Match": '"e1"', "If-Unmodified-Since": BEFORE}, None),  # If-Match decides alone
        ({"If-None-Match": '"e1"'}, 304),
        ({"If-None-Match": 'W/"e1"'}, 304),
        ({"If-None-Match": "*"}, 304),
        ({"If-None-Match": '"x"'}, None),
        ({"If-Modified-Since": AT}, 304),
        ({"If-Modified-Since": AFTER}, 304),
        ({"If-Modified-Since": BEFORE}, None),
        ({"If-None-Match": '"x"', "If-Modified-Since": AT}, None),  # If-None-Match decides alone
        ({"If-None-Match": '"e1"', "If-Modified-Since": BEFORE}, 304),
        ({"If-Match": '"x"', "If-None-Match": '"e1"'}, 412),  # 412 before 304
        ({"If-Modified-Since": "yesterday"}, None),
        ({"If-Unmodified-Since": "Thu, 99 Nov 2025 08:30:00 GMT"}, None),
    ],
)
def test_preconditions_in_rfc_9110_order(headers: dict[str, str], verdict: int | None) -> None:
    assert preconditions(headers, "e1", MODIFIED) == verdict


def test_dates_are_left_out_for_a_file_without_a_time() -> None:
    assert preconditions({"If-Unmodified-Since": BEFORE, "If-Modified-Since": AFTER}, "e1", None) is None


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 10, None),
        ("bytes=0-3", 10, (0, 4)),
        ("bytes=2-", 10, (2, 10)),
        ("bytes=-3", 10, (7, 10)),
        ("bytes=-30", 10, (0, 10)),
        ("bytes=5-500", 10, (5, 10)),
        ("bytes=9-9", 10, (9, 10)),
        ("bytes=0-1,3-4", 10, None),
        ("bytes=5-2", 10, None),
        ("bytes=-", 10, None),
        ("items=0-3", 10, None),
        ("garbage", 10, None),
        ("bytes=10-", 10, "InvalidRange"),
        ("bytes=99999999999999999999999-", 10, "InvalidRange"),
        ("bytes=-0", 10, "InvalidRange"),
        ("bytes=0-0", 0, "InvalidRange"),
        ("bytes=-5", 0, "InvalidRange"),
    ],
)
def test_byte_ranges(header: str | None, size: int, expected: object) -> None:
    if isinstance(expected, str):
        with pytest.raises(S3Error) as info:
            byte_range(header, size)
        assert (info.value.code, info.value.status, info.value.headers) == ("InvalidRange", 416, {"Content-Range": f"bytes */{size}"})
    else:
        assert byte_range(header, size) == expected
