"""The marker's UPDATE on every source database: it counts only the rows it really marked."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from desq.source.mark_sql import MarkWriter, case_update
from desq.source.marker import mark
from desq.settings import load_settings
from desq.source.mark_sql import Mark
from desq.source.table import READY, SourceTable, create_engine
from source_conformance import OLD, TODAY, Business


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:  # noqa: ANN001
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'source.db'}"
    return request.getfixturevalue("pg_url" if request.param == "postgresql" else "mysql_url")


@pytest.fixture(params=[False, True], ids=["int_ids", "text_ids"])
def business(db_url: str, request: pytest.FixtureRequest) -> Iterator[Business]:
    b = Business(db_url, text_ids=request.param)
    b.insert([{"doc_id": k if not request.param else f"k{k}", "created": OLD, "file_path": f"{k}.pdf"} for k in range(1, 6)])
    yield b
    b.drop()


def _id(business: Business, k: int) -> object:
    return k if isinstance(business.table.c.doc_id.type, sa.Integer) else f"k{k}"


FORMS = {"sqlite": "json", "postgresql": "postgresql", "mysql": "json"}


def _case_write(source: SourceTable) -> Callable[[Connection, list[Mark]], int]:
    return lambda conn, marks: conn.execute(case_update(source.table, source.columns, marks)).rowcount


@pytest.mark.parametrize("form", ["fast", "case"])
def test_overlapping_writes_count_and_name_each_row_once(business: Business, form: str) -> None:
    source = SourceTable.connect(business.settings())
    writer = MarkWriter(source.table, source.columns, source.engine)
    assert writer.form == FORMS[source.engine.dialect.name]  # each database's own form is the one tested here
    write = writer.write if form == "fast" else _case_write(source)
    ids = {k: _id(business, k) for k in range(1, 6)}
    with source.engine.begin() as conn:
        assert write(conn, [(ids[k], f"first_{k}", k) for k in (1, 2, 3)]) == 3
    with source.engine.begin() as conn:  # 2 and 3 were marked by "another marker": neither renamed nor counted
        assert write(conn, [(ids[k], f"second_{k}", 10 + k) for k in (2, 3, 4, 5)]) == 2
    with source.engine.begin() as conn:
        assert write(conn, [(ids[k], "third", 0) for k in (1, 5)]) == 0
    rows = business.rows()
    assert {k: (rows[ids[k]].arch_name, rows[ids[k]].arch_shard, rows[ids[k]].arch_state) for k in ids} == {
        1: ("first_1", 1, READY), 2: ("first_2", 2, READY), 3: ("first_3", 3, READY), 4: ("second_4", 14, READY), 5: ("second_5", 15, READY),
    }


def test_a_row_gone_or_unknown_is_not_counted(business: Business) -> None:
    source = SourceTable.connect(business.settings())
    writer = MarkWriter(source.table, source.columns, source.engine)
    with business.engine.begin() as conn:
        conn.execute(sa.delete(business.table).where(business.table.c.doc_id == _id(business, 2)))
    with source.engine.begin() as conn:
        assert writer.write(conn, [(_id(business, k), f"n{k}", k) for k in (1, 2, 99)]) == 1
        assert writer.write(conn, []) == 0


def test_a_second_marker_run_marks_nothing(business: Business) -> None:
    assert mark(SourceTable.connect(business.settings(DESQ_SOURCE_BATCH_SIZE="2")), today=TODAY).marked == 5
    with business.engine.begin() as conn:  # one row unmarked again by hand: only it is marked and counted
        conn.execute(sa.update(business.table).where(business.table.c.doc_id == _id(business, 4)).values(arch_state=None, arch_name=None))
    report = mark(SourceTable.connect(business.settings(DESQ_SOURCE_BATCH_SIZE="2")), today=TODAY)
    assert report.marked == 1 and business.rows()[_id(business, 4)].arch_name == f"20251120_{_id(business, 4)}"


def test_a_name_too_long_for_its_column_is_never_cut(business: Business) -> None:
    """arch_name is VARCHAR(300): PostgreSQL and MariaDB refuse a longer name; SQLite keeps it whole."""
    source = SourceTable.connect(business.settings())
    writer = MarkWriter(source.table, source.columns, source.engine)
    long = "x" * 301
    if source.engine.dialect.name == "sqlite":
        with source.engine.begin() as conn:
            assert writer.write(conn, [(_id(business, 1), long, 1)]) == 1
        assert business.rows()[_id(business, 1)].arch_name == long
        return
    with pytest.raises(sa.exc.DBAPIError), source.engine.begin() as conn:
        writer.write(conn, [(_id(business, 1), long, 1)])
    assert business.rows()[_id(business, 1)].arch_name is None


@pytest.mark.parametrize(("declared", "ids"), [
    ("VARCHAR(20) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin", ["a", "A"]),  # case-sensitive: "a" never names "A"
    ("VARCHAR(20) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin", ["b", "b "]),  # "b" never names "b "
    ("VARCHAR(20)", ["café", "x", "Zürich"]),  # the table's default (latin1 here), not the connection's utf8mb4
])
def test_mariadb_ids_match_in_their_own_collation(mysql_url: str, declared: str, ids: list[str]) -> None:
    engine = create_engine(mysql_url)
    name = f"docs_{uuid.uuid4().hex[:10]}"
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {name} (doc_id {declared} PRIMARY KEY, created DATETIME, file_path VARCHAR(50), "
                             "arch_name VARCHAR(300), arch_shard INT, arch_state VARCHAR(16)) DEFAULT CHARSET=latin1 COLLATE=latin1_swedish_ci")
        conn.execute(sa.text(f"INSERT INTO {name} (doc_id, created, file_path) VALUES (:i, :c, 'p')"), [{"i": i, "c": OLD} for i in ids])
    try:
        columns = {"ID": "doc_id", "CREATED_AT": "created", "PATH": "file_path", "DES_NAME": "arch_name", "DES_SHARD": "arch_shard", "DES_STATUS": "arch_state"}
        env = {"DESQ_SOURCE_DB_URL": mysql_url, "DESQ_SOURCE_TABLE": name} | {f"DESQ_SOURCE_COLUMNS_{k}": v for k, v in columns.items()}
        source = SourceTable.connect(load_settings(env=env))
        assert MarkWriter(source.table, source.columns, source.engine).form == "json"
        assert mark(source, today=TODAY).marked == len(ids)
        with engine.connect() as conn:
            got = dict(conn.execute(sa.text(f"SELECT doc_id, arch_name FROM {name}")).all())
        assert got == {i: f"20251120_{i}" for i in ids}
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE {name}")
        engine.dispose()


@pytest.mark.parametrize(("db", "id_type", "form"), [
    ("pg_url", "uuid", "postgresql"), ("pg_url", "smallint", "postgresql"), ("pg_url", "bigint", "postgresql"), ("pg_url", "text", "postgresql"),
    ("mysql_url", "UUID", "case"), ("mysql_url", "BIGINT UNSIGNED", "json"), ("mysql_url", "CHAR(36)", "json"),
])
def test_each_id_type_is_marked_once(request: pytest.FixtureRequest, db: str, id_type: str, form: str) -> None:
    url = request.getfixturevalue(db)
    engine = create_engine(url)
    name = f"docs_{uuid.uuid4().hex[:10]}"
    ids = [str(uuid.uuid4()) for _ in range(5)] if "UUID" in id_type.upper() or "36" in id_type else ["1", "2", "18446744073709551615" if "UNSIGNED" in id_type else "3"]
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {name} (id {id_type} PRIMARY KEY, created_at timestamp NULL, path varchar(50), des_name varchar(300), des_hash_bits int, des_status varchar(16))")
        conn.execute(sa.text(f"INSERT INTO {name} (id, created_at, path) VALUES (:i, :c, 'p')"), [{"i": i, "c": OLD} for i in ids])
    try:
        source = SourceTable.connect(load_settings(env={"DESQ_SOURCE_DB_URL": url, "DESQ_SOURCE_TABLE": name, "DESQ_SOURCE_BATCH_SIZE": "2"}))
        assert MarkWriter(source.table, source.columns, source.engine).form == form
        assert (mark(source, today=TODAY).marked, mark(source, today=TODAY).marked) == (len(ids), 0)
        with engine.connect() as conn:
            got = {str(i): n for i, n in conn.execute(sa.text(f"SELECT id, des_name FROM {name} WHERE des_status = 'READY'")).all()}
        assert got == {i: f"20251120_{i}" for i in ids}
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE {name}")
        engine.dispose()
