"""``desq source check``, ``desq mark`` and ``desq cutoff`` on the embedded default (SQLite)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import sqlalchemy as sa

from desq.cli import run
from desq.container import ContainerWriter


@pytest.fixture
def business(in_tmp: Path) -> sa.Engine:
    (in_tmp / "desq-data").mkdir()
    engine = sa.create_engine(f"sqlite:///{in_tmp / 'desq-data' / 'source.db'}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE files (id INTEGER PRIMARY KEY, created_at DATETIME, path TEXT, des_name TEXT, des_hash_bits INTEGER, des_status TEXT)"))
        conn.execute(sa.text("INSERT INTO files (id, created_at, path) VALUES (1, '2025-11-20 10:00:00', 'a.pdf'), (42, '2025-11-20 11:00:00', 'b.pdf'), (7, '2025-11-27 09:00:00', 'c.pdf'), (8, NULL, 'd.pdf')"))
    return engine


def desq(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_source_check(business: sa.Engine, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = desq(capsys, "source", "check")
    assert code == 0
    assert "source.columns.des_shard" in out and "-> des_hash_bits" in out and "rows: 4" in out
    assert "des_status NULL: 4" in out and "hint: no index on (des_status, des_hash_bits)" in out


def test_source_check_prints_the_statements_for_missing_columns(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (in_tmp / "desq-data").mkdir()
    engine = sa.create_engine(f"sqlite:///{in_tmp / 'desq-data' / 'source.db'}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE files (id INTEGER PRIMARY KEY, created_at DATETIME, path TEXT, des_status TEXT)"))
    code, out, err = desq(capsys, "source", "check")
    assert code == 1 and "'des_name' (source.columns.des_name), 'des_hash_bits' (source.columns.des_shard)" in err
    statements = [line.strip() for line in out.splitlines() if line.startswith("  ")]
    assert statements == [
        "ALTER TABLE files ADD COLUMN des_name VARCHAR(29);",
        "ALTER TABLE files ADD COLUMN des_hash_bits INTEGER;",
        "CREATE INDEX ix_files_desq ON files (des_status, des_hash_bits, id);",
    ]
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement))
    code, out, _ = desq(capsys, "source", "check")
    assert code == 0 and "hint" not in out


def test_mark_then_check(business: sa.Engine, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = desq(capsys, "mark", "--today", "2025-11-28")
    assert code == 0 and out.startswith("marked 2 rows") and "1 not marked: NULL created_at" in out
    with business.connect() as conn:
        rows = dict(conn.execute(sa.text("SELECT id, des_name || ':' || des_hash_bits || ':' || des_status FROM files WHERE des_status IS NOT NULL")).all())
    assert rows == {1: "20251120_1:254:READY", 42: "20251120_42:49:READY"}  # FE and 31, the contract's vectors
    assert "des_status READY: 2" in desq(capsys, "source", "check")[1]


def test_cutoff_commands(business: sa.Engine, in_tmp: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = desq(capsys, "cutoff")
    assert code == 1 and "uid mode" in err
    monkeypatch.setenv("DESQ_MODE", "uid")
    assert desq(capsys, "cutoff")[:2] == (0, "none\n")
    code, out, err = desq(capsys, "cutoff", "--advance", "--today", "2025-11-28")
    assert (code, out) == (0, "none\n") and "blocked by 2025-11-20: 2 file(s) not in their containers" in err and "(looked in 20251120/" in err
    for uid in (1, 42):
        archive = in_tmp / "desq-data" / "archive" / "20251120"
        archive.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        with ContainerWriter(buf) as w:
            w.add(str(uid), b"x")
        (archive / f"{uid % 256:02X}.des").write_bytes(buf.getvalue())
    assert desq(capsys, "cutoff", "--advance", "--today", "2025-11-28")[1] == "2025-11-20\n"
    assert desq(capsys, "cutoff")[1] == "2025-11-20\n"
    assert (in_tmp / "desq-data" / "archive" / "_desq" / "cutoff.json").is_file()


@pytest.mark.parametrize(
    ("args", "env", "code", "words"),
    [
        (("mark", "--today", "28-11-2025"), {}, 2, "is not YYYY-MM-DD"),
        (("mark",), {"DESQ_MODE": "uid"}, 1, "name mode"),
        (("mark",), {"DESQ_SOURCE_TABLE": "nope"}, 1, "does not exist"),
        (("source", "check"), {"DESQ_SOURCE_COLUMNS_PATH": "file"}, 1, "no column 'file' (source.columns.path)"),
        (("source", "check"), {"DESQ_SOURCE_DB_URL": "postgresql+psycopg2://u:topsecret@127.0.0.1:1/x"}, 1, "u:***@"),
        (("cutoff", "--today", "x"), {"DESQ_MODE": "uid"}, 2, "is not YYYY-MM-DD"),
        (("mark", "--today", "2025-02-30"), {}, 2, "is not YYYY-MM-DD"),
    ],
)
def test_bad_input(business: sa.Engine, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...], env: dict[str, str], code: int, words: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    got, out, err = desq(capsys, *args)
    assert got == code and words in err and "topsecret" not in err + out
    if code == 1:
        assert err.count("\n") == 1 and err.startswith("desq: error: ")


def test_the_marker_leaves_unmarkable_rows_and_says_why(business: sa.Engine, capsys: pytest.CaptureFixture[str]) -> None:
    with business.begin() as conn:
        conn.execute(sa.text("INSERT INTO files (id, created_at, path) VALUES (2, '20/11/2025 10:00', 'e.pdf'), (3, '2025-11-20 10:00:00', '')"))
    code, out, _ = desq(capsys, "mark", "--today", "2025-11-28")
    assert code == 0 and "1 not marked: empty path" in out and "1 not marked: unreadable created_at" in out
    assert "id 2: created_at '20/11/2025 10:00' is not a time" in out
