"""The HTTP answer to a read of one immutable member, decided from its request headers alone.

RFC 9110 13.2.2's order: If-Match (else If-Unmodified-Since) may fail the request (412); then
If-None-Match (else If-Modified-Since) may answer 304; then Range, honoured only while If-Range
holds, gives 206 or 416. If-None-Match compares entity tags weakly, If-Match and If-Range strongly
(a ``W/`` tag never matches them). A date that is not an HTTP-date, or a file without a known time,
leaves its header out; dates compare at whole seconds. One ``bytes=`` range is served; several, a
malformed one or another unit are ignored (the whole file), as RFC 9110 allows. The files API and
the s3 role both decide with this module; neither reads a member's bytes before it has decided.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

PRECONDITIONS = ("If-Match", "If-Unmodified-Since", "If-None-Match", "If-Modified-Since")
"""The headers that need the member's validators before anything else is decided."""
MAX_AGE_LIMIT = 2**31
"""RFC 9111 1.2.2: a cache need not understand a longer max-age."""
OCTET_STREAM = "application/octet-stream"

_TAG = re.compile(r'[ \t]*(W/)?"([\x21\x23-\x7e\x80-\xff]*)"[ \t]*(?:,|$)')
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_LONG_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_CLOCK = r"([0-9]{2}):([0-9]{2}):([0-9]{2})"
_MONTH = "(" + "|".join(_MONTHS) + ")"
_IMF = re.compile(r"(?:" + "|".join(_DAYS) + r"), ([0-9]{2}) " + _MONTH + r" ([0-9]{4}) " + _CLOCK + " GMT")
_RFC850 = re.compile(r"(?:" + "|".join(_LONG_DAYS) + r"), ([0-9]{2})-" + _MONTH + r"-([0-9]{2}) " + _CLOCK + " GMT")
_ASCTIME = re.compile(r"(?:" + "|".join(_DAYS) + r") " + _MONTH + r" ([ 0-9][0-9]) " + _CLOCK + r" ([0-9]{4})")
_DIGITS = re.compile(r"[0-9]*")
_HUGE = 1 << 63
_FIELD_TEXT = re.compile(r"[\x20-\x7e\t]+")


class Unsatisfiable(Exception):
    """A ``Range`` none of whose bytes are in a file of ``size`` bytes (416)."""

    def __init__(self, size: int) -> None:
        super().__init__(f"the range is outside the file's {size} bytes")
        self.size = size

    @property
    def content_range(self) -> str:
        """The 416's ``Content-Range`` (RFC 9110 14.4)."""
        return f"bytes */{self.size}"


@dataclass(frozen=True, slots=True)
class Validators:
    """What conditional headers are compared with: the strong ETag (unquoted) and Last-Modified
    (UTC, whole seconds; None when the file's time is not recorded)."""

    etag: str
    last_modified: datetime | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """The status of a read: 200 (bytes ``[0, size)``), 206 (bytes ``[start, stop)``), 304, 412 or 416."""

    status: int
    start: int = 0
    stop: int = 0


# --- field values --------------------------------------------------------------------------------


def entity_tags(value: str) -> list[tuple[bool, str]]:
    """The well-formed ``(weak, opaque)`` tags of a list (RFC 9110 8.8.3); other members are skipped."""
    tags: list[tuple[bool, str]] = []
    at, end = 0, len(value)
    while at < end:
        if value[at] in ", \t":
            at += 1
            continue
        match = _TAG.match(value, at)
        if match is None:
            comma = value.find(",", at)
            at = end if comma < 0 else comma + 1
            continue
        tags.append((match.group(1) is not None, match.group(2)))
        at = match.end()
    return tags


def parse_http_date(value: str | None, now: datetime | None = None) -> datetime | None:
    """An HTTP-date (IMF-fixdate, RFC 850 or asctime; RFC 9110 5.6.7) in UTC, or None.

    A two-digit RFC 850 year more than 50 years after ``now`` is the century before.
    """
    text = (value or "").strip(" \t")
    try:
        if match := _IMF.fullmatch(text):
            day, month, year, hh, mm, ss = match.groups()
            return _moment(int(year), month, int(day), hh, mm, ss)
        if match := _RFC850.fullmatch(text):
            day, month, yy, hh, mm, ss = match.groups()
            current = (now or datetime.now(timezone.utc)).year
            year = current - current % 100 + int(yy)
            year -= 100 if year > current + 50 else 0
            return _moment(year, month, int(day), hh, mm, ss)
        if match := _ASCTIME.fullmatch(text):
            month, day, hh, mm, ss, year = match.groups()
            return _moment(int(year), month, int(day), hh, mm, ss)
    except ValueError:
        return None
    return None


def _moment(year: int, month: str, day: int, hh: str, mm: str, ss: str) -> datetime:
    second = 59 if ss == "60" else int(ss)  # a leap second is the second before it
    return datetime(year, _MONTHS.index(month) + 1, day, int(hh), int(mm), second, tzinfo=timezone.utc)


def http_date(moment: datetime) -> str:
    """``moment`` as an IMF-fixdate (``Sun, 06 Nov 1994 08:49:37 GMT``), whatever the locale."""
    utc = moment.astimezone(timezone.utc)
    return f"{_DAYS[utc.weekday()]}, {utc.day:02d} {_MONTHS[utc.month - 1]} {utc.year:04d} {utc:%H:%M:%S} GMT"


def last_modified(created_at: datetime | None, now: datetime) -> datetime | None:
    """A file's Last-Modified: its created_at at whole seconds in UTC, never later than ``now``
    (RFC 9110 8.8.2.1: a time in the future is replaced by the time of the answer)."""
    if created_at is None:
        return None
    return min(created_at.astimezone(timezone.utc), now.astimezone(timezone.utc)).replace(microsecond=0)


def cache_control(max_age: int, private: bool) -> str:
    """The Cache-Control of a member: its bytes never change under its ETag, so it stays fresh
    ``max_age`` seconds; ``private`` (no shared cache) when reads need a token.

    Never ``public``: it would add only that shared caches may store answers to requests that carry
    Authorization (RFC 9111 3.5), which is what must not happen to a token's answers.
    """
    age = f"max-age={min(max_age, MAX_AGE_LIMIT)}"
    return f"private, {age}" if private else age


def made_private(value: str) -> str:
    """A Cache-Control value with ``private`` (and never ``public``): what a router that checks tokens
    sends on for a backend that checks none, so no shared cache keeps a token's answers."""
    directives = [d.strip() for d in value.split(",") if d.strip() and d.strip().lower() not in ("public", "private")]
    return ", ".join(["private", *directives])


def served_type(stored: str | None) -> str:
    """The Content-Type of a member: the stored one exactly (no charset added), or
    application/octet-stream when none is stored or it is not text a header field can carry."""
    text = (stored or "").strip(" \t")
    return text if _FIELD_TEXT.fullmatch(text) else OCTET_STREAM


# --- the decisions -------------------------------------------------------------------------------


def preconditions(headers: Mapping[str, str], validators: Validators) -> int | None:
    """412, 304, or None (go on), from the conditional headers in RFC 9110 13.2.2's order (steps 1-4)."""
    etag, modified = validators.etag, validators.last_modified
    if_match = headers.get("If-Match")
    if if_match is not None:
        if if_match.strip(" \t") != "*" and (False, etag) not in entity_tags(if_match):
            return 412
    else:
        since = parse_http_date(headers.get("If-Unmodified-Since"))
        if since is not None and modified is not None and modified > since:
            return 412
    if_none_match = headers.get("If-None-Match")
    if if_none_match is not None:
        if if_none_match.strip(" \t") == "*" or any(opaque == etag for _, opaque in entity_tags(if_none_match)):
            return 304
        return None
    since = parse_http_date(headers.get("If-Modified-Since"))
    if since is not None and modified is not None and modified <= since:
        return 304
    return None


def _offset(digits: str) -> int:
    """A range's number; one of over 19 digits is past any file (and never handed to ``int``,
    which refuses strings of over 4,300 digits)."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 19 else _HUGE


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``[start, stop)`` of a single ``Range: bytes=`` (RFC 9110 14.1.2) in a file of ``size`` bytes,
    or None: the whole file (no header, several ranges, another unit or a malformed one).

    Unsatisfiable when it starts at or past the end, for a suffix of 0 bytes (``bytes=-0``) and for
    any range of an empty file; a suffix or an end past the end of the file stops at its end.
    """
    unit, equals, spec = (header or "").partition("=")
    first, dash, last = (part.strip(" \t") for part in spec.partition("-"))
    if unit.strip(" \t").lower() != "bytes" or not equals or not dash or not _DIGITS.fullmatch(first + last) or not (first or last):
        return None
    if not first:
        suffix = _offset(last)
        if suffix == 0 or size == 0:
            raise Unsatisfiable(size)
        return max(0, size - suffix), size
    start = _offset(first)
    if last and _offset(last) < start:
        return None
    if start >= size:
        raise Unsatisfiable(size)
    return start, min(size, _offset(last) + 1) if last else size


def if_range_holds(value: str | None, validators: Validators) -> bool:
    """No If-Range, or one naming this file exactly: its strong ETag, or its Last-Modified to the
    second (RFC 9110 13.1.5). Anything else (a weak tag, another date, garbage) does not hold."""
    if value is None:
        return True
    text = value.strip(" \t")
    if text.startswith(('"', "W/")):
        return entity_tags(text) == [(False, validators.etag)] and text.startswith('"')
    since = parse_http_date(text)
    return since is not None and since == validators.last_modified


def needs_validators(headers: Mapping[str, str]) -> bool:
    """Whether deciding needs the member's ETag or time (else its size alone decides)."""
    return any(name in headers for name in PRECONDITIONS) or ("Range" in headers and "If-Range" in headers)


def decide(headers: Mapping[str, str], size: int, validators: Validators | None) -> Answer:
    """The answer to a GET or HEAD of a file of ``size`` bytes (RFC 9110 13.2.2, steps 1-5).

    ``validators`` may be None only when ``needs_validators(headers)`` is false.
    """
    if validators is None and needs_validators(headers):
        raise ValueError("these conditional headers need the file's validators")
    if validators is not None:
        verdict = preconditions(headers, validators)
        if verdict is not None:
            return Answer(verdict)
    try:
        bounds, satisfiable = byte_range(headers.get("Range"), size), True
    except Unsatisfiable:
        bounds, satisfiable = (0, 0), False
    if bounds is not None and validators is not None and not if_range_holds(headers.get("If-Range"), validators):
        bounds = None
    if bounds is None:
        return Answer(200, 0, size)
    return Answer(206, *bounds) if satisfiable else Answer(416)
