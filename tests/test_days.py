"""A file's day (desq.days): every ISO 8601 form, midnights, DST days, offsets and bad values."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from desq import days
from desq.days import DayError

UTC = timezone.utc
WARSAW = ZoneInfo("Europe/Warsaw")
HAVANA = ZoneInfo("America/Havana")  # DST begins at midnight: 00:00 never happens that day


@pytest.mark.parametrize(
    ("text", "zone", "expected"),
    [
        ("2025-11-14 00:00:00", UTC, date(2025, 11, 14)),  # the midnight a string comparison put a day early
        ("2025-11-14", UTC, date(2025, 11, 14)),
        ("2025-11-14T00:00", UTC, date(2025, 11, 14)),
        ("2025-11-13 23:59:59.999999", UTC, date(2025, 11, 13)),
        ("2025-11-14 00:00:00.000001", UTC, date(2025, 11, 14)),
        ("2025-11-14 00:00:00.1234567", UTC, date(2025, 11, 14)),
        ("2025-11-14 00:00:00,5", UTC, date(2025, 11, 14)),
        ("2025-11-14T00:00:00Z", UTC, date(2025, 11, 14)),
        ("2025-11-14t00:00:00z", UTC, date(2025, 11, 14)),
        ("2025-11-14T00:30:00+01:00", UTC, date(2025, 11, 13)),
        ("2025-11-14T00:30:00+0100", UTC, date(2025, 11, 13)),
        ("2025-11-14 23:30:00-01", UTC, date(2025, 11, 15)),
        ("2025-11-14 23:30:00 +00:00", WARSAW, date(2025, 11, 15)),
        ("2025-11-14T23:00:00Z", WARSAW, date(2025, 11, 15)),  # midnight in Warsaw (UTC+1)
        ("2025-11-14T22:59:59.999999Z", WARSAW, date(2025, 11, 14)),
        ("2025-11-14 23:30:00", WARSAW, date(2025, 11, 14)),  # no offset: already Warsaw time
        ("20251114T000000Z", UTC, date(2025, 11, 14)),
        ("2025-W46-5", UTC, date(2025, 11, 14)),
        ("2025-11-14T24:00:00", UTC, date(2025, 11, 15)),  # ISO 8601's end of day
        ("2025-11-14T24:00Z", WARSAW, date(2025, 11, 15)),
        ("  2025-11-14 10:00:00\n", UTC, date(2025, 11, 14)),
        ("2025-10-26 02:30:00", WARSAW, date(2025, 10, 26)),  # ambiguous local time: still its date
        ("2025-03-30 02:30:00", WARSAW, date(2025, 3, 30)),  # a local time that never happened
    ],
)
def test_day_of_text(text: str, zone: ZoneInfo, expected: date) -> None:
    assert days.day_of(text, zone) == expected


@pytest.mark.parametrize(
    "value",
    [None, "", "yesterday", "20/11/2025 10:00", "2025-13-01", "2025-02-30 10:00", "2025-11-14 25:00", "2025-11-14 garbage",
     "9999-12-31T24:00:00", 1731542400, 1731542400.5, True, b"2025-11-14", object(), "2025-11-14" + " " * 10 + "0" * 40],
)
def test_values_without_a_day(value: object) -> None:
    with pytest.raises(DayError):
        days.day_of(value, UTC)


def test_years_at_the_edges() -> None:
    assert days.day_of("0001-01-01 00:00:00", UTC) == date(1, 1, 1)
    assert days.day_of("9999-12-31 23:59:59", UTC) == date(9999, 12, 31)
    with pytest.raises(DayError, match="outside the years"):
        days.day_of("0001-01-01T00:30:00+01:00", UTC)
    with pytest.raises(DayError, match="outside the years"):
        days.day_of("9999-12-31T23:00:00Z", ZoneInfo("Asia/Tokyo"))
    assert days.next_day(date.max) is None and days.shifted(date.min, -1) is None


def test_native_values() -> None:
    assert days.day_of(date(2025, 11, 14), WARSAW) == date(2025, 11, 14)
    assert days.day_of(datetime(2025, 11, 14, 23, 30), WARSAW) == date(2025, 11, 14)
    assert days.day_of(datetime(2025, 11, 14, 23, 30, tzinfo=UTC), WARSAW) == date(2025, 11, 15)


def test_start_of_day_on_dst_days() -> None:
    assert days.start_of_day(date(2025, 11, 20), WARSAW) == datetime(2025, 11, 19, 23, tzinfo=UTC)
    assert days.start_of_day(date(2025, 3, 30), WARSAW) == datetime(2025, 3, 29, 23, tzinfo=UTC)  # a 23-hour day
    assert days.start_of_day(date(2025, 10, 27), WARSAW) - days.start_of_day(date(2025, 10, 26), WARSAW) == timedelta(hours=25)
    havana = days.start_of_day(date(2013, 3, 10), HAVANA)  # the clocks jumped from 00:00 to 01:00
    assert havana == datetime(2013, 3, 10, 5, tzinfo=UTC) and havana.astimezone(HAVANA).date() == date(2013, 3, 10)
    assert (havana - timedelta(microseconds=1)).astimezone(HAVANA).date() == date(2013, 3, 9)


def test_aware_and_target_day() -> None:
    assert days.aware("2025-11-14 10:00", WARSAW) == datetime(2025, 11, 14, 10, tzinfo=WARSAW)
    assert days.aware(date(2025, 11, 14), WARSAW) == datetime(2025, 11, 14, tzinfo=WARSAW)
    assert days.aware("garbage", UTC) is None
    assert days.target_day(date(2025, 11, 28), 7) == date(2025, 11, 20)


ZONES = [UTC, WARSAW, HAVANA, ZoneInfo("Pacific/Kiritimati"), ZoneInfo("Pacific/Pago_Pago"), ZoneInfo("Asia/Kolkata")]
OFFSETS = st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda m: timezone(timedelta(minutes=m)))


@given(
    instant=st.datetimes(min_value=datetime(1900, 1, 2), max_value=datetime(2100, 1, 1)),
    offset=OFFSETS,
    zone=st.sampled_from(ZONES),
    sep=st.sampled_from(["T", " "]),
    fraction=st.booleans(),
)
def test_every_text_form_of_an_instant_has_its_day(instant: datetime, offset: timezone, zone: ZoneInfo, sep: str, fraction: bool) -> None:
    moment = instant.replace(tzinfo=UTC).astimezone(offset)
    text = moment.isoformat(sep=sep, timespec="microseconds" if fraction else "seconds")
    assert days.day_of(text, zone) == moment.astimezone(zone).date()
    naive = moment.replace(tzinfo=None).isoformat(sep=sep)
    assert days.day_of(naive, zone) == moment.date()
