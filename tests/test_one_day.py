"""One day everywhere: nights with files at exact midnights on SQLite, PostgreSQL and MariaDB.

Every packed file must be in its own day's container, the uid cutoff must reach
``today - after_days - 1``, and running the same night again, or the next one, must rewrite no
container (checked by the containers' versions in storage, not by the log). Bad created_at values
(NULL, garbage, the year 1, 9999, the future) are reported and never stop the night.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from desq.archive import Archive
from desq.cli import run
from desq.published import AdvanceReport, publish, read_night, read_published
from desq.state import StateStore
from desq.layout import container_key, shard_of_name, yyyymmdd
from desq.pipeline.night import run_sync
from desq.settings import Settings, load_settings
from desq.source.table import create_engine
from desq.storage.local import LocalStorage

TODAY = date(2025, 11, 28)  # after_days 7: days up to 2025-11-20 are archived
ZONE = "Europe/Warsaw"
CREATED_TYPE = {"sqlite": "TEXT", "postgresql": "timestamp", "mariadb": "DATETIME(6)"}


@dataclass
class Good:
    id: int
    created: str
    """As the business application wrote it: local Warsaw time, no offset."""
    day: date


def good_rows() -> list[Good]:
    """Files at exact midnights and a microsecond either side, on ordinary and DST days."""
    rows = []
    spots = [(d, t) for d in (date(2025, 11, 14), date(2025, 10, 26), date(2025, 3, 30), date(2025, 11, 20))
             for t in ("00:00:00", "00:00:00.000001", "23:59:59.999999", "12:00:00")]
    for i, (day, clock) in enumerate(spots, start=1):
        rows.append(Good(i, f"{day.isoformat()} {clock}", day))
    rows.append(Good(len(rows) + 1, "2025-11-21 00:00:00", date(2025, 11, 21)))  # not old enough yet
    return rows


class Business:
    """A business table (its own column names, no index) with originals on disk, in one database."""

    def __init__(self, root: Path, url: str, dialect: str, mode: str) -> None:
        self.root, self.url, self.dialect, self.mode = root, url, dialect, mode
        self.engine = create_engine(url)
        self.name = f"docs_{uuid.uuid4().hex[:8]}"
        with self.engine.begin() as conn:
            conn.execute(sa.text(f"CREATE TABLE {self.name} (doc INTEGER PRIMARY KEY, made {CREATED_TYPE[dialect]}, file VARCHAR(200), n VARCHAR(300), h INTEGER, s VARCHAR(16))"))
        (root / "originals").mkdir(exist_ok=True)
        self.good = good_rows()
        self.insert([(g.id, g.created) for g in self.good])
        bad: list[tuple[int, str | None]] = [(100, None), (101, "9999-12-31 23:59:59"), (102, "2099-06-01 10:00:00"), (103, "0001-01-01 00:00:00" if dialect != "mariadb" else "1000-01-01 00:00:00")]
        if dialect == "sqlite":
            bad += [(104, "last tuesday"), (105, "2025-11-14 25:61")]
        self.insert(bad)
        self.early = date(1, 1, 1) if dialect != "mariadb" else date(1000, 1, 1)

    def insert(self, rows: list[tuple[int, str | None]]) -> None:
        for doc, _ in rows:
            (self.root / "originals" / f"{doc}.txt").write_bytes(f"file {doc}\n".encode())
        with self.engine.begin() as conn:
            conn.execute(sa.text(f"INSERT INTO {self.name} (doc, made, file) VALUES (:d, :m, :f)"), [{"d": d, "m": m, "f": f"{d}.txt"} for d, m in rows])

    def settings(self) -> Settings:
        return load_settings(env={
            "DESQ_MODE": self.mode, "DESQ_TIMEZONE": ZONE, "DESQ_SOURCE_DB_URL": self.url, "DESQ_SOURCE_TABLE": self.name,
            "DESQ_SOURCE_ROOT": str(self.root / "originals"), "DESQ_ARCHIVE_URL": str(self.root / "archive"),
            "DESQ_SOURCE_COLUMNS_ID": "doc", "DESQ_SOURCE_COLUMNS_CREATED_AT": "made", "DESQ_SOURCE_COLUMNS_PATH": "file",
            "DESQ_SOURCE_COLUMNS_DES_NAME": "n", "DESQ_SOURCE_COLUMNS_DES_SHARD": "h", "DESQ_SOURCE_COLUMNS_DES_STATUS": "s",
            "DESQ_DATA_DIR": str(self.root / "desq-data"), "DESQ_SOURCE_BATCH_SIZE": "5",
        })

    def name_of(self, doc: int, day: date) -> str:
        return f"{yyyymmdd(day)}_{doc}" if self.mode == "name" else str(doc)

    def where(self, doc: int, day: date) -> tuple[str, str]:
        name = self.name_of(doc, day)
        shard = shard_of_name(name, 8) if self.mode == "name" else doc % 256
        return container_key(day, shard, 8), name

    def drop(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE {self.name}"))
            for table in ("desq_state", "desq_lease", "desq_spool"):
                conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
        self.engine.dispose()


def versions(root: Path) -> dict[str, str]:
    storage = LocalStorage(root / "archive")
    return {info.key: info.etag for info in storage.list() if info.key.endswith(".des")}


def check_night(business: Business) -> None:
    settings = business.settings()
    first = run_sync(settings, TODAY)
    summary = first.summary
    assert summary["by_status"].get("failed", 0) == 0, summary
    archive = Archive(LocalStorage(business.root / "archive"))
    old = [g for g in business.good if g.day <= date(2025, 11, 20)]
    for g in old:
        key, name = business.where(g.id, g.day)
        assert archive.read(key, name) == f"file {g.id}\n".encode(), (g, key)
    young = next(g for g in business.good if g.day > date(2025, 11, 20))
    assert not (business.root / "archive" / business.where(young.id, young.day)[0]).exists() or business.name_of(young.id, young.day) not in {m.name for m in archive.open(business.where(young.id, young.day)[0]).members()}
    early_key, early_name = business.where(103, business.early)
    assert archive.read(early_key, early_name) == b"file 103\n"  # a placeholder year is archived under its day, and reported
    unplaced = 1 + (2 if business.dialect == "sqlite" else 0)  # NULL (and garbage text) have no day
    assert summary["unplaced"] == unplaced and summary["files"] == len(old) + 1, summary
    assert summary["future"] == 2
    assert "created_at is NULL" in " ".join(summary["examples"]) and "is in the future" in " ".join(summary["examples"])
    assert "0001-01-01" not in " ".join(summary["examples"])  # archived, so not among the rows left out
    if business.mode == "uid":
        assert StateStore(business.engine).cutoff() == date(2025, 11, 20)
        assert summary["cutoff_lag_days"] == 0 and "blocked" not in summary["cutoff"]
    assert summary["rewritten"] == 0
    before = versions(business.root)
    again = run_sync(settings, TODAY).summary  # the same night again
    assert again["rewritten"] == 0 and again["files"] == 0 and again["tasks"] == 0, again
    assert versions(business.root) == before
    business.insert([(200, "2025-11-21 00:00:00"), (201, "2025-11-21 23:59:59")])
    after = run_sync(settings, TODAY + timedelta(days=1)).summary  # the next night: one new day
    assert after["rewritten"] == 0 and after["files"] == 3, after  # 21 Nov: 200, 201 and the one waiting since the first night
    assert {k: v for k, v in versions(business.root).items() if k in before} == before
    assert read_night(LocalStorage(business.root / "archive"))["today"] == "2025-11-29"
    if business.mode == "uid":
        assert StateStore(business.engine).cutoff() == date(2025, 11, 21)


@pytest.fixture(params=["name", "uid"])
def mode(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def business_on(tmp_path: Path, mode: str) -> Iterator[Any]:
    made: list[Business] = []

    def make(url: str, dialect: str) -> Business:
        made.append(Business(tmp_path, url, dialect, mode))
        return made[-1]

    yield make
    for b in made:
        b.drop()


def test_sqlite_night(business_on: Any, tmp_path: Path) -> None:
    check_night(business_on(f"sqlite:///{tmp_path / 'business.db'}", "sqlite"))


@pytest.mark.integration
def test_postgresql_night(business_on: Any, pg_url: str) -> None:
    check_night(business_on(pg_url, "postgresql"))


@pytest.mark.integration
def test_mariadb_night(business_on: Any, mysql_url: str) -> None:
    check_night(business_on(mysql_url, "mariadb"))


def test_a_blocked_cutoff_is_loud(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    business = Business(tmp_path, f"sqlite:///{tmp_path / 'business.db'}", "sqlite", "uid")
    settings = business.settings()
    (tmp_path / "originals" / "5.txt").unlink()  # 2025-10-26 00:00:00.000001 cannot be fetched
    summary = run_sync(settings, TODAY).summary
    assert StateStore(business.engine).cutoff() == date(2025, 10, 25)
    assert "blocked by 2025-10-26: 1 file(s) not in their containers, e.g. 5 (looked in 20251026/05.des)" in summary["cutoff"]
    assert summary["cutoff_lag_days"] == (date(2025, 11, 20) - date(2025, 10, 25)).days
    again = run_sync(settings, TODAY).summary  # the days after the blocked one are not packed twice
    assert again["rewritten"] == 0 and again["tasks"] == 1 and again["complete_containers"] > 0, again
    with pytest.MonkeyPatch.context() as patch:
        for key, value in settings_env(business).items():
            patch.setenv(key, value)
        code = run(["cutoff", "--today", TODAY.isoformat()])
    out, err = capsys.readouterr()
    assert (code, out) == (0, "2025-10-25\n")
    assert "could move" not in err and "blocked by 2025-10-26" in err and "(looked in 20251026/05.des)" in err
    business.drop()


def test_a_blocked_year_one_and_a_long_document(tmp_path: Path) -> None:
    """A placeholder created_at in the year 1 whose file is gone blocks the cutoff (it is a day like
    any other) without stopping the night; examples of any length keep the cutoff document readable."""
    business = Business(tmp_path, f"sqlite:///{tmp_path / 'business.db'}", "sqlite", "uid")
    (tmp_path / "originals" / "103.txt").unlink()
    summary = run_sync(business.settings(), TODAY).summary
    assert summary["cutoff_date"] is None and "blocked by 0001-01-01" in summary["cutoff"], summary
    storage = LocalStorage(tmp_path / "archive")
    assert read_published(storage) is None
    report = AdvanceReport(before=None, after=date(2025, 11, 1), target=date(2025, 11, 20), blocked_day=date(2025, 11, 2), missing=5, examples=["é" * 5000] * 5)
    publish(storage, date(2025, 11, 1), report)
    assert read_published(storage) == date(2025, 11, 1)
    business.drop()


def settings_env(business: Business) -> dict[str, str]:
    return {
        "DESQ_MODE": "uid", "DESQ_TIMEZONE": ZONE, "DESQ_SOURCE_DB_URL": business.url, "DESQ_SOURCE_TABLE": business.name,
        "DESQ_SOURCE_ROOT": str(business.root / "originals"), "DESQ_ARCHIVE_URL": str(business.root / "archive"),
        "DESQ_SOURCE_COLUMNS_ID": "doc", "DESQ_SOURCE_COLUMNS_CREATED_AT": "made", "DESQ_SOURCE_COLUMNS_PATH": "file",
        "DESQ_DATA_DIR": str(business.root / "desq-data"),
    }


def test_midnight_on_the_embedded_default(in_tmp: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The report's case, as a new user meets it: ``desq nightly --sync`` on desq-data/source.db."""
    (in_tmp / "desq-data").mkdir()
    (in_tmp / "files").mkdir()
    engine = sa.create_engine(f"sqlite:///{in_tmp / 'desq-data' / 'source.db'}")
    rows = [(1, "2025-11-14 00:00:00"), (2, "2025-11-13 23:59:59"), (3, "2025-11-14T00:00"), (4, "2025-11-14 00:00:00.000000"), (5, "2025-11-15 00:00:00Z")]
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE files (id INTEGER PRIMARY KEY, created_at DATETIME, path TEXT, des_name TEXT, des_hash_bits INTEGER, des_status TEXT)"))
        for i, created in rows:
            (in_tmp / "files" / f"{i}.bin").write_bytes(b"x" * i)
            conn.execute(sa.text("INSERT INTO files (id, created_at, path) VALUES (:i, :c, :p)"), {"i": i, "c": created, "p": str(in_tmp / "files" / f"{i}.bin")})
    for mode in ("name", "uid"):
        monkeypatch.setenv("DESQ_MODE", mode)
        monkeypatch.setenv("DESQ_ARCHIVE_URL", str(in_tmp / f"archive-{mode}"))
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE IF EXISTS desq_state"))
        assert run(["nightly", "--sync", "--today", "2025-11-23"]) == 0
        out = capsys.readouterr().out
        assert "rewrote 0 container(s)" in out, out
        archive = Archive(LocalStorage(in_tmp / f"archive-{mode}"))
        for i, day in ((1, "20251114"), (2, "20251113"), (3, "20251114"), (4, "20251114"), (5, "20251115")):
            name = f"{day}_{i}" if mode == "name" else str(i)
            shard = shard_of_name(name, 8) if mode == "name" else i
            assert archive.read(f"{day}/{shard:02X}.des", name) == b"x" * i
        before = versions(in_tmp / f"archive-{mode}")
        assert run(["nightly", "--sync", "--today", "2025-11-23"]) == 0
        assert "rewrote 0 container(s)" in capsys.readouterr().out
        assert versions(in_tmp / f"archive-{mode}") == before
        if mode == "uid":
            assert run(["cutoff"]) == 0 and capsys.readouterr().out == "2025-11-15\n"


def test_bad_values_in_source_check(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    business = Business(tmp_path, f"sqlite:///{tmp_path / 'business.db'}", "sqlite", "name")
    for key, value in settings_env(business).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DESQ_MODE", "name")
    for key, column in (("DES_NAME", "n"), ("DES_SHARD", "h"), ("DES_STATUS", "s")):
        monkeypatch.setenv(f"DESQ_SOURCE_COLUMNS_{key}", column)
    assert run(["source", "check"]) == 0
    out = capsys.readouterr().out
    assert "created_at (every row read): 1 NULL, 2 not placeable on a day, 2 in the future, 1 before 1900" in out, out
    assert "NULL (never archived): id 100" in out and "no day (never archived): id 104: created_at 'last tuesday' is not a time" in out
    assert "in the future (archived once old enough): id 101: 9999-12-31 23:59:59" in out
    assert run(["mark", "--today", TODAY.isoformat()]) == 0
    out = capsys.readouterr().out
    assert "2 not marked: unreadable created_at" in out and "1 not marked: NULL created_at" in out and "2 not marked: created_at in the future" in out
    assert "id 100: created_at is NULL" in out and "id 102: created_at 2099-06-01 10:00:00 is in the future" in out
    assert "1 marked with a created_at before 1900" in out and "id 103: created_at 0001-01-01 00:00:00 is before 1900; marked as 00010101_103" in out
    business.drop()


def test_a_night_whose_originals_cannot_be_read_exits_1_and_packs_them_the_next_night(in_tmp: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    (in_tmp / "desq-data").mkdir()
    (in_tmp / "files").mkdir()
    engine = sa.create_engine(f"sqlite:///{in_tmp / 'desq-data' / 'source.db'}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE files (id INTEGER PRIMARY KEY, created_at DATETIME, path TEXT, des_name TEXT, des_hash_bits INTEGER, des_status TEXT)"))
        for i in range(1, 4):
            conn.execute(sa.text("INSERT INTO files (id, created_at, path) VALUES (:i, '2025-11-14 08:00:00', :p)"), {"i": i, "p": str(in_tmp / "files" / f"{i}.bin")})
    monkeypatch.setenv("DESQ_ARCHIVE_URL", str(in_tmp / "archive"))
    assert run(["nightly", "--sync", "--today", "2025-11-23"]) == 1  # no original can be read
    captured = capsys.readouterr()
    assert "3 row(s) could not be packed" in captured.err and captured.err.count("\n") == 1, captured.err
    for i in range(1, 4):
        (in_tmp / "files" / f"{i}.bin").write_bytes(b"back %d" % i)
    assert run(["nightly", "--sync", "--today", "2025-11-23"]) == 0
    assert "packed 3 file(s)" in capsys.readouterr().out
    archive = Archive(LocalStorage(in_tmp / "archive"))
    assert archive.read(f"20251114/{shard_of_name('20251114_2', 8):02X}.des", "20251114_2") == b"back 2"
