"""AWS Signature Version 4 verification as S3 does it, for header-signed and presigned requests.

Pure: the caller hands in the request as it came off the wire (``SignedRequest``), the configured
secrets and the clock. S3 signs the path without double encoding or normalisation; both the path
and the query are decoded and re-encoded with AWS's UriEncode, so a client that sends ``!`` where
another sends ``%21`` signs the same canonical request.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from functools import lru_cache
from types import MappingProxyType
from urllib.parse import quote, unquote_to_bytes

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "s3"
TERMINATOR = "aws4_request"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
MAX_EXPIRES = 604800

STATUS: dict[str, int] = {
    "AccessDenied": 403,
    "InvalidAccessKeyId": 403,
    "SignatureDoesNotMatch": 403,
    "RequestTimeTooSkewed": 403,
    "AuthorizationHeaderMalformed": 400,
    "AuthorizationQueryParametersError": 400,
    "InvalidArgument": 400,
    "InvalidRequest": 400,
    "XAmzContentSHA256Mismatch": 400,
}
"""HTTP status of each error code ``verify`` raises, as S3 answers it."""

_PRESIGN_PARAMS = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature", "X-Amz-Date", "X-Amz-SignedHeaders", "X-Amz-Expires")
_STREAMING = re.compile(r"STREAMING-(UNSIGNED-PAYLOAD-TRAILER|AWS4-HMAC-SHA256-PAYLOAD(-TRAILER)?|AWS4-ECDSA-P256-SHA256-PAYLOAD(-TRAILER)?)")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_SIGNATURE = re.compile(r"[0-9a-f]{64}")
_AMZ_DATE = re.compile(r"\d{8}T\d{6}Z")
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-z]+")
_ONLY_V4 = "Only AWS4-HMAC-SHA256 (Signature Version 4) is accepted"
_MISMATCH = "The request signature we calculated does not match the signature you provided. Check your key and signing method."


class AuthError(Exception):
    """A request that is not authenticated; ``code`` is S3's error code, ``str()`` the message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class SignedRequest:
    """A request as sent: ``raw_path`` percent-encoded without the query, ``raw_query`` without '?'.

    Header names are normalised to lowercase (repeated names joined with ',', as HTTP allows)."""

    method: str
    raw_path: str
    raw_query: str
    headers: Mapping[str, str]

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", _lowercase(self.headers.items()))

    @classmethod
    def of(cls, method: str, raw_path: str, raw_query: str, headers: Iterable[tuple[str, str]]) -> SignedRequest:
        """A request from header (name, value) pairs, repeated names allowed."""
        return cls(method, raw_path, raw_query, _lowercase(headers))


def _lowercase(pairs: Iterable[tuple[str, str]]) -> Mapping[str, str]:
    headers: dict[str, str] = {}
    for name, value in pairs:
        key = name.lower()
        headers[key] = f"{headers[key]},{value}" if key in headers else value
    return MappingProxyType(headers)


@dataclass(frozen=True)
class _Auth:
    """The signature's claims, from the Authorization header or the presigned query."""

    presigned: bool
    access_key: str
    scope_date: str
    region: str
    service: str
    terminator: str
    signed_headers: str
    signature: str
    amz_date: str
    when: datetime
    expires: int = 0

    @property
    def malformed(self) -> str:
        return "AuthorizationQueryParametersError" if self.presigned else "AuthorizationHeaderMalformed"

    @property
    def header_names(self) -> list[str]:
        return self.signed_headers.split(";")


def verify(
    request: SignedRequest,
    secrets: Mapping[str, str],
    *,
    region: str,
    now: datetime,
    body: bytes | None = b"",
    max_skew: timedelta = timedelta(minutes=15),
) -> str:
    """The access key id that signed ``request``; raises AuthError when it is not validly signed.

    ``body=None`` means the body was not read: its hash is then not checked against it."""
    now = now if now.tzinfo else now.replace(tzinfo=timezone.utc)
    query = _parse_query(request.raw_query)
    names = {key for key, _ in query}
    presigned = any(name.encode() in names for name in _PRESIGN_PARAMS[:3])
    sigv2_query = b"Signature" in names or b"AWSAccessKeyId" in names
    authorization = request.headers.get("authorization")
    if authorization is not None and (presigned or sigv2_query):
        raise AuthError(
            "InvalidArgument",
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified",
        )
    if authorization is None and not presigned:
        raise AuthError("AccessDenied", _ONLY_V4 if sigv2_query else "Access Denied")
    auth = _from_query(query) if presigned else _from_header(authorization or "", request.headers)
    _check_scope(auth, region)
    _check_time(auth, now, max_skew)
    secret = secrets.get(auth.access_key)
    if not secret:
        raise AuthError("InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records.")
    payload = _payload_hash(auth, request.headers, query)
    _check_signed_headers(auth, request.headers)
    canonical = canonical_request(request, query, auth.header_names, auth.signed_headers, payload, presigned=presigned)
    to_sign = "\n".join((ALGORITHM, auth.amz_date, f"{auth.scope_date}/{auth.region}/{SERVICE}/{TERMINATOR}", _sha256(canonical.encode("utf-8", "surrogateescape"))))
    expected = hmac.new(_signing_key(secret, auth.scope_date, auth.region), to_sign.encode(), hashlib.sha256).hexdigest()
    if not _SIGNATURE.fullmatch(auth.signature) or not hmac.compare_digest(expected.encode(), auth.signature.encode()):
        raise AuthError("SignatureDoesNotMatch", _MISMATCH)
    if body is not None and _HEX64.fullmatch(payload) and payload.lower() != _sha256(body):
        raise AuthError("XAmzContentSHA256Mismatch", "The provided 'x-amz-content-sha256' header does not match what was computed.")
    return auth.access_key


def canonical_request(
    request: SignedRequest, query: list[tuple[bytes, bytes]], header_names: list[str], signed_headers: str, payload: str, *, presigned: bool
) -> str:
    """SigV4's canonical request for S3 (``query`` as ``_parse_query`` gives it)."""
    pairs = sorted((_uri_encode(k), _uri_encode(v)) for k, v in query if not (presigned and k == b"X-Amz-Signature"))
    headers = "".join(f"{name}:{_trim(request.headers.get(name, ''))}\n" for name in header_names)
    return "\n".join((request.method, canonical_uri(request.raw_path), "&".join(f"{k}={v}" for k, v in pairs), headers, signed_headers, payload))


def canonical_uri(raw_path: str) -> str:
    """The path with each segment decoded and UriEncoded again ('/' kept, no normalisation)."""
    return "/".join(_uri_encode(unquote_to_bytes(segment)) for segment in (raw_path or "/").split("/"))


def _parse_query(raw_query: str) -> list[tuple[bytes, bytes]]:
    """The decoded (name, value) pairs of a query string, in order; '+' is a space, as in forms."""
    pairs = []
    for piece in raw_query.split("&"):
        if piece:
            key, _, value = piece.partition("=")
            pairs.append((unquote_to_bytes(key.replace("+", " ")), unquote_to_bytes(value.replace("+", " "))))
    return pairs


def _uri_encode(raw: bytes) -> str:
    return quote(raw, safe="")


def _trim(value: str) -> str:
    return " ".join(value.split())


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@lru_cache(maxsize=256)
def _signing_key(secret: str, date: str, region: str) -> bytes:
    key = f"AWS4{secret}".encode()
    for part in (date, region, SERVICE, TERMINATOR):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def _shown(value: str) -> str:
    """A client-supplied value fit for a one-line message."""
    cleaned = "".join(c if c.isprintable() else "?" for c in value)
    return cleaned if len(cleaned) <= 64 else cleaned[:61] + "..."


def _from_header(authorization: str, headers: Mapping[str, str]) -> _Auth:
    algorithm, _, rest = authorization.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise AuthError("AccessDenied", _ONLY_V4)
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, eq, value = part.strip().partition("=")
        if not eq or name in fields or name not in ("Credential", "SignedHeaders", "Signature"):
            raise AuthError("AuthorizationHeaderMalformed", f"The authorization header is malformed; '{_shown(part.strip())}' is not one of Credential=, SignedHeaders=, Signature= (each once)")
        fields[name] = value.strip()
    if len(fields) != 3:
        raise AuthError("AuthorizationHeaderMalformed", "The authorization header is malformed; it requires three components: Credential, SignedHeaders and Signature")
    amz_date, when = _header_date(headers)
    return _Auth(False, *_credential(fields["Credential"], False), _signed_headers(fields["SignedHeaders"], False), fields["Signature"], amz_date, when)


def _from_query(query: list[tuple[bytes, bytes]]) -> _Auth:
    params: dict[str, str] = {}
    for key, value in query:
        name = key.decode("utf-8", "replace")
        if name in _PRESIGN_PARAMS:
            if name in params:
                raise AuthError("AuthorizationQueryParametersError", f"The query parameter {name} is given more than once.")
            params[name] = value.decode("utf-8", "replace")
    if params.get("X-Amz-Algorithm", ALGORITHM) != ALGORITHM:
        raise AuthError("AccessDenied", _ONLY_V4)
    if len(params) != len(_PRESIGN_PARAMS):
        raise AuthError(
            "AuthorizationQueryParametersError",
            "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters.",
        )
    amz_date = params["X-Amz-Date"]
    when = _parse_amz_date(amz_date)
    if when is None:
        raise AuthError("AuthorizationQueryParametersError", "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")
    return _Auth(True, *_credential(params["X-Amz-Credential"], True), _signed_headers(params["X-Amz-SignedHeaders"], True),
                 params["X-Amz-Signature"], amz_date, when, _expires(params["X-Amz-Expires"]))


def _credential(credential: str, presigned: bool) -> tuple[str, str, str, str, str]:
    parts = credential.rsplit("/", 4)
    if len(parts) != 5 or not parts[0] or not re.fullmatch(r"\d{8}", parts[1]):
        code, lead = _malformed(presigned)
        raise AuthError(code, f"{lead} the Credential is mal-formed; expecting \"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request\".")
    return parts[0], parts[1], parts[2], parts[3], parts[4]


def _signed_headers(signed: str, presigned: bool) -> str:
    names = signed.split(";")
    code, lead = _malformed(presigned)
    if not all(_HEADER_NAME.fullmatch(name) for name in names):
        raise AuthError(code, f"{lead} SignedHeaders must be lowercase header names separated by ';'.")
    if "host" not in names:
        raise AuthError(code, f"{lead} SignedHeaders must include host.")
    return signed


def _expires(value: str) -> int:
    if not re.fullmatch(r"-?\d{1,12}", value):
        raise AuthError("AuthorizationQueryParametersError", "X-Amz-Expires should be a number")
    seconds = int(value)
    if seconds < 1:
        raise AuthError("AuthorizationQueryParametersError", "X-Amz-Expires must be at least 1 second")
    if seconds > MAX_EXPIRES:
        raise AuthError("AuthorizationQueryParametersError", f"X-Amz-Expires must be less than a week (in seconds) that is {MAX_EXPIRES}")
    return seconds


def _malformed(presigned: bool) -> tuple[str, str]:
    if presigned:
        return "AuthorizationQueryParametersError", "Error parsing the X-Amz-Credential parameter;"
    return "AuthorizationHeaderMalformed", "The authorization header is malformed;"


def _parse_amz_date(value: str) -> datetime | None:
    if not _AMZ_DATE.fullmatch(value):
        return None
    try:
        return datetime(int(value[:4]), int(value[4:6]), int(value[6:8]), int(value[9:11]), int(value[11:13]), int(value[13:15]), tzinfo=timezone.utc)
    except ValueError:
        return None


def _header_date(headers: Mapping[str, str]) -> tuple[str, datetime]:
    """X-Amz-Date, else the Date header (ISO 8601 basic or an HTTP date), as S3 takes them."""
    value = headers.get("x-amz-date")
    when = _parse_amz_date(value.strip()) if value is not None else None
    if value is None and "date" in headers:
        when = _parse_amz_date(headers["date"].strip())
        if when is None:
            try:
                when = parsedate_to_datetime(headers["date"])
            except (TypeError, ValueError, IndexError):
                when = None
            if when is not None and when.tzinfo is None:
                when = when.replace(tzinfo=timezone.utc)
    try:
        when = when.astimezone(timezone.utc) if when is not None else None
    except (OverflowError, ValueError):
        when = None  # an offset that carries the time past year 9999 or before year 1
    if when is None:
        raise AuthError("AccessDenied", "AWS authentication requires a valid Date or x-amz-date header")
    return when.strftime("%Y%m%dT%H%M%SZ"), when


def _check_scope(auth: _Auth, region: str) -> None:
    code, lead = _malformed(auth.presigned)
    if auth.region != region:
        raise AuthError(code, f"{lead} the region '{_shown(auth.region)}' is wrong; expecting '{_shown(region)}'")
    if auth.service != SERVICE:
        raise AuthError(code, f"{lead} incorrect service '{_shown(auth.service)}'. This endpoint belongs to '{SERVICE}'.")
    if auth.terminator != TERMINATOR:
        raise AuthError(code, f"{lead} incorrect terminal '{_shown(auth.terminator)}'. This endpoint uses '{TERMINATOR}'.")
    if auth.scope_date != auth.amz_date[:8]:
        what = "X-Amz-Date" if auth.presigned else "the date of the request"
        raise AuthError(code, f"{lead} Invalid credential date. Date is not the same as {what}.")


def _check_time(auth: _Auth, now: datetime, max_skew: timedelta) -> None:
    if not auth.presigned:
        if abs(now - auth.when) > max_skew:
            raise AuthError("RequestTimeTooSkewed", "The difference between the request time and the current time is too large.")
    elif auth.when - now > max_skew:
        raise AuthError("AccessDenied", "Request is not valid yet")
    elif now > auth.when + timedelta(seconds=auth.expires):
        raise AuthError("AccessDenied", "Request has expired")


def _check_signed_headers(auth: _Auth, headers: Mapping[str, str]) -> None:
    signed = set(auth.header_names)
    unsigned = sorted(name for name in headers if name.startswith("x-amz-") and name not in signed)
    if unsigned:
        raise AuthError("AccessDenied", f"There were headers present in the request which were not signed: {_shown(', '.join(unsigned))}")


def _payload_hash(auth: _Auth, headers: Mapping[str, str], query: list[tuple[bytes, bytes]]) -> str:
    """What the client signed as the payload's hash; S3 requires x-amz-content-sha256 on header auth."""
    if auth.presigned:
        given = [v.decode("utf-8", "replace") for k, v in query if k == b"X-Amz-Content-Sha256"]
        value = given[0] if given else headers.get("x-amz-content-sha256", UNSIGNED_PAYLOAD)
    else:
        if "x-amz-content-sha256" not in headers:
            raise AuthError("InvalidRequest", "Missing required header for this request: x-amz-content-sha256")
        if "x-amz-content-sha256" not in auth.header_names:
            raise AuthError("InvalidRequest", "header 'x-amz-content-sha256' must be included in signature")
        value = headers["x-amz-content-sha256"]
    if value != UNSIGNED_PAYLOAD and not _HEX64.fullmatch(value) and not _STREAMING.fullmatch(value):
        raise AuthError("InvalidArgument", "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, a STREAMING-* payload type or a valid sha256 value.")
    return value
