"""The SQL selection of created_at by day agrees with desq.days for every value, on every database.

A property test: timestamps near midnights (±1 µs, ±1 s), across DST changes and with offsets, are
stored in each form a business table uses (SQLite text in many ISO 8601 forms; PostgreSQL
timestamp, timestamptz and text; MariaDB DATETIME, TIMESTAMP and VARCHAR). For any range of days,
the rows the SQL selects must include every row whose day is in range, the Python decision on what
it selected must give exactly those rows, and for native types the SQL alone must be exact.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from desq import days
from desq.days import DayError
from desq.settings import load_settings
from desq.source.table import SourceError, SourceTable, create_engine

UTC = timezone.utc
ZONES = ["UTC", "Europe/Warsaw", "America/Havana", "Pacific/Kiritimati", "Pacific/Pago_Pago", "Asia/Kolkata"]
BASE_DAYS = [date(2025, 11, 14), date(2025, 3, 30), date(2025, 10, 26), date(2013, 3, 10), date(2024, 2, 29), date(2025, 12, 31)]
DELTAS = [timedelta(0), timedelta(microseconds=1), timedelta(microseconds=-1), timedelta(seconds=1), timedelta(seconds=-1), timedelta(hours=1), timedelta(hours=-1)]

COLUMN_TYPES = {
    "sqlite": {"text": "TEXT", "datetime": "DATETIME"},
    "postgresql": {"timestamp": "timestamp", "timestamptz": "timestamptz", "text": "text"},
    "mariadb": {"datetime": "DATETIME(6)", "timestamp": "TIMESTAMP(6) NULL", "varchar": "VARCHAR(64)"},
}
TEXT_KINDS = {"text", "varchar"}


@st.composite
def moments(draw: st.DrawFn, zone: ZoneInfo) -> datetime:
    """An instant (UTC) at or near the start of an interesting day in ``zone``."""
    day = draw(st.sampled_from(BASE_DAYS)) + timedelta(days=draw(st.integers(-1, 1)))
    start = days.start_of_day(day, zone)
    delta = draw(st.one_of(st.sampled_from(DELTAS), st.timedeltas(min_value=timedelta(hours=-30), max_value=timedelta(hours=30))))
    return start + delta


@st.composite
def text_form(draw: st.DrawFn, instant: datetime, zone: ZoneInfo) -> tuple[str, date]:
    """One ISO 8601 text for ``instant`` (as a business may have written it: any separator, case
    or stray whitespace), and the day it must fall on in ``zone``."""
    text, day = draw(_text_form(instant, zone))
    if draw(st.booleans()):
        text = draw(st.sampled_from(["", " ", "\t"])) + text + draw(st.sampled_from(["", "\n", "\r\n", " "]))
    return (text.lower() if draw(st.integers(0, 9)) == 0 else text), day


@st.composite
def _text_form(draw: st.DrawFn, instant: datetime, zone: ZoneInfo) -> tuple[str, date]:
    sep = draw(st.sampled_from(["T", " ", "t", "\t"]))
    timespec = draw(st.sampled_from(["minutes", "seconds", "milliseconds", "microseconds"]))
    if draw(st.booleans()):  # a local time without an offset
        local = instant.astimezone(zone).replace(tzinfo=None)
        if timespec == "minutes":
            local = local.replace(second=0, microsecond=0)
        if local.time() == datetime.min.time() and draw(st.booleans()):
            return days.iso_day(local.date()), local.date()
        return local.isoformat(sep=sep, timespec=timespec), local.date()
    minutes = draw(st.integers(-12 * 60, 14 * 60)) if draw(st.booleans()) else draw(st.sampled_from([0, 60, -300, 330]))
    moment = instant.astimezone(timezone(timedelta(minutes=minutes)))
    if timespec == "minutes":
        moment = moment.replace(second=0, microsecond=0)
    text = moment.isoformat(sep=sep, timespec=timespec)
    style = draw(st.sampled_from(["colon", "compact", "Z"]))
    if style == "Z" and minutes == 0:
        text = text[:-6] + "Z"
    elif style == "compact":
        text = text[:-3] + text[-2:]
    return text, moment.astimezone(zone).date()


class Table:
    """A business table whose created_at column has one type, in one database."""

    def __init__(self, url: str, dialect: str, kind: str) -> None:
        self.url, self.dialect, self.kind = url, dialect, kind
        self.engine = create_engine(url)
        self.name = f"created_{uuid.uuid4().hex[:10]}"
        with self.engine.begin() as conn:
            conn.execute(sa.text(f"CREATE TABLE {self.name} (id INTEGER PRIMARY KEY, created {COLUMN_TYPES[dialect][kind]}, path VARCHAR(20))"))

    def source(self, zone: str) -> SourceTable:
        env = {"DESQ_MODE": "uid", "DESQ_TIMEZONE": zone, "DESQ_SOURCE_DB_URL": self.url, "DESQ_SOURCE_TABLE": self.name,
               "DESQ_SOURCE_COLUMNS_CREATED_AT": "created", "DESQ_SOURCE_BATCH_SIZE": "1000"}
        return SourceTable(self.engine, load_settings(env=env))

    def fill(self, values: list[object]) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(f"DELETE FROM {self.name}"))
            insert = sa.text(f"INSERT INTO {self.name} (id, created, path) VALUES (:id, :created, :path)")
            conn.execute(insert, [{"id": i, "created": v, "path": "p"} for i, v in enumerate(values)])

    def drop(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE {self.name}"))
        self.engine.dispose()


def stored(draw: st.DrawFn, kind: str, dialect: str, zone: ZoneInfo) -> tuple[object, date]:
    """A value as the table stores it, and the day it must fall on."""
    instant = draw(moments(zone))
    if kind in TEXT_KINDS or dialect == "sqlite":
        return draw(text_form(instant, zone))
    if kind == "timestamptz":
        return instant, instant.astimezone(zone).date()
    if kind == "timestamp" and dialect == "mariadb":  # the session is UTC: the value is the instant
        return instant.replace(tzinfo=None), instant.astimezone(zone).date()
    local = instant.astimezone(zone).replace(tzinfo=None)
    return local, local.date()


def check_selection(table: Table, zone_name: str, data: st.DataObject) -> None:
    zone = ZoneInfo(zone_name)
    rows = [stored(data.draw, table.kind, table.dialect, zone) for _ in range(data.draw(st.integers(1, 12)))]
    if table.kind in TEXT_KINDS or table.dialect == "sqlite":
        rows += [("garbage", None), ("2025-11-14 garbage", None), ("20251114T000000Z", days.day_of("20251114T000000Z", zone))]  # type: ignore[list-item]
    rows.append((None, None))  # type: ignore[arg-type]
    values: list[object] = [v for v, _ in rows]
    table.fill(values)
    source = table.source(zone_name)
    expected_day = {i: d for i, (_, d) in enumerate(rows)}
    near = [d for d in expected_day.values() if d is not None] or [BASE_DAYS[0]]
    first = data.draw(st.one_of(st.none(), st.sampled_from(near)))
    last = data.draw(st.one_of(st.none(), st.sampled_from(near)))
    if first and last and last < first:
        first, last = last, first
    with table.engine.connect() as conn:
        read = dict(conn.execute(sa.select(source.columns.id, source.created_read)).all())
        selected = dict(conn.execute(sa.select(source.columns.id, source.created_read).where(source.day_range(first, last))).all())
    for i, value in read.items():  # what the database gives back has the day the value was stored with
        if expected_day[i] is not None:
            assert source.day_of(value) == expected_day[i], (values[i], value)
        elif value is not None:
            with pytest.raises(DayError):
                source.day_of(value)
    wanted = {i for i, d in expected_day.items() if d is not None and days.in_range(d, first, last)}
    assert wanted <= set(selected), {i: values[i] for i in wanted - set(selected)}
    decided = set()
    for i, value in selected.items():
        try:
            if days.in_range(source.day_of(value), first, last):
                decided.add(i)
        except DayError:
            pass
    assert decided == wanted
    if source.created.exact:
        assert set(selected) == wanted


def property_test(url: str, dialect: str, kind: str, examples: int) -> None:
    table = Table(url, dialect, kind)
    try:

        @settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(zone=st.sampled_from(ZONES), data=st.data())
        def run(zone: str, data: st.DataObject) -> None:
            check_selection(table, zone, data)

        run()
    finally:
        table.drop()


@pytest.mark.parametrize("kind", sorted(COLUMN_TYPES["sqlite"]))
def test_sqlite(tmp_path: Any, kind: str) -> None:
    property_test(f"sqlite:///{tmp_path / 'b.db'}", "sqlite", kind, 150)


@pytest.mark.integration
@pytest.mark.parametrize("kind", sorted(COLUMN_TYPES["postgresql"]))
def test_postgresql(pg_url: str, kind: str) -> None:
    property_test(pg_url, "postgresql", kind, 60)


@pytest.mark.integration
@pytest.mark.parametrize("kind", sorted(COLUMN_TYPES["mariadb"]))
def test_mariadb(mysql_url: str, kind: str) -> None:
    property_test(mysql_url, "mariadb", kind, 60)


def test_sqlite_is_selected_generously_and_decided_in_python(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'b.db'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (id INTEGER PRIMARY KEY, created TEXT, path TEXT)"))
    source = SourceTable(engine, load_settings(env={"DESQ_MODE": "uid", "DESQ_SOURCE_TABLE": "t", "DESQ_SOURCE_COLUMNS_CREATED_AT": "created"}))
    assert not source.created.exact


@pytest.mark.integration
def test_an_integer_created_at_column_is_refused_by_name(pg_url: str) -> None:
    engine = create_engine(pg_url)
    name = f"epoch_{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE {name} (id integer PRIMARY KEY, created bigint, path text)"))
    try:
        with pytest.raises(SourceError, match=r"created_at column 'created' is BIGINT.*source.columns.created_at"):
            SourceTable(engine, load_settings(env={"DESQ_MODE": "uid", "DESQ_SOURCE_TABLE": name, "DESQ_SOURCE_COLUMNS_CREATED_AT": "created"}))
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE {name}"))


AWKWARD = ["2025-11-14\n", "2025-11-14\t10:00:00", "2025-11-14 00:00:00\r\n", " 2025-11-14 00:00", "2025-11-14t00:00:00z", "2025-11-14 00:00:00.000000"]
"""Text right after or around the written date that a padding collation or a prefix test could mishandle."""


def check_awkward(url: str, dialect: str, kind: str) -> None:
    table = Table(url, dialect, kind)
    try:
        table.fill(AWKWARD)
        source = table.source("UTC")
        day = date(2025, 11, 14)
        with table.engine.connect() as conn:
            got = dict(conn.execute(sa.select(source.columns.id, source.created_read).where(source.day_range(day, day))).all())
        assert sorted(i for i, v in got.items() if source.day_of(v) == day) == list(range(len(AWKWARD)))
    finally:
        table.drop()


def test_awkward_text_on_sqlite(tmp_path: Any) -> None:
    check_awkward(f"sqlite:///{tmp_path / 'b.db'}", "sqlite", "text")


@pytest.mark.integration
def test_awkward_text_on_postgresql(pg_url: str) -> None:
    check_awkward(pg_url, "postgresql", "text")


@pytest.mark.integration
def test_awkward_text_on_mariadb(mysql_url: str) -> None:
    """MariaDB's collations pad with spaces: '2025-11-14\\n' sorts before '2025-11-14'."""
    check_awkward(mysql_url, "mariadb", "varchar")
