"""desq.conditional: RFC 9110's conditional requests and ranges, decided from headers alone."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from desq.conditional import (
    MAX_AGE_LIMIT, Answer, Unsatisfiable, Validators, byte_range, cache_control, decide, entity_tags, http_date,
    if_range_holds, last_modified, made_private, needs_validators, parse_http_date, preconditions, served_type,
)

MODIFIED = datetime(2025, 11, 20, 8, 30, 0, tzinfo=timezone.utc)
V = Validators("e1", MODIFIED)
V1 = Validators("e1", None)  # DES v1: no created_at
BEFORE, AT, AFTER = "Thu, 20 Nov 2025 08:29:59 GMT", "Thu, 20 Nov 2025 08:30:00 GMT", "Thu, 20 Nov 2025 08:30:01 GMT"
HUGE = "9" * 5000


# --- entity tags and dates ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "tags"),
    [
        ('"e1"', [(False, "e1")]),
        ('W/"e1"', [(True, "e1")]),
        ('"a", W/"b" ,"c"', [(False, "a"), (True, "b"), (False, "c")]),
        (',, "a",,', [(False, "a")]),
        ('""', [(False, "")]),
        ('"a,b"', [(False, "a,b")]),  # a comma is an etagc: one tag, not two
        ('"x,e1"', [(False, "x,e1")]),
        ("e1", []),
        ('"e1', []),
        ('e1"', []),
        ('w/"e1"', []),  # W/ is case-sensitive
        ('W/ "e1"', []),
        ('"e1"x, "e2"', [(False, "e2")]),
        ('"a b"', []),  # no space inside a tag
        ("", []),
        ("*", []),
        ("," * 6000, []),
    ],
)
def test_entity_tags(value: str, tags: list[tuple[bool, str]]) -> None:
    assert entity_tags(value) == tags


NOV6 = datetime(1994, 11, 6, 8, 49, 37, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("value", "moment"),
    [
        ("Sun, 06 Nov 1994 08:49:37 GMT", NOV6),
        ("Sunday, 06-Nov-94 08:49:37 GMT", NOV6),
        ("Sun Nov  6 08:49:37 1994", NOV6),
        ("Sun Nov 16 08:49:37 1994", NOV6.replace(day=16)),
        ("  Sun, 06 Nov 1994 08:49:37 GMT\t", NOV6),
        ("Tue, 30 Jun 2015 23:59:60 GMT", datetime(2015, 6, 30, 23, 59, 59, tzinfo=timezone.utc)),  # leap second
        ("Sat, 01 Jan 0001 00:00:00 GMT", datetime(1, 1, 1, tzinfo=timezone.utc)),
        ("Fri, 31 Dec 9999 23:59:59 GMT", datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc)),
        ("Sun, 06 Nov 1994 08:49:37 UTC", None),
        ("Sun, 06 Nov 1994 08:49:37 +0000", None),
        ("Sun, 6 Nov 1994 08:49:37 GMT", None),
        ("Sun, 06 Nov 94 08:49:37 GMT", None),
        ("Sun, 31 Feb 1994 08:49:37 GMT", None),
        ("Sun, 06 Foo 1994 08:49:37 GMT", None),
        ("Sun, 06 Nov 1994 24:00:00 GMT", None),
        ("Sun, 06 Nov 1994 08:61:00 GMT", None),
        ("Sun, 06 Nov 1994 08:49:61 GMT", None),
        ("Sun, 00 Nov 1994 08:49:37 GMT", None),
        ("Sun, 06 Nov 0000 08:49:37 GMT", None),
        ("Sun, 06 Nov 1994 08:49:37 GMT, Mon, 07 Nov 1994 08:49:37 GMT", None),  # a list: ignored
        ("1994-11-06T08:49:37Z", None),
        ("784111777", None),
        ("yesterday", None),
        ("", None),
        (None, None),
        ("\x00\xff" * 100, None),
        ("Sun, " + HUGE + " Nov 1994 08:49:37 GMT", None),
    ],
)
def test_http_dates(value: str | None, moment: datetime | None) -> None:
    assert parse_http_date(value) == moment


def test_a_two_digit_year_more_than_50_years_ahead_is_the_century_before() -> None:
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert parse_http_date("Thursday, 01-Jan-76 00:00:00 GMT", now).year == 2076
    assert parse_http_date("Friday, 01-Jan-77 00:00:00 GMT", now).year == 1977
    assert parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT", now) == NOV6


def test_http_date_round_trips_and_ignores_the_locale() -> None:
    for moment in (NOV6, datetime(1, 1, 1, tzinfo=timezone.utc), datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc)):
        assert parse_http_date(http_date(moment)) == moment
    assert http_date(NOV6) == "Sun, 06 Nov 1994 08:49:37 GMT"
    assert http_date(datetime(1994, 11, 6, 9, 49, 37, tzinfo=timezone(timedelta(hours=1)))) == "Sun, 06 Nov 1994 08:49:37 GMT"


def test_last_modified_is_whole_seconds_in_utc_and_never_in_the_future() -> None:
    now = datetime(2025, 11, 21, tzinfo=timezone.utc)
    warsaw = timezone(timedelta(hours=1))
    assert last_modified(datetime(2025, 11, 20, 9, 30, 0, 999_999, tzinfo=warsaw), now) == MODIFIED
    assert last_modified(now + timedelta(days=3, microseconds=5), now) == now
    assert last_modified(None, now) is None


@pytest.mark.parametrize(("max_age", "private", "value"), [(86400, False, "max-age=86400"), (0, True, "private, max-age=0"), (2**40, False, f"max-age={MAX_AGE_LIMIT}")])
def test_cache_control(max_age: int, private: bool, value: str) -> None:
    assert cache_control(max_age, private) == value


@pytest.mark.parametrize(("given", "made"), [
    ("max-age=86400", "private, max-age=86400"), ("public, max-age=60", "private, max-age=60"), ("private, max-age=5", "private, max-age=5"),
    ("PUBLIC,no-cache", "private, no-cache"), ("", "private"), (" , ,", "private"),
])
def test_made_private(given: str, made: str) -> None:
    assert made_private(given) == made


@pytest.mark.parametrize(
    ("stored", "served"),
    [
        ("text/plain", "text/plain"),  # never "; charset=utf-8" added
        ("text/plain; charset=ISO-8859-2", "text/plain; charset=ISO-8859-2"),
        ("application/pdf", "application/pdf"),
        (" image/png\t", "image/png"),
        (None, "application/octet-stream"),
        ("", "application/octet-stream"),
        ("   ", "application/octet-stream"),
        ("text/plain\r\nSet-Cookie: x=1", "application/octet-stream"),
        ("text/plain\x00", "application/octet-stream"),
        ("text/zażółć", "application/octet-stream"),
    ],
)
def test_served_type(stored: str | None, served: str) -> None:
    assert served_type(stored) == served


# --- preconditions (RFC 9110 13.2.2, steps 1-4) ---------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "verdict"),
    [
        ({}, None),
        ({"If-Match": '"e1"'}, None),
        ({"If-Match": '"x", "e1"'}, None),
        ({"If-Match": "*"}, None),
        ({"If-Match": " * "}, None),
        ({"If-Match": '"x"'}, 412),
        ({"If-Match": 'W/"e1"'}, 412),  # If-Match compares strongly
        ({"If-Match": '"x,e1"'}, 412),  # one tag holding a comma, not "e1"
        ({"If-Match": "e1"}, 412),  # unquoted: not a tag
        ({"If-Match": ""}, 412),
        ({"If-Match": "garbage\x01"}, 412),
        ({"If-Match": '"*"'}, 412),
        ({"If-Unmodified-Since": AT}, None),
        ({"If-Unmodified-Since": AFTER}, None),
        ({"If-Unmodified-Since": BEFORE}, 412),
        ({"If-Unmodified-Since": "garbage"}, None),  # a malformed date is ignored
        ({"If-Match": '"e1"', "If-Unmodified-Since": BEFORE}, None),  # If-Match decides alone
        ({"If-Match": '"x"', "If-Unmodified-Since": AFTER}, 412),
        ({"If-None-Match": '"e1"'}, 304),
        ({"If-None-Match": 'W/"e1"'}, 304),  # If-None-Match compares weakly
        ({"If-None-Match": '"a", W/"e1"'}, 304),
        ({"If-None-Match": "*"}, 304),
        ({"If-None-Match": '"x"'}, None),
        ({"If-None-Match": "e1"}, None),
        ({"If-None-Match": '"x,e1"'}, None),
        ({"If-None-Match": ""}, None),
        ({"If-None-Match": ", ".join(f'"{i}"' for i in range(700))}, None),
        ({"If-Modified-Since": AT}, 304),
        ({"If-Modified-Since": AFTER}, 304),
        ({"If-Modified-Since": BEFORE}, None),
        ({"If-Modified-Since": "Sunday, 20-Nov-25 08:30:00 GMT"}, 304),
        ({"If-Modified-Since": "Thu Nov 20 08:30:00 2025"}, 304),
        ({"If-Modified-Since": "Thu, 20 Nov 2025 08:30:00 +0000"}, None),  # not an HTTP-date
        ({"If-Modified-Since": "yesterday"}, None),
        ({"If-None-Match": '"x"', "If-Modified-Since": AT}, None),  # If-None-Match decides alone
        ({"If-None-Match": '"e1"', "If-Modified-Since": BEFORE}, 304),
        ({"If-Match": '"x"', "If-None-Match": '"e1"'}, 412),  # 412 before 304
        ({"If-Unmodified-Since": BEFORE, "If-None-Match": '"e1"'}, 412),
        ({"If-Match": '"e1"', "If-None-Match": '"e1"'}, 304),
        ({"If-Unmodified-Since": AT, "If-Modified-Since": AT}, 304),
    ],
)
def test_preconditions_in_rfc_9110_order(headers: dict[str, str], verdict: int | None) -> None:
    assert preconditions(headers, V) == verdict


def test_dates_are_left_out_for_a_file_without_a_time() -> None:
    assert preconditions({"If-Unmodified-Since": BEFORE}, V1) is None
    assert preconditions({"If-Modified-Since": AFTER}, V1) is None
    assert preconditions({"If-None-Match": '"e1"'}, V1) == 304


# --- ranges (RFC 9110 14.1.2) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 10, None),
        ("", 10, None),
        ("bytes=0-3", 10, (0, 4)),
        ("bytes=0-0", 10, (0, 1)),
        ("bytes=2-", 10, (2, 10)),
        ("bytes=-3", 10, (7, 10)),
        ("bytes=-1", 10, (9, 10)),
        ("bytes=-10", 10, (0, 10)),
        ("bytes=-30", 10, (0, 10)),
        ("bytes=5-500", 10, (5, 10)),
        ("bytes=9-9", 10, (9, 10)),
        ("bytes=9-", 10, (9, 10)),
        ("bytes=0-9", 10, (0, 10)),
        ("BYTES=0-3", 10, (0, 4)),  # a range unit is case-insensitive
        ("bytes = 0 - 3", 10, (0, 4)),
        ("bytes=0-" + HUGE, 10, (0, 10)),
        ("bytes=-" + HUGE, 10, (0, 10)),
        ("bytes=0-18446744073709551616", 10, (0, 10)),
        ("bytes=" + "0" * 5000 + "3-", 10, (3, 10)),
        ("bytes=0-1,3-4", 10, None),  # several ranges: the whole file
        ("bytes=5-2", 10, None),
        ("bytes=-", 10, None),
        ("bytes=", 10, None),
        ("bytes", 10, None),
        ("bytes=--5", 10, None),
        ("bytes=0x1-0x2", 10, None),
        ("bytes=1e3-", 10, None),
        ("bytes=+5-", 10, None),
        ("bytes=\u0660-\u0665", 10, None),  # Arabic-Indic digits are not DIGIT
        ("bytes=1 2-", 10, None),
        ("items=0-3", 10, None),
        ("garbage", 10, None),
        ("bytes=10-", 10, "416"),
        ("bytes=10-20", 10, "416"),
        ("bytes=" + HUGE + "-", 10, "416"),
        ("bytes=18446744073709551616-", 10, "416"),
        ("bytes=-0", 10, "416"),
        ("bytes=-" + "0" * 5000, 10, "416"),
        ("bytes=0-0", 0, "416"),
        ("bytes=0-", 0, "416"),
        ("bytes=-5", 0, "416"),
    ],
)
def test_byte_ranges(header: str | None, size: int, expected: object) -> None:
    if expected == "416":
        with pytest.raises(Unsatisfiable) as info:
            byte_range(header, size)
        assert (info.value.size, info.value.content_range) == (size, f"bytes */{size}")
    else:
        assert byte_range(header, size) == expected


@pytest.mark.parametrize(
    ("value", "validators", "holds"),
    [
        (None, V, True),
        ('"e1"', V, True),
        (' "e1" ', V, True),
        ('W/"e1"', V, False),  # If-Range compares strongly
        ('"x"', V, False),
        ('"e1", "x"', V, False),
        ('"e1"x', V, False),
        (AT, V, True),
        (AFTER, V, False),  # only the exact date
        (BEFORE, V, False),
        (AT, V1, False),  # no Last-Modified: a date never holds
        ("", V, False),
        ("garbage", V, False),
        ("\xff\xfe garbage", V, False),
    ],
)
def test_if_range(value: str | None, validators: Validators, holds: bool) -> None:
    assert if_range_holds(value, validators) is holds


# --- the whole decision ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "answer"),
    [
        ({}, Answer(200, 0, 10)),
        ({"Range": "bytes=2-4"}, Answer(206, 2, 5)),
        ({"Range": "bytes=-0"}, Answer(416)),
        ({"Range": "bytes=10-"}, Answer(416)),
        ({"If-None-Match": '"e1"', "Range": "bytes=10-"}, Answer(304)),  # 304 before 416
        ({"If-None-Match": '"e1"', "Range": "bytes=-0"}, Answer(304)),
        ({"If-Match": '"x"', "Range": "bytes=0-4"}, Answer(412)),  # 412, not 206
        ({"If-Match": '"x"', "Range": "bytes=10-"}, Answer(412)),  # 412 before 416
        ({"If-Unmodified-Since": BEFORE, "Range": "bytes=0-4"}, Answer(412)),
        ({"If-Modified-Since": AT, "Range": "bytes=10-"}, Answer(304)),
        ({"If-Match": '"e1"', "Range": "bytes=0-4"}, Answer(206, 0, 5)),
        ({"If-None-Match": '"x"', "Range": "bytes=0-4"}, Answer(206, 0, 5)),
        ({"If-Range": '"e1"', "Range": "bytes=0-4"}, Answer(206, 0, 5)),
        ({"If-Range": AT, "Range": "bytes=0-4"}, Answer(206, 0, 5)),
        ({"If-Range": '"x"', "Range": "bytes=0-4"}, Answer(200, 0, 10)),  # not the file the client holds part of
        ({"If-Range": 'W/"e1"', "Range": "bytes=0-4"}, Answer(200, 0, 10)),
        ({"If-Range": '"e1"', "Range": "bytes=10-"}, Answer(416)),
        ({"If-Range": '"x"', "Range": "bytes=10-"}, Answer(200, 0, 10)),  # Range ignored: nothing unsatisfiable
        ({"If-Range": '"x"'}, Answer(200, 0, 10)),
        ({"Range": "bytes=0-1,5-6"}, Answer(200, 0, 10)),
    ],
)
def test_decide_in_rfc_9110_order(headers: dict[str, str], answer: Answer) -> None:
    assert decide(headers, 10, V) == answer


def test_decide_needs_no_validators_for_a_plain_or_ranged_read() -> None:
    assert not needs_validators({}) and not needs_validators({"Range": "bytes=0-1"}) and not needs_validators({"If-Range": '"e1"'})
    assert decide({"Range": "bytes=-0"}, 10, None) == Answer(416)
    assert decide({"Range": "bytes=0-1"}, 10, None) == Answer(206, 0, 2)
    for name in ("If-Match", "If-Unmodified-Since", "If-None-Match", "If-Modified-Since"):
        assert needs_validators({name: "x"})
        with pytest.raises(ValueError):
            decide({name: "x"}, 10, None)
    assert needs_validators({"Range": "bytes=0-1", "If-Range": '"e1"'})


def test_an_empty_file() -> None:
    assert decide({}, 0, V) == Answer(200, 0, 0)
    assert decide({"Range": "bytes=0-"}, 0, V) == Answer(416)
    assert decide({"Range": "bytes=0-", "If-None-Match": "*"}, 0, V) == Answer(304)


HOSTILE = [
    "bytes=" + " \t" * 4000 + "-" + " " * 4000 + "x",
    "bytes=" + " " * 8000 + "x",
    "bytes" + " " * 8000 + "=0-1x",
    "bytes=-" + " " * 8000 + "x",
    "bytes=" + "1-" * 4000,
    "bytes=" + ",".join(["0-4999"] * 900),
]


def test_hostile_headers_take_linear_time() -> None:
    import time

    started = time.perf_counter()
    for header in HOSTILE:
        assert byte_range(header, 10) is None
        assert entity_tags(header.replace("-", '"')) is not None
        assert parse_http_date(header) is None
    assert entity_tags('"a,' * 2700) == [] and entity_tags('"a"x,' * 1600) == []
    assert time.perf_counter() - started < 0.5  # a backtracking pattern took seconds on the first of these
