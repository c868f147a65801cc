"""PostgreSQL at scale: two markers at once, and rows read per packed file over a 256-shard night."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import sqlalchemy as sa


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


def test_rows_read_per_packed_file_over_a_night(pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    from run import rows_per_file  # the benchmark's own measurement, at its full size

    result = rows_per_file(False, pg=pg_url)
    with capsys.disabled():
        print(f"\nrows read per packed file: {result['figure']} ({result['details']})")
    assert result["details"]["tasks"] == 3 * 256 and result["met"]
