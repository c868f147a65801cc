"""web/s3.py through Flask's test client: every operation's answer, byte for byte and header by
header, against the files API on the same archive; writes refused with the archive unchanged."""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import quote

import pytest
from flask.testing import FlaskClient
from werkzeug.http import http_date

from desq.container import ContainerWriter
from desq.settings import load_settings
from desq.storage.local import LocalStorage
from archives import pack
from s3_fixtures import key_of, sample_files, snapshot
from web import create_app

FILES = sample_files()
NS = {"s3": "http://s3.amazonaws.com/doc/2006-03-01/"}


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    pack(LocalStorage(tmp_path / "archive"), FILES)
    return tmp_path / "archive"


@pytest.fixture
def client(archive: Path) -> FlaskClient:
    return create_app(load_settings(env={"DESQ_ARCHIVE_URL": str(archive)}), role="s3").test_client()


def error_code(response) -> str:  # noqa: ANN001
    assert response.content_type == "application/xml", response.data
    root = ET.fromstring(response.data)
    assert root.tag == "Error" and root.find("RequestId").text == response.headers["x-amz-request-id"]
    return root.find("Code").text


def listed(client: FlaskClient, **args: str) -> ET.Element:
    response = client.get("/desq", query_string=args)
    assert response.status_code == 200, response.data
    return ET.fromstring(response.data)


def keys_of(root: ET.Element) -> list[str]:
    return [c.find("s3:Key", NS).text for c in root.findall("s3:Contents", NS)]


def test_get_object_answers_as_the_files_api(client: FlaskClient, archive: Path) -> None:
    files_api = create_app(load_settings(env={"DESQ_ARCHIVE_URL": str(archive)})).test_client()
    for name in ("20251120_1", "20251121_big", "20251121_zażółć", "20251121_a b+c&d", "20251121_empty"):
        data, content_type, created = FILES[name]
        response = client.get("/desq/" + quote(key_of(name)))
        assert response.status_code == 200 and response.data == data
        assert response.headers["ETag"] == files_api.get("/files/" + quote(name)).headers["ETag"]
        assert response.headers["Content-Type"] == (content_type or "application/octet-stream")
        assert response.headers["Last-Modified"] == http_date(created)
        assert response.headers["Content-Length"] == str(len(data)) and response.headers["Accept-Ranges"] == "bytes"
        head = client.head("/desq/" + quote(key_of(name)))
        assert head.status_code == 200 and head.data == b""
        assert {k: head.headers[k] for k in ("ETag", "Content-Length", "Last-Modified")} == {k: response.headers[k] for k in ("ETag", "Content-Length", "Last-Modified")}


def test_ranges(client: FlaskClient) -> None:
    big = FILES["20251121_big"][0]
    path = "/desq/20251121/20251121_big"
    for header, part, content_range in (
        ("bytes=10-99", big[10:100], f"bytes 10-99/{len(big)}"),
        ("bytes=2097152-", big[2097152:], f"bytes 2097152-{len(big) - 1}/{len(big)}"),
        ("bytes=-7", big[-7:], f"bytes {len(big) - 7}-{len(big) - 1}/{len(big)}"),
    ):
        response = client.get(path, headers={"Range": header})
        assert (response.status_code, response.data, response.headers["Content-Range"]) == (206, part, content_range)
        assert response.headers["Content-Length"] == str(len(part))
    head = client.head(path, headers={"Range": "bytes=0-9"})
    assert (head.status_code, head.headers["Content-Length"], head.headers["Content-Range"]) == (206, "10", f"bytes 0-9/{len(big)}")
    assert client.get(path, headers={"Range": "bytes=0-1,5-6"}).data == big
    bad = client.get("/desq/20251120/20251120_1", headers={"Range": "bytes=100-"})
    assert (bad.status_code, error_code(bad), bad.headers["Content-Range"]) == (416, "InvalidRange", "bytes */14")


def test_conditions(client: FlaskClient) -> None:
    path = "/desq/20251120/20251120_3"
    first = client.get(path)
    etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
    assert client.get(path, headers={"If-None-Match": etag}).status_code == 304
    assert client.get(path, headers={"If-Modified-Since": modified}).status_code == 304
    assert client.get(path, headers={"If-Match": etag}).data == FILES["20251120_3"][0]
    refused = client.get(path, headers={"If-Match": '"other"'})
    assert (refused.status_code, error_code(refused)) == (412, "PreconditionFailed")
    assert client.get(path, headers={"If-Unmodified-Since": "Mon, 01 Jan 2024 00:00:00 GMT"}).status_code == 412
    assert client.get(path, headers={"If-Match": '"other"', "Range": "bytes=999-"}).status_code == 412  # before the 416
    assert client.get(path, headers={"If-None-Match": etag, "Range": "bytes=999-"}).status_code == 304
    not_modified = client.head(path, headers={"If-None-Match": etag})
    assert not_modified.status_code == 304 and not_modified.headers["ETag"] == etag


def test_missing_keys_and_buckets(client: FlaskClient) -> None:
    for path in ("/desq/20251120/20251120_999", "/desq/20251121/20251120_1", "/desq/20251119/x", "/desq/20251120/not-a-name", "/desq/30001120/30001120_1"):
        response = client.get(path)
        assert (response.status_code, error_code(response)) == (404, "NoSuchKey"), path
    assert client.head("/desq/20251120/20251120_999").status_code == 404
    for path in ("/other", "/other/20251120/20251120_1", "/Desq"):
        response = client.get(path)
        assert (response.status_code, error_code(response)) == (404, "NoSuchBucket")


def test_buckets(client: FlaskClient) -> None:
    root = ET.fromstring(client.get("/").data)
    assert [b.text for b in root.findall("s3:Buckets/s3:Bucket/s3:Name", NS)] == ["desq"]
    head = client.head("/desq")
    assert head.status_code == 200 and head.headers["x-amz-bucket-region"] == "us-east-1"
    assert ET.fromstring(client.get("/desq?location").data).tag == f"{{{NS['s3']}}}LocationConstraint"


def test_listing_pages_through_every_key_in_utf8_order(client: FlaskClient) -> None:
    expected = sorted((key_of(name) for name in FILES), key=lambda k: k.encode())
    seen: list[str] = []
    args = {"list-type": "2", "max-keys": "60"}
    while True:
        root = listed(client, **args)
        seen += keys_of(root)
        if root.find("s3:IsTruncated", NS).text == "false":
            break
        args["continuation-token"] = root.find("s3:NextContinuationToken", NS).text
    assert seen == expected
    assert keys_of(listed(client, **{"list-type": "2", "start-after": "20251120/20251120_99"})) == [k for k in expected if k.encode() > b"20251120/20251120_99"]
    v1 = listed(client, marker="20251121/20251121_big", prefix="20251121/")
    assert keys_of(v1) == [k for k in expected if k.startswith("20251121/") and k.encode() > b"20251121/20251121_big"]
    days = listed(client, **{"list-type": "2", "delimiter": "/"})
    assert [p.text for p in days.findall("s3:CommonPrefixes/s3:Prefix", NS)] == ["20251120/", "20251121/"] and keys_of(days) == []
    encoded = listed(client, **{"list-type": "2", "prefix": "20251121/20251121_a", "encoding-type": "url"})
    assert keys_of(encoded) == ["20251121/20251121_a%20b%2Bc%26d"]
    empty = listed(client, **{"list-type": "2", "max-keys": "0"})
    assert keys_of(empty) == [] and empty.find("s3:IsTruncated", NS).text == "false"


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("list-type=2&continuation-token=forged", "InvalidArgument"),
        ("list-type=2&continuation-token=", "InvalidArgument"),
        ("list-type=2&max-keys=-1", "InvalidArgument"),
        ("list-type=2&max-keys=1e9", "InvalidArgument"),
        ("list-type=2&encoding-type=xml", "InvalidArgument"),
        ("list-type=7", "InvalidArgument"),
        ("acl", "InvalidRequest"),
        ("versions", "InvalidRequest"),
    ],
)
def test_bad_listing_requests(client: FlaskClient, query: str, code: str) -> None:
    response = client.get("/desq?" + query)
    assert (response.status_code, error_code(response)) == (400, code)


def test_every_write_is_refused_and_changes_nothing(client: FlaskClient, archive: Path) -> None:
    before = snapshot(archive)
    for method, path in (
        ("PUT", "/desq/20251120/20251120_1"), ("PUT", "/desq/20251122/new"), ("PUT", "/desq"), ("PUT", "/newbucket"),
        ("DELETE", "/desq/20251120/20251120_1"), ("DELETE", "/desq"), ("POST", "/desq?delete"),
        ("POST", "/desq/20251120/x?uploads"), ("PUT", "/desq/20251120/x?partNumber=1&uploadId=u"),
        ("PUT", "/desq/20251120/20251120_1?acl"), ("PUT", "/desq/20251120/20251120_1?tagging"), ("PATCH", "/desq/20251120/20251120_1"),
    ):
        response = client.open(path, method=method, data=b"new bytes" * 100)
        assert (response.status_code, error_code(response)) == (403, "AccessDenied"), (method, path)
    assert client.open("/desq", method="OPTIONS").status_code == 405
    assert client.open("/desq", method="PROPFIND").status_code == 405
    assert snapshot(archive) == before


def test_health_and_metrics_are_the_roles_own_paths(client: FlaskClient) -> None:
    assert client.get("/healthz").json == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    client.get("/desq/20251120/20251120_1")
    client.get("/desq", query_string={"list-type": "2", "max-keys": "5"})
    client.put("/desq/20251120/x")
    text = client.get("/metrics").data.decode()
    assert re.search(r'^desq_s3_requests_total\{operation="GetObject",status="200"\} [1-9]', text, flags=re.M)
    assert re.search(r'^desq_s3_requests_total\{operation="Write",status="403"\} [1-9]', text, flags=re.M)
    assert re.search(r'^desq_s3_listing_storage_requests_total\{op="[a-z_]+"\} [1-9]', text, flags=re.M)


def test_a_corrupted_member_is_an_internal_error_without_its_bytes(client: FlaskClient, archive: Path) -> None:
    key = load_settings(env={}).layout.locate_name("20251120_5").container
    path = archive / key
    data = bytearray(path.read_bytes())
    data[data.index(FILES["20251120_5"][0])] ^= 0x01
    path.write_bytes(bytes(data))
    response = client.get("/desq/20251120/20251120_5")
    assert (response.status_code, error_code(response)) == (500, "InternalError") and b"file 5" not in response.data


def test_uid_mode_keys_are_the_created_at_day(tmp_path: Path) -> None:
    env = {"DESQ_MODE": "uid", "DESQ_ARCHIVE_URL": str(tmp_path / "archive")}
    layout = load_settings(env=env).layout
    storage = LocalStorage(tmp_path / "archive")
    where = layout.locate_uid("123456789", "2025-11-20T10:00:00")
    out = io.BytesIO()
    with ContainerWriter(out) as writer:
        writer.add("123456789", b"uid bytes")
    storage.put(where.container, out.getvalue())
    client = create_app(load_settings(env=env), role="s3").test_client()
    assert client.get("/desq/20251120/123456789").data == b"uid bytes"  # no cutoff published: still read from its container
    for path in ("/desq/20251121/123456789", "/desq/20251120/0123456789", "/desq/20251120/abc"):
        assert client.get(path).status_code == 404, path
