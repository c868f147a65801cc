"""One conformance suite for every source database (SQLite, PostgreSQL, MariaDB, ...).

A database's test module subclasses ``SourceConformance`` and provides ``db_url``. Each test builds
its own business table with column names that are not desq's defaults, and drops it afterwards.
"""

from __future__ import annotations

import io
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from desq.archive import Archive
from desq.container import ContainerWriter
from desq.cutoff import advance
from desq.published import read_published
from desq.state import StateStore
from desq.layout import container_key, shard_of_name
from desq.settings import Settings, load_settings
from desq.source.marker import mark
from desq.source.plan import mark_packed, name_rows_for, plan_names, plan_uids, uid_rows_for
from desq.pipeline.night import run_sync
from desq.source.table import PACKED, READY, MissingStateColumns, SourceError, SourceTable, create_engine, index_hints
from desq.storage.local import LocalStorage

TODAY = date(2025, 11, 28)  # with after_days 7: rows created before 2025-11-21 are old enough
OLD = datetime(2025, 11, 20, 10, 0)


class Business:
    """A business table of files, with its own column names, in one database."""

    def __init__(self, url: str, *, text_ids: bool = False) -> None:
        self.url = url
        self.engine = create_engine(url)
        self.name = f"docs_{uuid.uuid4().hex[:10]}"
        id_type: Any = sa.String(64) if text_ids else sa.Integer
        self.table = sa.Table(
            self.name,
            sa.MetaData(),
            sa.Column("doc_id", id_type, primary_key=True, autoincrement=False),
            sa.Column("created", sa.DateTime),
            sa.Column("file_path", sa.String(500)),
            sa.Column("owner", sa.String(50)),
            sa.Column("arch_name", sa.String(300)),
            sa.Column("arch_shard", sa.Integer),
            sa.Column("arch_state", sa.String(16)),
        )
        self.table.create(self.engine)

    def insert(self, rows: list[dict[str, Any]]) -> None:
        with self.engine.begin() as conn:
            conn.execute(self.table.insert(), [{"owner": "acme", "arch_name": None, "arch_shard": None, "arch_state": None} | r for r in rows])

    def rows(self) -> dict[Any, sa.Row[Any]]:
        with self.engine.connect() as conn:
            return {r.doc_id: r for r in conn.execute(sa.select(self.table))}

    def columns(self) -> list[tuple[str, str]]:
        return [(c["name"], str(c["type"])) for c in sa.inspect(self.engine).get_columns(self.name)]

    def settings(self, **env: str) -> Settings:
        base = {
            "DESQ_SOURCE_DB_URL": self.url,
            "DESQ_SOURCE_TABLE": self.name,
            "DESQ_SOURCE_COLUMNS_ID": "doc_id",
            "DESQ_SOURCE_COLUMNS_CREATED_AT": "created",
            "DESQ_SOURCE_COLUMNS_PATH": "file_path",
            "DESQ_SOURCE_COLUMNS_DES_NAME": "arch_name",
            "DESQ_SOURCE_COLUMNS_DES_SHARD": "arch_shard",
            "DESQ_SOURCE_COLUMNS_DES_STATUS": "arch_state",
            "DESQ_SOURCE_BATCH_SIZE": "7",
        }
        return load_settings(env=base | env)

    def drop(self) -> None:
        self.table.drop(self.engine, checkfirst=True)
        with self.engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE IF EXISTS desq_state"))
        self.engine.dispose()


class SourceConformance:
    """What every source database must do for desq."""

    db_url: str

    @pytest.fixture
    def business(self, db_url: str) -> Iterator[Business]:
        b = Business(db_url)
        yield b
        b.drop()

    @pytest.fixture
    def text_business(self, db_url: str) -> Iterator[Business]:
        b = Business(db_url, text_ids=True)
        yield b
        b.drop()

    # --- the mapping ------------------------------------------------------------------------

    def test_check_finds_the_mapping(self, business: Business) -> None:
        table = SourceTable.connect(business.settings())
        assert [(k, c) for k, c, _ in table.describe()] == [
            ("source.columns.id", "doc_id"), ("source.columns.created_at", "created"), ("source.columns.path", "file_path"),
            ("source.columns.des_name", "arch_name"), ("source.columns.des_shard", "arch_shard"), ("source.columns.des_status", "arch_state"),
        ]

    @pytest.mark.parametrize(("variable", "key"), [("DESQ_SOURCE_COLUMNS_PATH", "path"), ("DESQ_SOURCE_COLUMNS_DES_STATUS", "des_status")])
    def test_a_missing_column_is_named(self, business: Business, variable: str, key: str) -> None:
        with pytest.raises(SourceError, match=rf"no column 'nope' \(source.columns.{key}\)"):
            SourceTable.connect(business.settings(**{variable: "nope"}))

    def test_uid_mode_needs_no_des_columns(self, business: Business) -> None:
        table = SourceTable.connect(business.settings(DESQ_MODE="uid", DESQ_SOURCE_COLUMNS_DES_NAME="gone"))
        assert table.columns.des_name is None

    def test_a_missing_table(self, business: Business) -> None:
        with pytest.raises(SourceError, match="does not exist"):
            SourceTable.connect(business.settings(DESQ_SOURCE_TABLE="no_such_table"))

    def test_the_table_is_never_altered(self, business: Business) -> None:
        before = business.columns()
        business.insert([{"doc_id": 1, "created": OLD, "file_path": "a.pdf"}])
        table = SourceTable.connect(business.settings())
        mark(table, today=TODAY)
        mark_packed(table, [1])
        assert business.columns() == before

    # --- the marker -------------------------------------------------------------------------

    def test_marker_names_old_rows_per_contract(self, business: Business) -> None:
        business.insert(
            [{"doc_id": i, "created": OLD + timedelta(minutes=i), "file_path": f"scans/{i}.pdf"} for i in range(1, 41)]
            + [
                {"doc_id": 100, "created": datetime(2025, 11, 21, 0, 0), "file_path": "recent.pdf"},  # not old enough
                {"doc_id": 101, "created": None, "file_path": "x.pdf"},
                {"doc_id": 102, "created": OLD, "file_path": ""},
                {"doc_id": 103, "created": OLD, "file_path": None},
                {"doc_id": 104, "created": datetime(2999, 1, 1), "file_path": "future.pdf"},
                {"doc_id": 105, "created": datetime(2025, 11, 20, 23, 59, 59), "file_path": "last.pdf"},
            ]
        )
        report = mark(SourceTable.connect(business.settings()), today=TODAY)
        assert report.marked == 41 and report.batches >= 6
        assert (report.null_created_at, report.empty_path, report.future_created_at) == (1, 2, 1)
        rows = business.rows()
        for i in [*range(1, 41), 105]:
            name = f"20251120_{i}"
            assert (rows[i].arch_name, rows[i].arch_shard, rows[i].arch_state) == (name, shard_of_name(name, 8), READY)
        for i in (100, 101, 102, 103, 104):
            assert (rows[i].arch_name, rows[i].arch_state) == (None, None)
        assert mark(SourceTable.connect(business.settings()), today=TODAY).marked == 0

    def test_marker_vector_and_prefix(self, text_business: Business) -> None:
        text_business.insert([{"doc_id": "a9f3", "created": OLD, "file_path": "inv.pdf"}, {"doc_id": "bad/id", "created": OLD, "file_path": "x"}])
        report = mark(SourceTable.connect(text_business.settings(DESQ_SOURCE_NAME_PREFIX="INV")), today=TODAY)
        assert (report.marked, report.bad_id) == (1, 1)
        row = text_business.rows()["a9f3"]
        assert (row.arch_name, row.arch_shard) == ("INV_20251120_a9f3", 0x2A)

    def test_marker_dates_follow_the_zone(self, business: Business) -> None:
        business.insert([{"doc_id": 1, "created": datetime(2025, 11, 19, 23, 30), "file_path": "a"}])
        mark(SourceTable.connect(business.settings(DESQ_TIMEZONE="Europe/Warsaw")), today=TODAY)
        assert business.rows()[1].arch_name == "20251119_1"  # stored without an offset: already Warsaw time

    # --- plans and the packers' rows --------------------------------------------------------

    def test_plan_and_rows_for_each_shard(self, business: Business) -> None:
        business.insert([{"doc_id": i, "created": OLD - timedelta(days=i % 3), "file_path": f"{i}.pdf"} for i in range(1, 301)])
        settings = business.settings(DESQ_SHARD_BITS="4", DESQ_QUEUE_COUNT="2", DESQ_SOURCE_BATCH_SIZE="50")
        table = SourceTable.connect(settings)
        mark(table, today=TODAY)
        table.rows_read = 0
        plan = plan_names(table)
        expected = Counter()
        for i in range(1, 301):
            name = f"{(OLD - timedelta(days=i % 3)):%Y%m%d}_{i}"
            expected[((OLD - timedelta(days=i % 3)).date(), shard_of_name(name, 4))] += 1
        assert {(w.date, w.shard): w.files for w in plan.work} == dict(expected) and plan.files == 300
        seen = []
        for work in plan.work:
            rows = list(name_rows_for(table, work.date, work.shard))
            assert len(rows) == work.files and all(r.date == work.date and r.shard == work.shard for r in rows)
            seen += [r.id for r in rows]
        assert sorted(seen) == list(range(1, 301))
        assert table.rows_read <= 1.05 * 300 + len(plan.work)  # each row read once, plus the plan's groups

    def test_mark_packed_touches_only_ready_rows(self, business: Business) -> None:
        business.insert([{"doc_id": i, "created": OLD, "file_path": f"{i}"} for i in (1, 2)] + [{"doc_id": 3, "created": datetime(2025, 11, 27), "file_path": "3"}])
        table = SourceTable.connect(business.settings())
        mark(table, today=TODAY)
        assert mark_packed(table, [1, 3]) == 1
        assert [business.rows()[i].arch_state for i in (1, 2, 3)] == [PACKED, READY, None]

    def test_uid_mode_reads_each_row_once(self, business: Business) -> None:
        business.insert([{"doc_id": 1000 + i, "created": OLD - timedelta(days=i % 2, hours=i % 5), "file_path": f"{i}"} for i in range(200)])
        table = SourceTable.connect(business.settings(DESQ_MODE="uid", DESQ_SHARD_BITS="3", DESQ_QUEUE_COUNT="2"))
        plan = plan_uids(table, date(2025, 11, 18), date(2025, 11, 20))
        assert plan.files == 200 and table.rows_read == 200 and plan.rows is not None
        for work in plan.work:
            assert all(r.shard == (r.id % 8) and r.name == str(r.id) for r in plan.rows[(work.date, work.shard)])
            assert [r.id for r in uid_rows_for(table, work.date, work.shard)] == [r.id for r in plan.rows[(work.date, work.shard)]]

    def test_uid_mode_text_uids(self, text_business: Business) -> None:
        text_business.insert([{"doc_id": "doc-000001", "created": OLD, "file_path": "a"}, {"doc_id": "bad/uid", "created": OLD, "file_path": "b"}])
        table = SourceTable.connect(text_business.settings(DESQ_MODE="uid", DESQ_SOURCE_UID_KIND="text", DESQ_SHARD_BITS="10"))
        plan = plan_uids(table, OLD.date(), OLD.date())
        assert [(w.date, w.shard, w.files) for w in plan.work] == [(OLD.date(), 0x1DE, 1)] and plan.unplanned == 1

    # --- the cutoff (uid mode) --------------------------------------------------------------

    def test_cutoff_never_passes_a_hole(self, business: Business, tmp_path: Path) -> None:
        days = [date(2025, 11, 17) + timedelta(days=d) for d in range(4)]  # 17..20; target is 20
        business.insert([{"doc_id": 10 * d + i, "created": datetime.combine(day, datetime.min.time()) + timedelta(hours=i), "file_path": "p"} for d, day in enumerate(days) for i in range(5)])
        settings = business.settings(DESQ_MODE="uid", DESQ_SHARD_BITS="2", DESQ_QUEUE_COUNT="1")
        table = SourceTable.connect(settings)
        storage = LocalStorage(tmp_path / "archive")
        plan = plan_uids(table, days[0], days[-1])
        hole = 10 * 2 + 3  # day 19, left unpacked on purpose
        for (day, shard), rows in plan.rows.items():
            out = io.BytesIO()
            with ContainerWriter(out) as w:
                for row in rows:
                    if row.id != hole:
                        w.add(row.name, b"data")
            storage.put(container_key(day, shard, 2), out.getvalue())
        state = StateStore(table.engine)
        report = advance(table, state, Archive(storage), today=TODAY)
        assert report.after == date(2025, 11, 18) and report.blocked_day == date(2025, 11, 19) and report.missing == 1
        assert state.cutoff() == date(2025, 11, 18) == read_published(storage)
        rows = plan.rows
        key = next(k for k, v in rows.items() if any(r.id == hole for r in v))
        out = io.BytesIO()
        with ContainerWriter(out) as w:
            for row in rows[key]:
                w.add(row.name, b"data")
        storage.put(container_key(key[0], key[1], 2), out.getvalue())
        assert advance(table, state, Archive(storage), today=TODAY).after == date(2025, 11, 20)
        assert read_published(storage) == date(2025, 11, 20)
        with pytest.raises(Exception, match="only moves forward"):
            state.set_cutoff(date(2025, 11, 1))

    # --- name mode's columns, added by the operator ------------------------------------------

    @pytest.mark.parametrize("awkward", [False, True])
    def test_printed_statements_add_name_modes_columns(self, db_url: str, tmp_path: Path, awkward: bool) -> None:
        """A table without des_name, des_hash_bits, des_status: the statements desq prints, run as
        printed, make it usable, with its index; then a name-mode night packs it."""
        tag = uuid.uuid4().hex[:8]
        names = (f"Docs {tag}", "Doc ID", "Created At", "File Path", "Arch Name", "ArchShard", "arch state") if awkward else (f"files_{tag}", "id", "created_at", "path", "des_name", "des_hash_bits", "des_status")
        table_name, id_col, created_col, path_col, *state_cols = names
        engine = create_engine(db_url)
        table = sa.Table(table_name, sa.MetaData(), sa.Column(id_col, sa.Integer, primary_key=True, autoincrement=False), sa.Column(created_col, sa.DateTime), sa.Column(path_col, sa.String(200)))
        table.create(engine)
        (tmp_path / "originals").mkdir()
        for i in range(1, 6):
            (tmp_path / "originals" / f"{i}.txt").write_bytes(f"file {i}".encode())
        with engine.begin() as conn:
            conn.execute(table.insert(), [{id_col: i, created_col: OLD, path_col: f"{i}.txt"} for i in range(1, 6)])
        env = {
            "DESQ_SOURCE_DB_URL": db_url, "DESQ_SOURCE_TABLE": table_name, "DESQ_SOURCE_ROOT": str(tmp_path / "originals"),
            "DESQ_SOURCE_COLUMNS_ID": id_col, "DESQ_SOURCE_COLUMNS_CREATED_AT": created_col, "DESQ_SOURCE_COLUMNS_PATH": path_col,
            "DESQ_SOURCE_COLUMNS_DES_NAME": state_cols[0], "DESQ_SOURCE_COLUMNS_DES_SHARD": state_cols[1], "DESQ_SOURCE_COLUMNS_DES_STATUS": state_cols[2],
            "DESQ_ARCHIVE_URL": str(tmp_path / "archive"), "DESQ_DATA_DIR": str(tmp_path / "data"), "DESQ_STATE_DB_URL": f"sqlite:///{tmp_path / 'state.db'}",
        }
        settings = load_settings(env=env)
        try:
            with pytest.raises(MissingStateColumns, match="has no column") as info:
                SourceTable.connect(settings)
            assert len(info.value.statements) == 4 and all(s.startswith("ALTER TABLE") for s in info.value.statements[:3])
            assert info.value.statements[3].startswith("CREATE INDEX")
            with engine.begin() as conn:
                for statement in info.value.statements:
                    conn.execute(sa.text(statement))
            source = SourceTable.connect(settings)
            assert index_hints(source) == []
            assert isinstance(source.columns.des_shard.type, sa.Integer)
            report = run_sync(settings, TODAY)
            assert report.summary["files"] == 5 and report.summary["failed_rows"] == 0, report.summary
            with engine.connect() as conn:
                states = conn.execute(sa.select(source.columns.des_name, source.columns.des_status)).all()
            assert sorted(states) == sorted((f"20251120_{i}", PACKED) for i in range(1, 6))
        finally:
            sa.Table(table_name, sa.MetaData(), autoload_with=engine).drop(engine)
            engine.dispose()

    def test_short_or_wrong_state_columns_are_hinted(self, business: Business) -> None:
        with business.engine.begin() as conn:
            conn.execute(sa.text(f"CREATE TABLE {business.name}_b (doc_id INTEGER PRIMARY KEY, created TIMESTAMP, file_path VARCHAR(50), arch_name VARCHAR(12), arch_shard VARCHAR(4), arch_state VARCHAR(16))"))
        try:
            hints = index_hints(SourceTable.connect(business.settings(DESQ_SOURCE_TABLE=f"{business.name}_b")))
            assert "'arch_name' (source.columns.des_name) holds 12 characters; a name may need 29" in hints[0]
            assert "'arch_shard' (source.columns.des_shard) is VARCHAR(4), not an integer type" in hints[1]
            assert "CREATE INDEX" in hints[2] and "(arch_state, arch_shard, doc_id)" in hints[2]
        finally:
            with business.engine.begin() as conn:
                conn.execute(sa.text(f"DROP TABLE {business.name}_b"))

    # --- the files API's {path} lookup -------------------------------------------------------

    def test_path_of_one_row_by_id_and_day(self, business: Business) -> None:
        business.insert([{"doc_id": 5, "created": datetime(2025, 11, 21, 23, 30), "file_path": "live/5.pdf"}, {"doc_id": 6, "created": datetime(2025, 11, 21, 1, 0), "file_path": None}])
        table = SourceTable.connect(business.settings(DESQ_MODE="uid"))
        assert table.path_of("5", date(2025, 11, 21)) == "live/5.pdf"
        assert table.path_of("5", date(2025, 11, 22)) is None and table.path_of("6", date(2025, 11, 21)) is None
        assert table.path_of("x5", date(2025, 11, 21)) is None and table.path_of("٥", date(2025, 11, 21)) is None
        for huge in ("9223372036854775807", "9223372036854775808", "9" * 40):  # no integer column holds these
            assert table.path_of(huge, date(2025, 11, 21)) is None
