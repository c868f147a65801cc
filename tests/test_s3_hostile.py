"""Hostile input through the s3 role, a real gunicorn with credentials set.

Requests are written as given (http.client sends the target unchanged, so ``..`` and ``%00`` reach
the server) and signed with botocore's own SigV4 signer where they must get past authentication to
reach the part under test. Every answer must be S3's XML error with the expected code (never a 5xx);
no answer may carry the bytes of a file planted beside the archive; the log holds no traceback.
"""

from __future__ import annotations

import datetime as dt
import http.client
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from unittest import mock
from urllib.parse import quote

import boto3
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from desq.s3.tokens import encode_token
from desq.storage.local import LocalStorage
from archives import pack
from s3_fixtures import ACCESS_KEY, CREDENTIALS, SECRET_KEY, Server, sample_files, snapshot

PLANTED = b"PLANTED-BESIDE-THE-ARCHIVE-91c2"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("s3-hostile")
    (root / "SECRET").write_bytes(PLANTED)
    (root / "archive" / "20251120").mkdir(parents=True)
    (root / "archive" / "20251120" / "SECRET").write_bytes(PLANTED)
    pack(LocalStorage(root / "archive"), sample_files())
    before = snapshot(root)
    log = tmp_path_factory.mktemp("s3-hostile-log") / "gunicorn.log"
    running = Server("gunicorn", {"DESQ_ARCHIVE_URL": str(root / "archive"), "DESQ_S3_CREDENTIALS": CREDENTIALS}, log)
    yield running
    running.stop()
    assert snapshot(root) == before
    assert "Traceback" not in log.read_text(errors="replace")


def sign(server: Server, method: str, target: str, *, key: str = ACCESS_KEY, secret: str = SECRET_KEY, at: dt.datetime | None = None) -> dict[str, str]:
    request = AWSRequest(method=method, url=server.url + target, headers={})
    signer = S3SigV4Auth(Credentials(key, secret), "s3", "us-east-1")
    if at is None:
        signer.add_auth(request)
    else:
        with mock.patch("botocore.auth.get_current_datetime", return_value=at):
            signer.add_auth(request)
    return dict(request.headers)


def send(server: Server, target: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
    conn.putheader("Host", f"127.0.0.1:{server.port}")
    for name, value in (headers or {}).items():
        conn.putheader(name, value)
    conn.endheaders()
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, body


def code(status: int, body: bytes) -> str:
    assert status < 500 and PLANTED not in body, (status, body[:300])
    root = ET.fromstring(body)
    assert root.tag == "Error", body[:300]
    return root.find("Code").text


SIGNED = [
    ("/desq/20251120/..%2F..%2FSECRET", "InvalidArgument"),
    ("/desq/20251120/..%2FSECRET", "InvalidArgument"),
    ("/desq/../SECRET", "InvalidArgument"),
    ("/desq/20251120/./SECRET", "InvalidArgument"),
    ("/desq/20251120/SECRET", "NoSuchKey"),
    ("/desq/20251120/20251120_1%00", "InvalidArgument"),
    ("/desq/20251120/%00", "InvalidArgument"),
    ("/desq/20251120/20251120_%0A1", "InvalidArgument"),
    ("/desq/20251120/%FF%FE", "InvalidArgument"),
    ("/desq/20251120/" + "x" * 1100, "KeyTooLongError"),
    ("/desq/20251120/20251120_1?acl=", "InvalidRequest"),
    ("/desq/20251120/20251120_1?tagging=", "InvalidRequest"),
    ("/desq?versioning=", "InvalidRequest"),
    ("/desq?list-type=2&max-keys=-5", "InvalidArgument"),
    ("/desq?list-type=2&max-keys=99999999999999999999", "InvalidArgument"),
    ("/desq?list-type=2&max-keys=abc", "InvalidArgument"),
    ("/desq?list-type=2&continuation-token=AAAA", "InvalidArgument"),
    ("/desq?list-type=2&continuation-token=" + quote(encode_token("20251120/20251120_5", b"another deployment's key"), safe=""), "InvalidArgument"),
    ("/desq?list-type=2&encoding-type=xml", "InvalidArgument"),
    ("/desq?list-type=3", "InvalidArgument"),
    ("/desq?list-type=2&prefix=%00", "InvalidArgument"),
    ("/notours/20251120/20251120_1", "NoSuchBucket"),
    ("/healthz/20251120/20251120_1", "NoSuchBucket"),
    ("/desq/20251120/20251120_999", "NoSuchKey"),
]


@pytest.mark.parametrize(("target", "expected"), SIGNED, ids=[t[:60] for t, _ in SIGNED])
def test_signed_hostile_requests(server: Server, target: str, expected: str) -> None:
    assert code(*send(server, target, sign(server, "GET", target))) == expected


def test_a_tampered_continuation_token(server: Server) -> None:
    target = "/desq?list-type=2&max-keys=5"
    status, body = send(server, target, sign(server, "GET", target))
    assert status == 200
    token = ET.fromstring(body).find("{http://s3.amazonaws.com/doc/2006-03-01/}NextContinuationToken").text
    forged = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    target = "/desq?list-type=2&continuation-token=" + quote(forged, safe="")
    assert code(*send(server, target, sign(server, "GET", target))) == "InvalidArgument"


def test_an_unsatisfiable_range(server: Server) -> None:
    target = "/desq/20251120/20251120_1"
    headers = sign(server, "GET", target) | {"Range": "bytes=99999999999999999999999-"}
    assert code(*send(server, target, headers)) == "InvalidRange"


@pytest.mark.parametrize("prefix", ["../x", "a//b", "a\\b/", "\x01/", "/", "20251120X", "2025-11", "..", "20251120/../"])
@pytest.mark.parametrize("version", ["list-type=2&", ""])
def test_a_prefix_no_key_can_have_lists_nothing(server: Server, prefix: str, version: str) -> None:
    target = f"/desq?{version}prefix={quote(prefix, safe='')}"
    status, body = send(server, target, sign(server, "GET", target))
    assert status == 200, body[:300]
    assert ET.fromstring(body).find("{http://s3.amazonaws.com/doc/2006-03-01/}Contents") is None


@pytest.mark.parametrize(("spec", "status", "length"), [
    ("bytes=" + "9" * 5000 + "-", 416, None),
    ("bytes=-" + "9" * 5000, 206, "all"),
    ("bytes=0-" + "9" * 5000, 206, "all"),
    ("bytes=" + "9" * 20 + "-" + "9" * 21, 416, None),
])
def test_range_numbers_of_any_length(server: Server, spec: str, status: int, length: str | None) -> None:
    target = "/desq/20251120/20251120_1"
    whole = send(server, target, sign(server, "GET", target))[1]
    got, body = send(server, target, sign(server, "GET", target) | {"Range": spec})
    assert got == status, body[:300]
    if length == "all":
        assert body == whole
    else:
        assert code(got, body) == "InvalidRange"


@pytest.mark.parametrize("date", ["Fri, 31 Dec 9999 23:59:59 -0100", "Mon, 01 Jan 0001 00:00:00 +2359", "not a date", "99991231T235959Z"])
def test_a_date_header_at_the_edge_of_time(server: Server, date: str) -> None:
    credential = f"{ACCESS_KEY}/99991231/us-east-1/s3/aws4_request"
    headers = {"Authorization": f"AWS4-HMAC-SHA256 Credential={credential}, SignedHeaders=host;x-amz-content-sha256, Signature={'0' * 64}",
               "Date": date, "x-amz-content-sha256": "UNSIGNED-PAYLOAD"}
    assert code(*send(server, "/desq", headers)) in ("AccessDenied", "AuthorizationHeaderMalformed", "RequestTimeTooSkewed")


def test_bad_signatures(server: Server) -> None:
    target = "/desq/20251120/20251120_1"
    assert code(*send(server, target)) == "AccessDenied"
    good = sign(server, "GET", target)
    assert send(server, target, good)[0] == 200
    tampered = good | {"Authorization": good["Authorization"][:-4] + ("0000" if not good["Authorization"].endswith("0000") else "1111")}
    assert code(*send(server, target, tampered)) == "SignatureDoesNotMatch"
    assert code(*send(server, "/desq/20251120/20251120_2", good)) == "SignatureDoesNotMatch"  # signed for another key
    assert code(*send(server, target, sign(server, "GET", target, secret="not-the-secret-at-all"))) == "SignatureDoesNotMatch"
    assert code(*send(server, target, sign(server, "GET", target, key="NOSUCHKEYID0001"))) == "InvalidAccessKeyId"
    an_hour_ago = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - dt.timedelta(hours=1)
    assert code(*send(server, target, sign(server, "GET", target, at=an_hour_ago))) == "RequestTimeTooSkewed"
    status, body = send(server, target, {"Authorization": "AWS4-HMAC-SHA256 garbage"})
    assert 400 <= status < 500 and code(status, body) != ""
    status, body = send(server, target, {"Authorization": "Bearer whatever-token"})
    assert 400 <= status < 500 and code(status, body) != ""


def test_presigned_urls_expire_and_name_one_key(server: Server) -> None:
    s3 = boto3.client("s3", endpoint_url=server.url, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name="us-east-1", config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "desq", "Key": "20251120/20251120_1"}, ExpiresIn=600)
    target = url[len(server.url):]
    assert send(server, target)[0] == 200
    assert code(*send(server, target.replace("20251120_1?", "20251120_2?"))) == "SignatureDoesNotMatch"
    with mock.patch("botocore.signers.datetime") as clock, mock.patch("botocore.auth.get_current_datetime", return_value=dt.datetime.utcnow() - dt.timedelta(hours=2)):
        clock.datetime.utcnow.return_value = dt.datetime.utcnow() - dt.timedelta(hours=2)
        old = s3.generate_presigned_url("get_object", Params={"Bucket": "desq", "Key": "20251120/20251120_1"}, ExpiresIn=60)
    assert code(*send(server, old[len(server.url):])) == "AccessDenied"
    overlong = target.replace("X-Amz-Expires=600", "X-Amz-Expires=999999999")
    status, body = send(server, overlong)
    assert 400 <= status < 500 and code(status, body) in ("AuthorizationQueryParametersError", "SignatureDoesNotMatch", "AccessDenied")


def test_writes_are_refused_signed_or_not(server: Server) -> None:
    for method, target in (("PUT", "/desq/20251120/SECRET"), ("DELETE", "/desq/20251120/20251120_1"), ("POST", "/desq?delete="), ("PUT", "/desq/20251120/..%2F..%2FSECRET")):
        assert code(*send(server, target, method=method)) == "AccessDenied"
        assert code(*send(server, target, sign(server, method, target), method=method)) == "AccessDenied"
