"""The night's spool on every database desq keeps its state in: rows back exactly as planned."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from desq.source.rows import SourceRow
from desq.source.table import create_engine
from desq.spool import BATCH, Spool

DAY = date(2025, 11, 20)
ZONE = timezone(timedelta(hours=-5))


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def spool(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Spool]:
    url = {"sqlite": lambda: f"sqlite:///{tmp_path / 'state.db'}", "postgresql": lambda: request.getfixturevalue("pg_url"), "mariadb": lambda: request.getfixturevalue("mysql_url")}[request.param]()
    engine = create_engine(url)
    yield Spool(engine)
    engine.dispose()


def night() -> str:
    """A night key no other test uses (the PostgreSQL and MariaDB databases are shared)."""
    return f"9{uuid.uuid4().int % 10**9:09d}"[:10]


def row(i: object, shard: int = 3, created: datetime | date | None = None, day: date = DAY) -> SourceRow:
    return SourceRow(id=i, name=f"{day:%Y%m%d}_{i}", created_at=created, path=f"dir/ünï code {i}.pdf", date=day, shard=shard)


def test_rows_come_back_in_planned_order_with_their_types(spool: Spool) -> None:
    key = night()
    planned = [
        row(2**62, created=datetime(2025, 11, 20, 0, 0, tzinfo=ZONE)),
        row("uid-ßé/𝄞", created=datetime(2025, 11, 20, 23, 59, 59, 999999, tzinfo=timezone.utc)),
        row(7, created=None),
        row(1, created=date(2025, 11, 20)),
        row(0, shard=4),
    ]
    with spool.writer(key) as writer:
        for r in planned:
            writer.add(r)
    assert writer.counts == {(DAY, 3): 4, (DAY, 4): 1}
    got = spool.rows(key, DAY, 3)
    assert got == planned[:4]
    assert [type(r.id) for r in got] == [int, str, int, int]
    assert spool.rows(key, DAY, 4) == planned[4:]
    assert spool.rows(key, DAY, 5) == [] and spool.rows(key, DAY + timedelta(days=1), 3) == []
    assert sorted(spool.names(key, DAY, 3)) == sorted(r.name for r in planned[:4])
    spool.drop(key, DAY, 4)
    assert spool.rows(key, DAY, 4) == [] and spool.count(key) == 4
    assert spool.clear(key) == 4 and spool.count(key) == 0


def test_text_that_copy_would_take_for_its_own_comes_back_as_it_was(spool: Spool) -> None:
    """Tabs, newlines, backslashes and a literal \\N in ids, names and paths (PostgreSQL writes
    the spool with COPY, whose text format gives those a meaning)."""
    key = night()
    awkward = ["tab\there", "line\nbreak\r", "back\\slash", "\\N", "", " ", "end\\"]
    planned = [SourceRow(id=text, name=f"n{i}{text}", created_at=None, path=f"p/{text}/{i}", date=DAY, shard=1) for i, text in enumerate(awkward)]
    planned.append(SourceRow(id=-(2**63), name="min", created_at=datetime(1, 1, 1, tzinfo=timezone.utc), path="\\N", date=DAY, shard=1))
    with spool.writer(key) as writer:
        for r in planned:
            writer.add(r)
    assert spool.rows(key, DAY, 1) == planned
    spool.clear(key)


def test_a_night_planned_again_replaces_its_rows_and_earlier_nights_go(spool: Spool) -> None:
    old, key = "1999-01-01", night()
    with spool.writer(old) as writer:
        writer.add(row(1))
    with spool.writer(key) as writer:
        writer.add(row(1))
        writer.add(row(2))
    with spool.writer(key) as writer:
        writer.add(row(3))
    assert spool.rows(key, DAY, 3) == [row(3)]
    assert spool.count(old) == 0
    spool.clear(key)


def test_a_big_night_is_written_in_batches_and_read_per_shard(spool: Spool) -> None:
    key = night()
    with spool.writer(key) as writer:
        for i in range(2 * BATCH + 7):
            writer.add(row(i, shard=i % 16))
    assert spool.count(key) == 2 * BATCH + 7
    assert [r.id for r in spool.rows(key, DAY, 5)] == list(range(5, 2 * BATCH + 7, 16))
    spool.clear(key)


def test_a_failed_plan_writes_no_partial_batch(spool: Spool) -> None:
    key = night()
    with pytest.raises(RuntimeError):
        with spool.writer(key) as writer:
            writer.add(row(1))
            raise RuntimeError("the source went away")
    assert spool.count(key) == 0


def test_the_spool_table_is_desqs_own(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'state.db'}")
    Spool(engine)
    Spool(engine)  # created once, found the next time
    assert "desq_spool" in sa.inspect(engine).get_table_names()
