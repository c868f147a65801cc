"""What the generous SQL selection of a text created_at costs: rows read per row of the day.

    python bench/day_selection.py [--rows 200000] [--days 20] [--offsets 0.5] [--index]

Builds a SQLite table of text created_at values at random seconds over ``--days`` days, a share
``--offsets`` of them written with ``Z`` or ``+01:00`` (the rest as local times), asks for one day
in Europe/Warsaw through ``SourceTable.day_range`` and prints one JSON line: the rows the SQL
returned, the rows of that day (``day_of``), their ratio, and the query's time. The anchor is the
exact answer itself (ratio 1.0).
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import sys
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from desq.settings import load_settings  # noqa: E402
from desq.source.table import SourceTable, create_engine  # noqa: E402

START = datetime(2025, 11, 1)


def build(path: Path, rows: int, days: int, offsets: float, index: bool) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE files (id INTEGER PRIMARY KEY, created_at TEXT, path TEXT)")
    rng = random.Random(1)
    values = []
    for i in range(rows):
        t = START + timedelta(seconds=rng.randrange(days * 86400))
        if rng.random() < offsets:
            text = t.isoformat() + "Z" if i % 2 else t.isoformat(timespec="microseconds") + "+01:00"
        else:
            text = t.strftime("%Y-%m-%d %H:%M:%S")
        values.append((i, text, "p"))
    conn.executemany("INSERT INTO files VALUES (?, ?, ?)", values)
    if index:
        conn.execute("CREATE INDEX files_created ON files (created_at)")
    conn.commit()
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--days", type=int, default=20)
    parser.add_argument("--offsets", type=float, default=0.5, help="share of values written with an offset")
    parser.add_argument("--index", action="store_true", help="give created_at an index")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "source.db"
        build(path, args.rows, args.days, args.offsets, args.index)
        url = f"sqlite:///{path}"
        settings = load_settings(env={"DESQ_MODE": "uid", "DESQ_SOURCE_DB_URL": url, "DESQ_TIMEZONE": "Europe/Warsaw"})
        source = SourceTable(create_engine(url), settings)
        day = date(2025, 11, 10)
        query = sa.select(source.columns.id, source.created_read).where(source.day_range(day, day))
        started = time.perf_counter()
        with source.engine.connect() as conn:
            selected = conn.execute(query).all()
        seconds = time.perf_counter() - started
        exact = sum(1 for _, value in selected if source.day_of(value) == day)
        print(json.dumps({"rows": args.rows, "offsets": args.offsets, "index": args.index, "selected": len(selected), "of_the_day": exact, "ratio": round(len(selected) / exact, 2), "seconds": round(seconds, 3)}))


if __name__ == "__main__":
    main()
