"""The checks of setting values: each raises ValueError with the reason, in one line."""

from __future__ import annotations

import re
import string
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from desq import layout
from desq.s3 import config as s3_config

# ``scheme://[user]:password@``. The password is hidden up to the last "@": SQLAlchemy reads a
# password up to the first "@" and lets it hold "/", "?" and "#", urllib (redis, kombu) up to the
# last; hiding up to the last covers both.
_URL_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/]*:).*@")


def hide_password(url: str) -> str:
    """``url`` with the password of its user info replaced by ``***`` (anything else unchanged)."""
    return _URL_PASSWORD.sub(r"\1***@", url, count=1)


def check_zone(value: str) -> None:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}") from None


def check_prefix(value: str) -> None:
    if value:
        layout.check_prefix(value)


def check_nonempty(value: str) -> None:
    if not value.strip():
        raise ValueError("must not be empty")
    if "\x00" in value:
        raise ValueError("must not contain NUL")


def check_db_url(value: str) -> None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(value)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number; its text may hold the password
        raise ValueError("is not an SQLAlchemy database URL (e.g. postgresql://host/db)") from None


def check_optional_db_url(value: str) -> None:
    if value:
        check_db_url(value)


def check_archive_url(value: str) -> None:
    check_nonempty(value)
    scheme = urlsplit(value).scheme if "://" in value else ""
    if scheme == "s3":
        bucket = urlsplit(value).netloc
        if not s3_config.BUCKET_RE.fullmatch(bucket):
            raise ValueError(f"S3 bucket {bucket!r} is not a valid bucket name (3-63 of a-z 0-9 . -)")
    elif scheme == "file":
        if not value.startswith("file:///"):
            raise ValueError("a file URL must be absolute: file:///abs/path")
    elif scheme == "ec":
        ec_code(value)
    elif scheme:
        raise ValueError(f"scheme {scheme!r} is not supported: use a path, file:///abs/path, s3://bucket/prefix or ec://K+M")


EC_URL = re.compile(r"ec://([0-9]{1,3})\+([0-9]{1,3})")


def ec_code(url: str) -> tuple[int, int]:
    """(K, M) of an ``ec://K+M`` archive url; ValueError if it is malformed."""
    match = EC_URL.fullmatch(url)
    if not match:
        raise ValueError(f"{url!r} is not ec://K+M (e.g. ec://4+2)")
    k, m = int(match.group(1)), int(match.group(2))
    if not (1 <= k and 1 <= m and k + m <= 64):
        raise ValueError(f"{url!r}: need K >= 1, M >= 1 and K + M <= 64")
    return k, m


def check_nodes(value: tuple[str, ...]) -> None:
    for node in value:
        url, _, query = node.partition("?")
        if url.startswith("ec://"):
            raise ValueError(f"node {node!r}: a node is a folder or an s3:// location, not another ec:// archive")
        check_archive_url(url)
        if query:
            if not url.startswith("s3://") or not query.startswith("endpoint="):
                raise ValueError(f"node {node!r}: only s3:// nodes take a query, and only ?endpoint=http(s)://host:port")
            check_http_url(query.removeprefix("endpoint="))
    if len(set(value)) != len(value):
        raise ValueError("lists a node twice")


def check_http_url(value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{hide_password(value)!r} is not an http(s) URL")
    try:
        _ = parts.port  # urlsplit checks the port only when it is asked for it
    except ValueError:
        raise ValueError(f"{hide_password(value)!r} has an invalid port") from None


def check_optional_http_url(value: str) -> None:
    if value:
        check_http_url(value)


def check_broker_url(value: str) -> None:
    if value and not re.fullmatch(r"[a-z][a-z0-9+.-]*://.*", value):
        raise ValueError("is not a broker URL (e.g. redis://host:6379/0)")


def check_backends(value: tuple[str, ...]) -> None:
    for url in value:
        check_http_url(url)
    if len(set(value)) != len(value):
        raise ValueError("lists a backend twice")


def check_tokens(value: tuple[str, ...]) -> None:
    for token in value:
        if len(token) < 16 or not re.fullmatch(r"[\x21-\x7e]+", token):
            raise ValueError("every token must be at least 16 printable ASCII characters, no spaces")


ORIGINAL_FIELDS = ("uid", "date", "path")
"""The placeholders of ``web.original_url``: the uid (quoted whole), the day (YYYYMMDD), and the
row's path column (quoted, its slashes kept; looked up in the source table)."""


def check_original_url(value: str) -> None:
    if not value:
        return
    parts = urlsplit(value)
    if parts.scheme not in ("s3", "http", "https", "file"):
        raise ValueError("must be an s3://, http(s):// or file:/// URL template")
    try:
        parsed = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(value) if name is not None]
    except ValueError as exc:
        raise ValueError(f"is not a valid template: {exc}") from None
    fields = [name for name, _, _ in parsed]
    unknown = sorted(set(fields) - set(ORIGINAL_FIELDS))
    if unknown:
        raise ValueError(f"knows only the placeholders {{uid}}, {{date}} and {{path}}, not {unknown}")
    if not {"uid", "path"} & set(fields):
        raise ValueError("must contain the placeholder {uid} or {path}")
    if any(spec or conversion for _, spec, conversion in parsed):
        raise ValueError("placeholders take no format spec or conversion (write {uid}, {date}, {path})")
    if "path" in fields:
        if fields.count("path") > 1:
            raise ValueError("may hold {path} only once")
        before = value[: value.index("{path}")]
        where = urlsplit(before)
        if "{" in parts.netloc or not where.path.startswith("/"):
            raise ValueError("must name its bucket, host or folder before {path} (e.g. s3://live/{path}, file:///srv/live/{path})")
        if parts.scheme == "file" and where.path.rstrip("/") == "":
            raise ValueError("must name a folder before {path}, not / (every file of the machine)")


