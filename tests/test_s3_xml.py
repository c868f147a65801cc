"""desq.s3.xml: S3's bodies, parsed back as a client parses them."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from desq.s3 import xml
from desq.s3.requests import ListParams

NS = {"s3": xml.NS}


@dataclass
class Entry:  # the shape of desq.s3.listing's Entry and Page
    key: str
    size: int
    last_modified: datetime


@dataclass
class Page:
    entries: list[Entry]
    common_prefixes: list[str]
    truncated: bool
    next_after: str | None


WHEN = datetime(2025, 11, 20, 9, 30, 1, 234_567, tzinfo=timezone(timedelta(hours=1)))
PAGE = Page([Entry("20251120/a+b & <c>", 5, WHEN), Entry("20251120/zażółć", 0, WHEN)], ["20251121/"], True, "20251121/")


def parse(body: bytes) -> ET.Element:
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    return ET.fromstring(body)


def test_error_document() -> None:
    root = parse(xml.error("NoSuchKey", "no <such> key", "/desq/20251120/x&y", "ABC"))
    assert root.tag == "Error"
    assert [(c.tag, c.text) for c in root] == [("Code", "NoSuchKey"), ("Message", "no <such> key"), ("Resource", "/desq/20251120/x&y"), ("RequestId", "ABC")]


def test_characters_xml_cannot_carry_are_replaced() -> None:
    root = parse(xml.error("InvalidArgument", "bad", "/desq/a\x00b\x1b\ufffe", "ABC"))
    assert root.find("Resource").text == "/desq/a\ufffdb\ufffd\ufffd"


def test_list_buckets_and_location() -> None:
    root = parse(xml.list_buckets("desq", WHEN))
    assert root.tag == f"{{{xml.NS}}}ListAllMyBucketsResult"
    assert root.find("s3:Buckets/s3:Bucket/s3:Name", NS).text == "desq"
    assert root.find("s3:Buckets/s3:Bucket/s3:CreationDate", NS).text == "2025-11-20T08:30:01.234Z"
    assert parse(xml.location("us-east-1")).text is None
    assert parse(xml.location("eu-central-1")).text == "eu-central-1"


def test_list_v2() -> None:
    params = ListParams(version=2, prefix="2025", delimiter="/", max_keys=3, start_after="2025", token="tok")
    root = parse(xml.list_bucket("desq", params, PAGE, next_token="next"))
    get = lambda path: root.find(path, NS).text  # noqa: E731
    assert (get("s3:Name"), get("s3:Prefix"), get("s3:StartAfter"), get("s3:ContinuationToken")) == ("desq", "2025", "2025", "tok")
    assert (get("s3:KeyCount"), get("s3:MaxKeys"), get("s3:Delimiter"), get("s3:IsTruncated"), get("s3:NextContinuationToken")) == ("3", "3", "/", "true", "next")
    contents = root.findall("s3:Contents", NS)
    assert [c.find("s3:Key", NS).text for c in contents] == ["20251120/a+b & <c>", "20251120/zażółć"]
    assert contents[0].find("s3:Size", NS).text == "5" and contents[0].find("s3:LastModified", NS).text == "2025-11-20T08:30:01.234Z"
    assert contents[0].find("s3:ETag", NS) is None and contents[0].find("s3:Owner", NS) is None
    assert [p.text for p in root.findall("s3:CommonPrefixes/s3:Prefix", NS)] == ["20251121/"]
    assert root.find("s3:NextMarker", NS) is None and root.find("s3:EncodingType", NS) is None


def test_list_v2_url_encoded() -> None:
    params = ListParams(version=2, prefix="2025 11", delimiter="/", encode_url=True, fetch_owner=True)
    root = parse(xml.list_bucket("desq", params, PAGE))
    assert root.find("s3:EncodingType", NS).text == "url" and root.find("s3:Prefix", NS).text == "2025%2011"
    assert [c.find("s3:Key", NS).text for c in root.findall("s3:Contents", NS)] == ["20251120/a%2Bb%20%26%20%3Cc%3E", "20251120/za%C5%BC%C3%B3%C5%82%C4%87"]
    assert root.find("s3:Contents/s3:Owner/s3:ID", NS).text == "desq"


def test_list_v1_has_next_marker_only_with_a_delimiter() -> None:
    with_delimiter = parse(xml.list_bucket("desq", ListParams(version=1, delimiter="/", marker="m", fetch_owner=True), PAGE))
    assert with_delimiter.find("s3:Marker", NS).text == "m" and with_delimiter.find("s3:NextMarker", NS).text == "20251121/"
    assert with_delimiter.find("s3:KeyCount", NS) is None
    plain = parse(xml.list_bucket("desq", ListParams(version=1), PAGE))
    assert plain.find("s3:NextMarker", NS) is None and plain.find("s3:Marker", NS).text is None
    done = parse(xml.list_bucket("desq", ListParams(version=1, delimiter="/"), Page([], [], False, None)))
    assert done.find("s3:IsTruncated", NS).text == "false" and done.find("s3:NextMarker", NS) is None
