"""A file's day (CONTRACT section 3): the calendar date of its created_at in the configured zone.

Pure functions, the one definition every part of desq uses: the marker, the planner, the packers'
row queries, the cutoff controller, ``locate``/``get`` and the files API. A value without an offset
is a local time in the zone; one with an offset or ``Z`` is converted to it. Text is read in any
ISO 8601 form Python's ``datetime.fromisoformat`` knows (space or ``T``, minutes only, fractions,
``Z``, offsets, the basic form ``20251114T000000Z``, week dates) in either case, plus the
end-of-day ``24:00``. Numbers are refused: an integer may be Unix seconds, milliseconds or a
Julian day, and a guess would file it on a wrong day without a word.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta, timezone, tzinfo

from desq.errors import LayoutError

EARLIEST_PLAUSIBLE = date(1900, 1, 1)
"""A created_at before this is archived under its day, but reported: usually a placeholder."""

TEXT_MARGIN_DAYS = 2
"""How far the date written in a text created_at can be from its day in the zone: an offset of up
to 24 h on the value plus up to 24 h between UTC and the zone (``24:00`` adds a day, still inside)."""

_END_OF_DAY = re.compile(r"(.{10}[T ])24(:00(:00(\.0+)?)?)?(?=$|[Zz+-])")


class DayError(LayoutError):
    """A created_at that cannot be placed on a day: NULL, not a time, or outside years 1..9999."""


def moment_of(value: object) -> datetime | date:
    """A created_at as the database returned it, as a datetime (or a plain date); DayError if not a time."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return value
    if value is None:
        raise DayError("created_at is NULL")
    if isinstance(value, (bool, int, float)):
        raise DayError(f"created_at {value!r} is a number, not a time (store ISO 8601 text or a timestamp)")
    if isinstance(value, (bytes, bytearray, memoryview)):
        raise DayError("created_at is binary data, not a time")
    if not isinstance(value, str):
        raise DayError(f"created_at {value!r} is not a time")
    return _parse_text(value)


def _parse_text(value: str) -> datetime:
    text = value.strip()
    if not 8 <= len(text) <= 40:
        raise DayError(f"created_at {value!r} is not a time (desq reads ISO 8601)")
    text = text.upper()  # ISO 8601's letters (T, Z, W) in either case; digits and signs are unchanged
    extra = timedelta(0)
    end = _END_OF_DAY.match(text)
    if end:
        text = f"{end.group(1)}00:00:00{text[end.end():]}"
        extra = timedelta(days=1)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise DayError(f"created_at {value!r} is not a time (desq reads ISO 8601)") from None
    try:
        return moment + extra
    except OverflowError:
        raise DayError(f"created_at {value!r} is after the year 9999") from None


def day_of(value: object, zone: tzinfo) -> date:
    """The day ``value`` (a datetime, a date or ISO 8601 text) falls on in ``zone``; DayError if none."""
    moment = moment_of(value)
    if not isinstance(moment, datetime):
        return moment
    if moment.tzinfo is None or moment.utcoffset() is None:
        return moment.date()
    try:
        return moment.astimezone(zone).date()
    except (OverflowError, ValueError):
        raise DayError(f"created_at {value!s} falls outside the years 1..9999 in {zone}") from None


def aware(value: object, zone: tzinfo) -> datetime | None:
    """``value`` as an aware datetime (a local time in ``zone`` when it has no offset; a plain date at
    the start of its day), or None when it is not a time or not an instant of the years 1..9999 in UTC."""
    try:
        moment = moment_of(value)
    except DayError:
        return None
    if not isinstance(moment, datetime):
        try:
            return start_of_day(moment, zone).astimezone(zone)
        except DayError:
            return None
    moment = moment if moment.utcoffset() is not None else moment.replace(tzinfo=zone)
    try:
        moment.astimezone(timezone.utc)
    except OverflowError:
        return None  # the year 1 just after midnight east of UTC: an instant before the year 1
    return moment


def start_of_day(day: date, zone: tzinfo) -> datetime:
    """The first instant of ``day`` in ``zone``, in UTC.

    Usually local midnight; where a DST change skips midnight (America/Havana), the instant the
    day begins; where midnight happens twice, the first of them.
    """
    starts = []
    for fold in (0, 1):
        local = datetime.combine(day, time.min, tzinfo=zone).replace(fold=fold)
        try:
            instant = local.astimezone(timezone.utc)
        except OverflowError:
            continue
        if instant.astimezone(zone).date() == day:
            starts.append(instant)
    if not starts:
        raise DayError(f"the start of {day} in {zone} is outside the years 1..9999")
    return min(starts)


def next_day(day: date) -> date | None:
    """The day after ``day``; None after 9999-12-31."""
    return None if day == date.max else day + timedelta(days=1)


def shifted(day: date, days: int) -> date | None:
    """``day`` moved by ``days``, None when that leaves the years 1..9999."""
    try:
        return day + timedelta(days=days)
    except OverflowError:
        return None


def iso_day(day: date) -> str:
    """``YYYY-MM-DD`` with a four-digit year (``isoformat`` pads too; ``%Y`` does not)."""
    return f"{day.year:04d}-{day.month:02d}-{day.day:02d}"


def target_day(today: date, after_days: int) -> date:
    """On night ``today``, the last day old enough to archive: its files are all at least
    ``after_days`` old."""
    return today - timedelta(days=after_days + 1)


def in_range(day: date, first: date | None, last: date | None) -> bool:
    """``first <= day <= last``, either end open when None."""
    return (first is None or day >= first) and (last is None or day <= last)
