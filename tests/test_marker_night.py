"""PostgreSQL at scale: two markers at once, and rows read per packed file over a 256-shard night."""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa

from desq.settings import load_settings
from desq.source.marker import mark
from desq.source.plan import name_rows_for, plan_names, plan_uids
from desq.source.table import SourceTable

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from marker import build_table, check_rows, run_markers  # noqa: E402

pytestmark = pytest.mark.integration


@pytest.fixture
def table_of(pg_url: str):  # noqa: ANN201
    made: list[str] = []

    def make(rows: int) -> str:
        made.append(build_table(pg_url, rows))
        return made[-1]

    yield make
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        for name in made:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))
    engine.dispose()


def test_two_markers_mark_every_row_exactly_once(pg_url: str, table_of) -> None:  # noqa: ANN001
    table = table_of(100_000)
    outs, _ = run_markers(pg_url, table, processes=2, batch=500)
    counts = [int(line.split()[1]) for line in outs]
    assert sum(counts) == 100_000 and all(c > 0 for c in counts), outs  # both worked, no row counted twice
    assert check_rows(pg_url, table, 100_000) == 0  # every row has the contract's name, shard and READY


def test_rows_read_per_packed_file_over_a_night(pg_url: str, table_of, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    table = table_of(200_000)  # 10,000 files a day: a thin night still, ~39 files a task
    env = {"DESQ_SOURCE_DB_URL": pg_url, "DESQ_SOURCE_TABLE": table}
    source = SourceTable.connect(load_settings(env=env))
    mark(source, today=date(2025, 11, 11))  # created before Nov 4: days 1..3 of the table's 20
    source.rows_read = 0
    plan = plan_names(source)
    packed = sum(len(list(name_rows_for(source, w.date, w.shard))) for w in plan.work)
    name_ratio = source.rows_read / packed
    uid = SourceTable.connect(load_settings(env=env | {"DESQ_MODE": "uid"}))
    uid_plan = plan_uids(uid, date(2025, 11, 1), date(2025, 11, 3))
    uid_ratio = uid.rows_read / uid_plan.files
    with capsys.disabled():
        print(f"\nrows read per packed file: name mode {name_ratio:.4f} ({packed} files, {len(plan.work)} tasks); uid mode {uid_ratio:.4f} ({uid_plan.files} files, {len(uid_plan.work)} tasks)")
    assert len(plan.work) == 3 * 256 and packed == plan.files
    assert name_ratio <= 1.05 and uid_ratio <= 1.05
