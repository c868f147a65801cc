"""The night's spool: the rows the planner read once, kept in desq's own table for the packers.

The planner scans the business table once a night and writes every row it plans into
``desq_spool`` keyed by (night, date, shard, seq); each ``pack_shard`` then reads its own rows by
that key. So no packer queries the business table (which may have no index on what desq needs),
a task message carries only (date, shard, night), and no process holds a night's rows in memory.
The business table is never altered. A night's rows are deleted when it finishes; the rows of
earlier nights that never finished are deleted when a later night is planned.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterator
from datetime import date, datetime
from types import TracebackType

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from desq.source.rows import SourceRow
from desq.state import SPOOL, create_tables

BATCH = 5000
"""Rows inserted per transaction while a night is spooled."""
COLUMNS = ("night", "day", "shard", "seq", "id_int", "id_text", "name", "created_at", "path")
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


class Spool:
    """The spool table in desq's own database (created on first use)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        create_tables(engine, [SPOOL])

    def writer(self, night: str) -> SpoolWriter:
        """A writer of ``night``'s rows; whatever was spooled for that night before is dropped."""
        return SpoolWriter(self, night)

    def rows(self, night: str, day: date, shard: int) -> list[SourceRow]:
        """The rows spooled for (day, shard) of ``night``, in the order they were planned."""
        c = SPOOL.c
        query = sa.select(c.id_int, c.id_text, c.name, c.created_at, c.path).where(
            c.night == night, c.day == day.isoformat(), c.shard == shard
        ).order_by(c.seq)
        with self.engine.connect() as conn:
            found = conn.execute(query).all()
        return [
            SourceRow(id=id_text if id_int is None else id_int, name=name, created_at=_created(created), path=path, date=day, shard=shard)
            for id_int, id_text, name, created, path in found
        ]

    def names(self, night: str, day: date, shard: int) -> Iterator[str]:
        """The names spooled for (day, shard) of ``night``."""
        c = SPOOL.c
        with self.engine.connect() as conn:
            yield from conn.execute(sa.select(c.name).where(c.night == night, c.day == day.isoformat(), c.shard == shard)).scalars()

    def drop(self, night: str, day: date, shard: int) -> None:
        """Forget (day, shard) of ``night`` (planned, then found complete)."""
        c = SPOOL.c
        with self.engine.begin() as conn:
            conn.execute(sa.delete(SPOOL).where(c.night == night, c.day == day.isoformat(), c.shard == shard))

    def clear(self, night: str) -> int:
        """Forget ``night``'s rows (it finished); how many there were."""
        with self.engine.begin() as conn:
            return conn.execute(sa.delete(SPOOL).where(SPOOL.c.night == night)).rowcount

    def count(self, night: str | None = None) -> int:
        """Rows spooled for ``night`` (None: for every night)."""
        query = sa.select(sa.func.count()).select_from(SPOOL)
        if night is not None:
            query = query.where(SPOOL.c.night == night)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())


class SpoolWriter:
    """Writes one night's rows in batches; ``counts`` says how many went to each (date, shard)."""

    def __init__(self, spool: Spool, night: str) -> None:
        self.spool = spool
        self.night = night
        self.counts: Counter[tuple[date, int]] = Counter()
        self._batch: list[tuple[object, ...]] = []
        self._copy = spool.engine.dialect.name == "postgresql" and spool.engine.dialect.driver == "psycopg2"
        with spool.engine.begin() as conn:
            # This night's earlier attempt, and earlier nights that never finished: their rows are
            # planned again tonight (READY rows, or the days after the cutoff).
            conn.execute(sa.delete(SPOOL).where(SPOOL.c.night <= night))

    def add(self, row: SourceRow) -> None:
        key = (row.date, row.shard)
        seq = self.counts[key]
        self.counts[key] = seq + 1
        number = isinstance(row.id, int)
        self._batch.append((
            self.night, row.date.isoformat(), row.shard, seq, row.id if number else None, None if number else str(row.id),
            row.name, row.created_at.isoformat() if row.created_at is not None else None, row.path,
        ))
        if len(self._batch) >= BATCH:
            self.flush()

    def names(self, day: date, shard: int) -> Iterator[str]:
        """The names written so far for (day, shard) of this night."""
        self.flush()
        return self.spool.names(self.night, day, shard)

    def drop(self, day: date, shard: int) -> None:
        """Forget (day, shard) of this night (planned, then found complete)."""
        self.flush()
        self.spool.drop(self.night, day, shard)

    def flush(self) -> None:
        """Write the rows added since the last flush, in one transaction (PostgreSQL: one COPY,
        3-4x the rows/s of a multi-row INSERT through SQLAlchemy)."""
        if not self._batch:
            return
        with self.spool.engine.begin() as conn:
            if self._copy:
                table = conn.dialect.identifier_preparer.format_table(SPOOL)
                with conn.connection.dbapi_connection.cursor() as cursor:
                    cursor.copy_expert(f"COPY {table} ({', '.join(COLUMNS)}) FROM STDIN", io.StringIO(_copy_text(self._batch)))
            else:
                conn.execute(sa.insert(SPOOL), [dict(zip(COLUMNS, values, strict=True)) for values in self._batch])
        self._batch = []

    def __enter__(self) -> SpoolWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, _exc: BaseException | None, _tb: TracebackType | None) -> None:
        if kind is None:
            self.flush()


def _copy_text(rows: list[tuple[object, ...]]) -> str:
    """``rows`` in COPY's text format: tab-separated, \\N for NULL. Only the free text (a text id,
    the name, the path) can hold a tab, newline or backslash; the other columns are dates and numbers."""
    null = "\\N"
    lines = []
    for night, day, shard, seq, id_int, id_text, name, created, path in rows:
        number = null if id_int is None else id_int
        text = null if id_text is None else str(id_text).translate(_COPY_ESCAPES)
        lines.append(f"{night}\t{day}\t{shard}\t{seq}\t{number}\t{text}\t{str(name).translate(_COPY_ESCAPES)}\t{null if created is None else created}\t{str(path).translate(_COPY_ESCAPES)}\n")
    return "".join(lines)


def _created(text: str | None) -> datetime | date | None:
    if text is None:
        return None
    return datetime.fromisoformat(text) if len(text) > 10 else date.fromisoformat(text)
