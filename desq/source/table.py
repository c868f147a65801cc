"""The business application's table of files, seen through the ``[source]`` mapping.

desq reflects the configured table and never creates, alters or drops it; in name mode it writes
three columns of it (des_name, des_shard, des_status), in uid mode nothing. Every query here reads
in keyset-paginated batches, each in its own short transaction.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import NoSuchTableError, SQLAlchemyError

from desq.days import DayError
from desq.mode import mode_for
from desq.errors import DesqError
from desq.source.created import CreatedAt
from desq.source.schema import add_column_statements, has_state_index, index_statement, missing_state_columns, type_problems
from desq.settings import Settings, hide_password

READY = "READY"
PACKED = "PACKED"


class SourceError(DesqError):
    """The source database or table cannot be used as configured."""


class MissingStateColumns(SourceError):
    """Name mode's columns are not in the business table; ``statements`` add them (and the index)."""

    def __init__(self, message: str, statements: list[str]) -> None:
        super().__init__(message)
        self.statements = statements


def masked(url: str) -> str:
    """A database URL fit for messages and logs: the password hidden."""
    try:
        make_url(url)
    except Exception:  # noqa: BLE001 - an unparsable URL is shown as nothing rather than leaked
        return "<database>"
    return hide_password(url)


def first_line(exc: BaseException) -> str:
    """The first line of a driver's error, which is usually the useful one."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


DRIVERS = {"postgresql": "postgresql+psycopg2", "postgres": "postgresql+psycopg2", "mysql": "mysql+pymysql", "mariadb": "mariadb+pymysql"}
"""The driver desq installs for a URL that names none: SQLAlchemy's own defaults (psycopg 3,
mysqlclient) are not installed, and ``postgres://`` is a common spelling SQLAlchemy refuses."""


def with_driver(url: str) -> sa.URL:
    """``url`` parsed, with desq's driver where it names only the database (``postgresql://``)."""
    parsed = make_url(url)
    driver = DRIVERS.get(parsed.drivername)
    return parsed.set(drivername=driver) if driver else parsed


def create_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite waits for locks instead of failing at once, in WAL mode
    (``_sqlite_session``). PostgreSQL and
    MySQL/MariaDB sessions run in UTC: a MariaDB ``TIMESTAMP`` then reads as the instant it stores,
    and a ``timestamptz`` of the year 1 is not shown as a BC date in a zone west of UTC."""
    options: dict[str, Any] = {"pool_pre_ping": True}
    parsed = with_driver(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        options["connect_args"] = {"timeout": 60}
    engine = sa.create_engine(parsed, **options)
    if backend == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_session)
    if backend in _UTC_SESSION:
        sa.event.listen(engine, "connect", functools.partial(_utc_session, _UTC_SESSION[backend]))
    return engine


_UTC_SESSION = {"postgresql": "SET TIME ZONE 'UTC'", "mysql": "SET time_zone = '+00:00'", "mariadb": "SET time_zone = '+00:00'"}


def _sqlite_session(dbapi_connection: Any, _record: object) -> None:
    """SQLite in WAL mode, committing without an fsync each time (``synchronous=NORMAL``).

    A night commits a few times per container (lease, marks); in SQLite's default rollback
    journal each commit syncs the journal and the database, ~4 ms here, which alone cost more
    than packing. WAL is also what SQLite recommends for several processes at once (packers,
    the files API): readers no longer block the writer. It is a property of the database file
    and stays. A power loss may undo the last commits, never corrupt: a lease or a mark undone is
    taken or found again by the next run. A database desq may not write keeps its mode."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    except Exception:  # noqa: BLE001 - a read-only database: its queries still work
        pass
    finally:
        cursor.close()


def _utc_session(statement: str, dbapi_connection: Any, _record: object) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(statement)
    cursor.close()
    dbapi_connection.commit()  # PostgreSQL's SET is undone with the transaction it opened


@dataclass(frozen=True, slots=True)
class Columns:
    """The mapped columns of the source table."""

    id: sa.Column[Any]
    created_at: sa.Column[Any]
    path: sa.Column[Any]
    des_name: sa.Column[Any] | None
    des_shard: sa.Column[Any] | None
    des_status: sa.Column[Any] | None


class SourceTable:
    """The configured source table, reflected and checked against the mapping."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.layout = settings.layout
        self.rows_read = 0
        """Rows fetched from the table so far (for the rows-read-per-packed-file figure)."""
        config = settings.source
        schema, _, name = config.table.rpartition(".")
        where = masked(str(engine.url))
        try:
            self.table = sa.Table(name, sa.MetaData(), schema=schema or None, autoload_with=engine)
        except NoSuchTableError:
            raise SourceError(f"source table {config.table!r} does not exist in {where}") from None
        except SQLAlchemyError as exc:
            raise SourceError(f"cannot read the source table {config.table!r} in {where}: {first_line(exc)}") from None
        state_keys = mode_for(self.layout).state_columns
        keys = ("id", "created_at", "path") + state_keys
        mapping = {key: getattr(config.columns, key) for key in keys}
        for key, column in mapping.items():
            if column not in self.table.c and key not in state_keys:
                raise SourceError(f"source table {config.table!r} has no column {column!r} (source.columns.{key})")
        missing = missing_state_columns(self.table, settings, state_keys)
        if missing:
            named = ", ".join(f"{mapping[k]!r} (source.columns.{k})" for k in missing)
            statements = add_column_statements(self.table, settings, missing, engine.dialect)
            if has_state_index(engine, self.table, settings) is not True:
                statements.append(index_statement(self.table, settings, engine.dialect))
            raise MissingStateColumns(f"source table {config.table!r} has no column {named}: name mode keeps its state there; "
                                      "desq never alters the table, `desq source check` prints the statements that add them", statements)
        c = self.table.c
        self.columns = Columns(
            id=c[config.columns.id],
            created_at=c[config.columns.created_at],
            path=c[config.columns.path],
            des_name=c[mapping["des_name"]] if "des_name" in mapping else None,
            des_shard=c[mapping["des_shard"]] if "des_shard" in mapping else None,
            des_status=c[mapping["des_status"]] if "des_status" in mapping else None,
        )
        try:
            self.created = CreatedAt(self.columns.created_at, engine.dialect.name, settings.zone)
        except DayError as exc:
            raise SourceError(f"source table {config.table!r}: {exc} (source.columns.created_at)") from None
        self.created_read = self.created.read

    @classmethod
    def connect(cls, settings: Settings) -> SourceTable:
        """Open the source database of ``settings`` and reflect its table."""
        url = settings.source.db_url
        try:
            engine = create_engine(url)
        except (SQLAlchemyError, ImportError) as exc:
            raise SourceError(f"cannot use the source database {masked(url)}: {first_line(exc)}") from None
        return cls(engine, settings)

    # --- time ------------------------------------------------------------------------------

    def day_of(self, value: object) -> date:
        """The day of a created_at value as selected (``created_read``); DayError if it has none."""
        return self.created.day(value)

    def day_range(self, first: date | None, last: date | None) -> sa.ColumnElement[bool]:
        """Rows whose created_at may fall on days ``first``..``last`` (inclusive; None: open) in the
        configured zone: exactly those for native types, a superset for text (decide with ``day_of``)."""
        return self.created.where(first, last)

    # --- reading ----------------------------------------------------------------------------

    def batches(self, query: sa.Select[Any], batch_size: int) -> Iterator[list[sa.Row[Any]]]:
        """Run ``query`` in keyset pages on the id column, one short transaction a page."""
        last = None
        while True:
            page = query if last is None else query.where(self.columns.id > last)
            with self.engine.connect() as conn:
                rows = conn.execute(page.order_by(self.columns.id).limit(batch_size)).all()
            if not rows:
                return
            self.rows_read += len(rows)
            yield rows
            if len(rows) < batch_size:
                return  # a short page is the last: no query that can only come back empty
            last = rows[-1][0]

    def execute(self, statement: sa.Executable) -> sa.CursorResult[Any]:
        """Run one statement in its own transaction."""
        with self.engine.begin() as conn:
            return conn.execute(statement)

    def count(self, *where: sa.ColumnElement[bool]) -> int:
        """Rows matching ``where``."""
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(self.table).where(*where)).scalar_one())

    def null_created_at(self, *where: sa.ColumnElement[bool], examples: int = 3) -> tuple[int, list[object]]:
        """How many rows (matching ``where``) have a NULL created_at, and the ids of the first few."""
        null = self.columns.created_at.is_(None)
        with self.engine.connect() as conn:
            ids = list(conn.execute(sa.select(self.columns.id).where(null, *where).order_by(self.columns.id).limit(examples)).scalars())
        return self.count(null, *where), ids

    def path_of(self, uid: str, day: date) -> str | None:
        """The path column of the row with id ``uid`` created on ``day`` (one lookup by id); None if
        there is none (or ``uid`` cannot be an id of an integer column)."""
        c = self.columns
        key: object = uid
        if isinstance(c.id.type, sa.Integer):
            if not uid.isascii() or not uid.isdigit():
                return None
            key = int(uid)
            if key >= 1 << 63:
                return None  # no integer column holds it: asking the database would be an error
        query = sa.select(c.path, self.created_read).where(c.id == key, self.day_range(day, day)).limit(2)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        for path, created in rows:
            try:
                if path is not None and self.day_of(created) == day:
                    return str(path)
            except DayError:
                continue
        return None

    def describe(self) -> list[tuple[str, str, str]]:
        """``(setting, column, SQL type)`` of every mapped column."""
        out = []
        for key in ("id", "created_at", "path", "des_name", "des_shard", "des_status"):
            column = getattr(self.columns, key)
            if column is not None:
                out.append((f"source.columns.{key}", column.name, str(column.type)))
        return out


def index_hints(source: SourceTable) -> list[str]:
    """Suggestions when name mode's columns have unusable types or lack the index the night's
    queries want, with the statement to create it in this database's SQL."""
    if not mode_for(source.layout).state_columns:
        return []
    c = source.columns
    assert c.des_status is not None and c.des_shard is not None
    hints = type_problems(source.table, source.settings)
    if has_state_index(source.engine, source.table, source.settings) is False:
        statement = index_statement(source.table, source.settings, source.engine.dialect)
        hints.append(f"no index on ({c.des_status.name}, {c.des_shard.name}): each packer's query scans the table; "
                     f"desq never alters it, but you may: {statement}")
    return hints
