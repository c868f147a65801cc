"""SigV4 verification against botocore's own S3 signers and AWS's documented examples: every signed
request verifies, every tampering fails with S3's error code, and no message gives a secret away."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from unittest import mock
from urllib.parse import quote, urlsplit

import botocore.auth
import botocore.awsrequest
import botocore.credentials
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from desq.s3 import sigv4
from desq.s3.sigv4 import STATUS, AuthError, SignedRequest, canonical_uri, verify

AKID, SECRET = "AKIDDESQTEST", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYSECRETKEY"
SECRETS = {AKID: SECRET, "OTHERKEY": "another-secret-of-someone-else"}
REGION = "us-east-1"
SIGNED_AT = datetime(2025, 11, 20, 12, 0, 0)
NOW = SIGNED_AT.replace(tzinfo=timezone.utc)
ENDPOINT = "http://127.0.0.1:9000"
EMPTY_SHA = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def enc(text: str, safe: str = "/~") -> str:
    return quote(text, safe=safe)


def query_of(pairs: list[tuple[str, str | None]]) -> str:
    """A query string encoded the way the SDKs encode one (a None value: no '=')."""
    return "&".join(enc(k, "-_.~") if v is None else f"{enc(k, '-_.~')}={enc(v, '-_.~')}" for k, v in pairs)


def sign(
    method: str = "GET",
    path: str = "/desq/20251120/file.txt",
    query: str = "",
    headers: dict[str, str] | None = None,
    *,
    presign: bool = False,
    expires: int = 3600,
    region: str = REGION,
    akid: str = AKID,
    secret: str = SECRET,
    body: bytes = b"",
) -> SignedRequest:
    """``method path?query`` signed by botocore at SIGNED_AT, as the server receives it."""
    credentials = botocore.credentials.Credentials(akid, secret)
    signer = botocore.auth.S3SigV4QueryAuth(credentials, "s3", region, expires=expires) if presign else botocore.auth.S3SigV4Auth(credentials, "s3", region)
    aws = botocore.awsrequest.AWSRequest(method=method, url=f"{ENDPOINT}{path}" + (f"?{query}" if query else ""), headers=headers or {}, data=body)
    with mock.patch("botocore.auth.get_current_datetime", return_value=SIGNED_AT):
        signer.add_auth(aws)
    url = urlsplit(aws.url)
    return SignedRequest(method, url.path, url.query, {"Host": url.netloc, **dict(aws.headers.items())})


def rejects(request: SignedRequest, code: str, *, now: datetime = NOW, body: bytes | None = b"", region: str = REGION) -> AuthError:
    """Assert verify refuses ``request`` with ``code`` and a clean one-line message."""
    with pytest.raises(AuthError) as info:
        verify(request, SECRETS, region=region, now=now, body=body)
    error = info.value
    assert error.code == code, (error.code, error.message)
    assert code in STATUS and str(error) == error.message and error.message
    assert "\n" not in error.message and "\r" not in error.message
    sent = request.raw_query + " ".join(request.headers.values())
    assert all(secret not in error.message for secret in SECRETS.values())
    assert all(h in sent for h in re.findall(r"[0-9a-f]{64}", error.message)), "a hash that the client did not send"
    return error


def with_headers(request: SignedRequest, **changes: str) -> SignedRequest:
    return replace(request, headers={**request.headers, **{k.replace("_", "-"): v for k, v in changes.items()}})


def authorization(request: SignedRequest, old: str, new: str) -> SignedRequest:
    value = request.headers["authorization"]
    assert old in value
    return with_headers(request, authorization=value.replace(old, new))


def param(request: SignedRequest, name: str, value: str) -> SignedRequest:
    query, n = re.subn(rf"(^|&){name}=[^&]*", rf"\g<1>{name}={value}", request.raw_query)
    assert n == 1
    return replace(request, raw_query=query)


KEYS = [
    "20251120/plain.txt",
    "20251120/with space",
    "20251120/plus+sign",
    "20251120/100% sure",
    "20251120/a=b&c",
    "20251120/~tilde",
    "20251120/!*'();:@$,",
    "20251120/ünïcödé-日本語-😀",
    "20251120/dir/sub/",
    "20251120/literal%2Fslash",
    "20251120/back\\slash#hash?question",
    "20251120/..",
]
QUERIES = [
    [],
    [("list-type", "2"), ("prefix", "20251120/"), ("delimiter", "/")],
    [("list-type", "2"), ("continuation-token", "MjAyNTExMjAvYS9i+/c2U=="), ("max-keys", "1000"), ("start-after", "20251120/x y")],
    [("encoding-type", "url"), ("prefix", "ünï cödé+/%"), ("marker", "")],
    [("location", None)],
    [("a", "2"), ("a", "1"), ("b", ""), ("a", "10")],
    [("x-id", "GetObject"), ("response-content-type", "text/plain; charset=utf-8")],
]


@pytest.mark.parametrize("presign", [False, True], ids=["header", "presigned"])
@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_botocore_signed_paths_verify(method: str, key: str, presign: bool) -> None:
    assert verify(sign(method, "/desq/" + enc(key), presign=presign), SECRETS, region=REGION, now=NOW) == AKID


@pytest.mark.parametrize("presign", [False, True], ids=["header", "presigned"])
@pytest.mark.parametrize("pairs", QUERIES, ids=range(len(QUERIES)))
def test_botocore_signed_queries_verify(pairs: list[tuple[str, str | None]], presign: bool) -> None:
    assert verify(sign("GET", "/desq", query_of(pairs), presign=presign), SECRETS, region=REGION, now=NOW) == AKID


@pytest.mark.parametrize("method", ["PUT", "POST", "DELETE", "OPTIONS"])
def test_other_methods_and_a_signed_body_verify(method: str) -> None:
    body = b"<Delete><Object><Key>k</Key></Object></Delete>"
    request = sign(method, "/desq/20251120/k", "delete" if method == "POST" else "", body=body)
    assert verify(request, SECRETS, region=REGION, now=NOW, body=body) == AKID
    assert verify(request, SECRETS, region=REGION, now=NOW, body=None) == AKID
    rejects(request, "XAmzContentSHA256Mismatch", body=body + b"!")


def test_the_other_key_and_the_bucket_root_verify() -> None:
    assert verify(sign("GET", "/", akid="OTHERKEY", secret=SECRETS["OTHERKEY"]), SECRETS, region=REGION, now=NOW) == "OTHERKEY"
    assert verify(sign("GET", "/", presign=True), SECRETS, region=REGION, now=NOW) == AKID


def test_aws_documented_examples_verify() -> None:
    """The four examples of AWS's SigV4-for-S3 pages, signatures as published."""
    secrets = {"AKIAIOSFODNN7EXAMPLE": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}
    credential = "AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request"
    base = {"Host": "examplebucket.s3.amazonaws.com", "x-amz-content-sha256": EMPTY_SHA, "x-amz-date": "20130524T000000Z"}

    def header(path: str, query: str, signed: str, signature: str, **extra: str) -> SignedRequest:
        auth = f"AWS4-HMAC-SHA256 Credential={credential},SignedHeaders={signed},Signature={signature}"
        return SignedRequest("GET", path, query, {**base, **extra, "Authorization": auth})

    examples = [
        header("/test.txt", "", "host;range;x-amz-content-sha256;x-amz-date", "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41", Range="bytes=0-9"),
        header("/", "lifecycle", "host;x-amz-content-sha256;x-amz-date", "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"),
        header("/", "max-keys=2&prefix=J", "host;x-amz-content-sha256;x-amz-date", "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"),
        SignedRequest("GET", "/test.txt", f"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={enc(credential, '')}&X-Amz-Date=20130524T000000Z"
                      "&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404",
                      {"Host": "examplebucket.s3.amazonaws.com"}),
    ]
    for example in examples:
        assert verify(example, secrets, region="us-east-1", now=datetime(2013, 5, 24, 0, 10, tzinfo=timezone.utc)) == "AKIAIOSFODNN7EXAMPLE"


@pytest.mark.parametrize("presign", [False, True], ids=["header", "presigned"])
@pytest.mark.parametrize(
    ("signed_path", "sent_path"),
    [
        ("/desq/a%21b%2A%27%28%29", "/desq/a!b*'()"),
        ("/desq/~tilde", "/desq/%7etilde"),
        ("/desq/a%2Bb", "/desq/a+b"),
        ("/desq/%C3%BC%2F", "/desq/%c3%bc%2f"),
        ("/desq/%C3%BC", "/desq/\u00fc"),
    ],
)
def test_an_equivalent_encoding_of_the_path_still_verifies(signed_path: str, sent_path: str, presign: bool) -> None:
    """S3 decodes and re-encodes the path, so clients that encode a little differently agree."""
    request = replace(sign("GET", signed_path, presign=presign), raw_path=sent_path)
    assert verify(request, SECRETS, region=REGION, now=NOW) == AKID


def test_an_equivalent_encoding_of_the_query_still_verifies() -> None:
    request = sign("GET", "/desq", query_of([("continuation-token", "ab/c+d=="), ("prefix", "x y"), ("q", "!")]))
    for sent in ("continuation-token=ab/c%2bd==&prefix=x+y&q=!", "prefix=x%20y&continuation-token=ab%2fc%2Bd%3D%3D&q=%21"):
        assert verify(replace(request, raw_query=sent), SECRETS, region=REGION, now=NOW) == AKID


def test_canonical_uri_keeps_slashes_and_uri_encodes_the_rest() -> None:
    assert canonical_uri("/b/a b/~x!/%2F/%zz") == "/b/a%20b/~x%21/%2F/%25zz"
    assert canonical_uri("") == "/" and canonical_uri("/b//./../k") == "/b//./../k"


def test_the_date_header_may_stand_in_for_x_amz_date() -> None:
    """botocore signs with the Date header (RFC 1123) when the request has one; S3 accepts it."""
    request = sign("GET", "/desq/k", headers={"Date": "anything"})
    assert "x-amz-date" not in request.headers and request.headers["date"].startswith("Thu, 20 Nov 2025 12:00:00 ")
    assert verify(request, SECRETS, region=REGION, now=NOW) == AKID
    rejects(with_headers(request, date="Thu, 20 Nov 2025 12:00:01 GMT"), "SignatureDoesNotMatch")
    rejects(with_headers(request, date="yesterday"), "AccessDenied")


# --- tampering ----------------------------------------------------------------------------------


@pytest.mark.parametrize("presign", [False, True], ids=["header", "presigned"])
def test_each_tampered_part_fails_with_signature_does_not_match(presign: bool) -> None:
    request = sign("GET", "/desq/20251120/a", "list-type=2&prefix=20251120", headers={"Range": "bytes=0-9"}, presign=presign)
    assert verify(request, SECRETS, region=REGION, now=NOW) == AKID
    for tampered in (
        replace(request, method="HEAD"),
        replace(request, raw_path="/desq/20251120/b"),
        replace(request, raw_path="/desq/20251120/a/"),
        replace(request, raw_query=request.raw_query.replace("prefix=20251120", "prefix=20251121")),
        replace(request, raw_query=request.raw_query + "&extra=1"),
        replace(request, raw_query=request.raw_query.replace("list-type=2&", "")),
        with_headers(request, range="bytes=0-10"),
        with_headers(request, host="127.0.0.1:9001"),
    ):
        rejects(tampered, "SignatureDoesNotMatch")
    wrong = {AKID: "not-the-secret"}
    with pytest.raises(AuthError) as info:
        verify(request, wrong, region=REGION, now=NOW)
    assert info.value.code == "SignatureDoesNotMatch" and "not-the-secret" not in str(info.value)


@pytest.mark.parametrize("presign", [False, True], ids=["header", "presigned"])
def test_an_unknown_key_id_and_a_wrong_region(presign: bool) -> None:
    malformed = "AuthorizationQueryParametersError" if presign else "AuthorizationHeaderMalformed"
    rejects(sign(akid="AKIDNOBODY", presign=presign), "InvalidAccessKeyId")
    error = rejects(sign(region="eu-west-1", presign=presign), malformed)
    assert "'eu-west-1' is wrong; expecting 'us-east-1'" in error.message
    rejects(sign(presign=presign), malformed, region="eu-central-1")


@pytest.mark.parametrize(
    ("old", "new", "code"),
    [
        ("/20251120/", "/20251121/", "AuthorizationHeaderMalformed"),
        ("/20251120/", "/2025112/", "AuthorizationHeaderMalformed"),
        ("/s3/", "/ec2/", "AuthorizationHeaderMalformed"),
        ("/aws4_request", "/aws4_reques", "AuthorizationHeaderMalformed"),
        (f"Credential={AKID}/", "Credential=/", "AuthorizationHeaderMalformed"),
        (f"Credential={AKID}/20251120/us-east-1/", "Credential=20251120/us-east-1/", "AuthorizationHeaderMalformed"),
        ("Credential=", "Credentials=", "AuthorizationHeaderMalformed"),
        ("SignedHeaders=", "Signedheaders=", "AuthorizationHeaderMalformed"),
        (", SignedHeaders=", ", Signature=00, SignedHeaders=", "AuthorizationHeaderMalformed"),
        (", Signature=", " Signature=", "AuthorizationHeaderMalformed"),
        (", Signature=", ", Foo=bar, Signature=", "AuthorizationHeaderMalformed"),
        ("SignedHeaders=host;", "SignedHeaders=", "AuthorizationHeaderMalformed"),
        ("SignedHeaders=host;", "SignedHeaders=Host;", "AuthorizationHeaderMalformed"),
        ("SignedHeaders=host;", "SignedHeaders=host;;", "AuthorizationHeaderMalformed"),
        ("AWS4-HMAC-SHA256 ", "AWS4-HMAC-SHA1 ", "AccessDenied"),
        ("AWS4-HMAC-SHA256 ", "AWS4-ECDSA-P256-SHA256 ", "AccessDenied"),
        ("AWS4-HMAC-SHA256 ", "aws4-hmac-sha256 ", "AccessDenied"),
    ],
)
def test_a_malformed_authorization_header(old: str, new: str, code: str) -> None:
    rejects(authorization(sign(), old, new), code)


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("", "AccessDenied"),
        ("AWS4-HMAC-SHA256", "AuthorizationHeaderMalformed"),
        ("AWS4-HMAC-SHA256 ", "AuthorizationHeaderMalformed"),
        (f"AWS {AKID}:frJIUN8DYpKDtOLCwo//yllqDzg=", "AccessDenied"),
        ("Bearer token", "AccessDenied"),
    ],
)
def test_other_authorization_values(value: str, code: str) -> None:
    rejects(with_headers(sign(), authorization=value), code)


@pytest.mark.parametrize("presign", [False, True], ids=["header", "presigned"])
@pytest.mark.parametrize("bad", ["0" * 64, "F" * 64, "abc", "", "z" * 64, "0" * 65, "ü" * 64])
def test_a_malformed_signature(bad: str, presign: bool) -> None:
    request = sign(presign=presign)
    if presign:
        tampered = param(request, "X-Amz-Signature", enc(bad, ""))
    else:
        tampered = with_headers(request, authorization=re.sub("Signature=[0-9a-f]+", f"Signature={bad}", request.headers["authorization"]))
    rejects(tampered, "SignatureDoesNotMatch")


def test_the_signature_is_compared_in_constant_time() -> None:
    with mock.patch("desq.s3.sigv4.hmac.compare_digest", return_value=False) as compare:
        rejects(sign(), "SignatureDoesNotMatch")
    assert compare.called


def test_header_auth_allows_fifteen_minutes_of_skew() -> None:
    request = sign()
    for minutes in (-15, -14, 14, 15):
        assert verify(request, SECRETS, region=REGION, now=NOW + timedelta(minutes=minutes)) == AKID
    for minutes in (-16, 16, 24 * 60):
        rejects(request, "RequestTimeTooSkewed", now=NOW + timedelta(minutes=minutes))
    assert verify(request, SECRETS, region=REGION, now=NOW + timedelta(minutes=20), max_skew=timedelta(minutes=30)) == AKID
    assert verify(request, SECRETS, region=REGION, now=SIGNED_AT + timedelta(minutes=1)) == AKID, "a naive now is UTC"


@pytest.mark.parametrize("bad", ["20251120T120000", "2025-11-20T12:00:00Z", "20251320T120000Z", "", "now"])
def test_an_invalid_x_amz_date(bad: str) -> None:
    rejects(with_headers(sign(), x_amz_date=bad), "AccessDenied")
    rejects(param(sign(presign=True), "X-Amz-Date", enc(bad, "")), "AuthorizationQueryParametersError")


def test_presigned_urls_expire_and_start_at_their_date() -> None:
    request = sign(presign=True, expires=600)
    for offset in (0, 599, 600):
        assert verify(request, SECRETS, region=REGION, now=NOW + timedelta(seconds=offset)) == AKID
    assert "expired" in rejects(request, "AccessDenied", now=NOW + timedelta(seconds=601)).message
    assert verify(request, SECRETS, region=REGION, now=NOW - timedelta(minutes=15)) == AKID, "a client clock a little ahead"
    assert "not valid yet" in rejects(request, "AccessDenied", now=NOW - timedelta(minutes=16)).message
    longest = sign(presign=True, expires=604800)
    assert verify(longest, SECRETS, region=REGION, now=NOW + timedelta(seconds=604800)) == AKID


@pytest.mark.parametrize("expires", ["0", "604801", "abc", "-1", "", "1.5", "99999999999999999999"])
def test_x_amz_expires_out_of_range(expires: str) -> None:
    rejects(param(sign(presign=True), "X-Amz-Expires", expires), "AuthorizationQueryParametersError")


@pytest.mark.parametrize("name", ["X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature", "X-Amz-Date", "X-Amz-SignedHeaders", "X-Amz-Expires"])
def test_a_missing_or_repeated_presigned_parameter(name: str) -> None:
    request = sign(presign=True)
    without = "&".join(p for p in request.raw_query.split("&") if not p.startswith(name + "="))
    rejects(replace(request, raw_query=without), "AuthorizationQueryParametersError")
    value = re.search(rf"(?:^|&)({name}=[^&]*)", request.raw_query).group(1)  # type: ignore[union-attr]
    rejects(replace(request, raw_query=f"{request.raw_query}&{value}"), "AuthorizationQueryParametersError")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("X-Amz-Credential", f"{AKID}%2F20251121%2Fus-east-1%2Fs3%2Faws4_request"),
        ("X-Amz-Credential", f"{AKID}%2F20251120%2Fus-east-1%2Fsqs%2Faws4_request"),
        ("X-Amz-Credential", f"{AKID}%2F20251120%2Fus-east-1%2Fs3%2Faws5_request"),
        ("X-Amz-Credential", f"{AKID}%2F20251120%2Fus-east-1%2Fs3"),
        ("X-Amz-SignedHeaders", "x-amz-date"),
        ("X-Amz-SignedHeaders", "host%3BHost"),
    ],
)
def test_a_bad_presigned_scope(name: str, value: str) -> None:
    rejects(param(sign(presign=True), name, value), "AuthorizationQueryParametersError")


def test_host_must_be_signed() -> None:
    rejects(authorization(sign(), "SignedHeaders=host;", "SignedHeaders="), "AuthorizationHeaderMalformed")
    presigned = sign(presign=True, headers={"Range": "bytes=0-1"})
    assert "X-Amz-SignedHeaders=host%3Brange" in presigned.raw_query
    rejects(param(presigned, "X-Amz-SignedHeaders", "range"), "AuthorizationQueryParametersError")


def test_sigv2_and_other_algorithms_are_refused() -> None:
    v2 = SignedRequest("GET", "/desq/k", f"AWSAccessKeyId={AKID}&Expires=1763643600&Signature=abc%3D", {"Host": "h"})
    assert "AWS4-HMAC-SHA256" in rejects(v2, "AccessDenied").message
    assert "AWS4-HMAC-SHA256" in rejects(param(sign(presign=True), "X-Amz-Algorithm", "AWS4-HMAC-SHA1"), "AccessDenied").message


def test_anonymous_and_doubly_signed_requests() -> None:
    assert rejects(SignedRequest("GET", "/desq/k", "", {"Host": "h"}), "AccessDenied").message == "Access Denied"
    presigned = sign(presign=True)
    both = with_headers(presigned, authorization=sign().headers["authorization"])
    rejects(both, "InvalidArgument")
    assert STATUS["InvalidArgument"] == 400


def test_x_amz_content_sha256_is_required_signed_and_well_formed() -> None:
    request = sign()
    rejects(replace(request, headers={k: v for k, v in request.headers.items() if k != "x-amz-content-sha256"}), "InvalidRequest")
    rejects(authorization(request, ";x-amz-content-sha256", ""), "InvalidRequest")
    rejects(with_headers(request, x_amz_content_sha256="not-a-hash"), "InvalidArgument")
    rejects(with_headers(request, x_amz_content_sha256="0" * 64), "SignatureDoesNotMatch")
    rejects(request, "XAmzContentSHA256Mismatch", body=b"a body")
    unsigned = sign(headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
    assert unsigned.headers["x-amz-content-sha256"] == EMPTY_SHA, "botocore hashes the payload itself"
    streaming = sign("PUT", headers={"X-Amz-Decoded-Content-Length": "5"})
    tampered = with_headers(streaming, x_amz_content_sha256="STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
    rejects(tampered, "SignatureDoesNotMatch")


def test_unsigned_x_amz_headers_are_refused() -> None:
    error = rejects(with_headers(sign(), x_amz_request_payer="requester"), "AccessDenied")
    assert "x-amz-request-payer" in error.message
    rejects(with_headers(sign(presign=True), x_amz_acl="public-read"), "AccessDenied")
    assert verify(with_headers(sign(), user_agent="other"), SECRETS, region=REGION, now=NOW) == AKID


def test_headers_are_case_insensitive_and_repeated_ones_are_joined() -> None:
    request = SignedRequest.of("GET", "/", "", [("X-Foo", "a"), ("x-foo", "b"), ("HOST", "h")])
    assert dict(request.headers) == {"x-foo": "a,b", "host": "h"}
    assert SignedRequest("GET", "/", "", {"Content-Type": "x"}).headers == {"content-type": "x"}
    signed = sign(headers={"X-Amz-Meta-A": "  two   spaces  "})
    assert verify(with_headers(signed, x_amz_meta_a="two spaces"), SECRETS, region=REGION, now=NOW) == AKID


def test_signing_keys_are_cached_per_secret_and_bounded() -> None:
    sigv4._signing_key.cache_clear()
    verify(sign(), SECRETS, region=REGION, now=NOW)
    verify(sign(), SECRETS, region=REGION, now=NOW)
    info = sigv4._signing_key.cache_info()
    assert (info.hits, info.misses, info.maxsize) == (1, 1, 256)
    rotated = {AKID: "a-rotated-secret"}
    assert verify(sign(secret="a-rotated-secret"), rotated, region=REGION, now=NOW) == AKID
    with pytest.raises(AuthError):
        verify(sign(), rotated, region=REGION, now=NOW)


# --- properties ---------------------------------------------------------------------------------

_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)) | st.sampled_from(" +%=&/~!*'()?#"), min_size=1, max_size=24)
_PARAM = _TEXT.filter(lambda k: not k.lower().startswith("x-amz-") and k not in ("Signature", "AWSAccessKeyId"))
"""Operation parameters; the auth parameters' names are S3's (a request using them is refused)."""
_PAIRS = st.lists(st.tuples(_PARAM, st.text(max_size=16) | st.none()), max_size=5)
_UNRESERVED = "ABCXYZabcxyz0189-._~/"


def _mutate(text: str, index: int, choice: int) -> str | None:
    """``text`` with one character changed to a different one (not a mere case change)."""
    index %= len(text)
    candidates = [c for c in _UNRESERVED if c.lower() != text[index].lower()]
    return text[:index] + candidates[choice % len(candidates)] + text[index + 1:]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=_TEXT, pairs=_PAIRS, presign=st.booleans(), where=st.sampled_from(["path", "query", "signature"]), index=st.integers(0, 10**6), choice=st.integers(0, 100))
def test_random_signed_requests_verify_and_any_one_character_change_fails(
    key: str, pairs: list[tuple[str, str | None]], presign: bool, where: str, index: int, choice: int
) -> None:
    request = sign("GET", "/desq/" + enc(key), query_of(pairs), presign=presign)
    assert verify(request, SECRETS, region=REGION, now=NOW) == AKID
    if where == "path":
        tampered = replace(request, raw_path=_mutate(request.raw_path, index, choice))
    elif where == "query" and request.raw_query:
        tampered = replace(request, raw_query=_mutate(request.raw_query, index, choice))
    else:
        signature = re.search(r"Signature=([0-9a-f]{64})", request.raw_query if presign else request.headers["authorization"]).group(1)  # type: ignore[union-attr]
        i = index % 64
        changed = signature[:i] + "0123456789abcdef"[(int(signature[i], 16) + 1 + choice % 15) % 16] + signature[i + 1:]
        tampered = replace(request, raw_query=request.raw_query.replace(signature, changed)) if presign else authorization(request, signature, changed)
    with pytest.raises(AuthError) as info:
        verify(tampered, SECRETS, region=REGION, now=NOW)
    assert SECRET not in str(info.value) and "\n" not in str(info.value)
