"""The created_at column: which rows SQL selects for a range of days, for each way a table stores it.

``desq.days`` decides a value's day; this module narrows the rows in SQL so that the database sends
only the candidates. For native types the SQL is exact: ``timestamp with time zone`` (and MariaDB
``TIMESTAMP``, read in a UTC session) against the first instants of the days, naive ``timestamp``
/``DATETIME`` against local midnights, ``date`` against dates. Text (every SQLite table; text
columns anywhere) cannot be compared exactly, as ``'2025-11-14 00:00:00' < '2025-11-14
00:00:00.000000'`` shows, so the SQL selects generously by the written date and every reader
decides in Python with ``day()``: a text without an offset is on its written day (``24:00`` aside),
one with an offset within ``TEXT_MARGIN_DAYS`` of it, and a text that does not start ``YYYY-MM-DD``
(the basic form, week dates, garbage, SQLite numbers) is always selected, to be placed or reported.
"""

from __future__ import annotations

from datetime import date, datetime, time, timezone, tzinfo
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from desq import days
from desq.days import DayError

Kind = Literal["aware", "utc", "naive", "date", "text"]

_GLOB_DATE = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*"
_REGEXP_DATE = "^[0-9]{4}-[0-9]{2}-[0-9]{2}"
def kind_of(column: sa.Column[Any], dialect: str) -> Kind:
    """How ``column`` stores created_at, as far as selecting by day is concerned."""
    kind = column.type
    if dialect == "sqlite" or isinstance(kind, sa.String):
        return "text"
    if isinstance(kind, mysql.TIMESTAMP):
        return "utc"
    if isinstance(kind, sa.DateTime):
        return "aware" if kind.timezone else "naive"
    if isinstance(kind, sa.Date):
        return "date"
    raise DayError(f"created_at column {column.name!r} is {kind}: desq reads timestamps, dates or ISO 8601 text")


class CreatedAt:
    """The created_at column of one source table, in one zone."""

    def __init__(self, column: sa.Column[Any], dialect: str, zone: tzinfo) -> None:
        self.column = column
        self.dialect = dialect
        self.zone = zone
        self.kind = kind_of(column, dialect)
        self.text: sa.ColumnElement[Any] = sa.type_coerce(column, sa.String)
        if self.kind == "text" and dialect == "postgresql":
            self.text = self.text.collate("C")  # byte order: a locale's collation may skip '-' and ':'
        self.read: sa.ColumnElement[Any] = self.text if self.kind == "text" else column
        """created_at as selected: raw text where desq parses it (one bad value must not stop a read)."""

    @property
    def exact(self) -> bool:
        """Whether ``where`` selects exactly the rows of the days (else generously)."""
        return self.kind != "text"

    def day(self, value: object) -> date:
        """The day of a value as selected through ``read``; DayError if it has none."""
        if self.kind == "utc" and isinstance(value, datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return days.day_of(value, self.zone)

    def aware(self, value: object) -> datetime | None:
        """A value as an aware datetime (stored in containers), None if it is not a time."""
        if self.kind == "utc" and isinstance(value, datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return days.aware(value, self.zone)

    def where(self, first: date | None, last: date | None) -> sa.ColumnElement[bool]:
        """Rows whose day may be in ``first..last`` (either end open when None); never NULLs."""
        if self.kind == "text":
            return self._text_where(first, last)
        bounds = [self.column.is_not(None)]
        if first is not None:
            bounds.append(self.column >= self._bound(first))
        after = days.next_day(last) if last is not None else None
        if after is not None:
            bounds.append(self.column < self._bound(after))
        return sa.and_(*bounds)

    def _bound(self, day: date) -> date | datetime:
        if self.kind == "date":
            return day
        if self.kind == "naive":
            return datetime.combine(day, time.min)
        start = days.start_of_day(day, self.zone)
        return start.replace(tzinfo=None) if self.kind == "utc" else start

    def _text_where(self, first: date | None, last: date | None) -> sa.ColumnElement[bool]:
        text = self.text
        margin = days.TEXT_MARGIN_DAYS
        # The written date alone, compared as a 10-character string: comparing the whole value would
        # let a collation that pads with spaces (MariaDB's) put "2025-11-14\n" before "2025-11-14".
        head = sa.func.substr(text, 1, 10)

        def written(lo: date | None, hi: date | None) -> list[sa.ColumnElement[bool]]:
            out = []
            if lo is not None:
                out.append(head >= days.iso_day(lo))
            if hi is not None:
                out.append(head <= days.iso_day(hi))
            return out or [text.is_not(None)]

        plain = sa.and_(*written(first, last))
        lo = days.shifted(first, -margin) if first is not None else None
        hi = days.shifted(last, margin) if last is not None else None
        tail = sa.func.substr(text, 11)
        shifted = sa.or_(*(tail.like(f"%{c}%") for c in "Zz+-"), sa.func.substr(text, 12, 2) == "24")
        near = sa.and_(*written(lo, hi), shifted)
        return sa.or_(plain, near, self.unwritten())

    def unwritten(self) -> sa.ColumnElement[bool]:
        """Text rows that do not start ``YYYY-MM-DD``: SQL cannot narrow them, Python decides."""
        if self.dialect == "sqlite":
            return sa.and_(self.text.is_not(None), sa.not_(self.text.op("GLOB", is_comparison=True)(_GLOB_DATE)))
        if self.dialect in ("postgresql", "mysql", "mariadb"):
            return sa.and_(self.text.is_not(None), sa.not_(self.text.regexp_match(_REGEXP_DATE)))
        return self.text.is_not(None)  # no portable pattern test: every row is a candidate
