"""Marker throughput on a PostgreSQL table of N rows, with 1 or more marker processes.

    python bench/marker.py --url postgresql+psycopg2://desq:...@127.0.0.1/desq_test [--rows 1000000] [--processes 1]

Builds a business table (COPY), runs ``desq mark`` in that many processes at once, checks every row,
and prints one JSON line with rows/s.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from desq.layout import shard_of_name  # noqa: E402

START = datetime(2025, 11, 1)


def create_files_table(engine: sa.Engine, table: str, rows: Iterable[tuple[int, datetime, str]], *, chunk: int = 500_000) -> None:
    """CREATE the business table (id, created_at, path and the DES columns, empty) and COPY ``rows``
    (id, created_at, path) in, ``chunk`` rows per COPY."""
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE {table} (id bigint PRIMARY KEY, created_at timestamp, path text, des_name text, des_hash_bits int, des_status text)"))
    raw = engine.raw_connection()
    try:
        rows = iter(rows)
        while batch := list(itertools.islice(rows, chunk)):
            buf = io.StringIO("".join(f"{i}\t{created}\t{path}\t\\N\t\\N\t\\N\n" for i, created, path in batch))
            with raw.cursor() as cur:
                cur.copy_expert(f"COPY {table} FROM STDIN", buf)
            raw.commit()
    finally:
        raw.close()


def build_table(url: str, rows: int, name: str | None = None) -> str:
    """A fresh business table of ``rows`` rows over 20 days (COPY: fast), with the DES columns empty."""
    name = name or f"bench_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(url)
    create_files_table(engine, name, ((i, START + timedelta(seconds=i * 1728000 // rows), f"/data/{i}.pdf") for i in range(1, rows + 1)))
    with engine.begin() as conn:
        conn.execute(sa.text(f"ANALYZE {name}"))
    engine.dispose()
    return name


def expected_name(i: int, rows: int) -> str:
    return f"{START + timedelta(seconds=i * 1728000 // rows):%Y%m%d}_{i}"


def run_markers(url: str, table: str, processes: int, batch: int = 1000) -> tuple[list[str], float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESQ_")} | {
        "DESQ_SOURCE_DB_URL": url, "DESQ_SOURCE_TABLE": table, "DESQ_SOURCE_BATCH_SIZE": str(batch),
    }
    desq = str(Path(sys.executable).parent / "desq")
    t0 = time.perf_counter()
    procs = [subprocess.Popen([desq, "mark", "--today", "2025-12-31"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(processes)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=3600)
        if p.returncode != 0:
            raise SystemExit(f"marker failed: {err}")
        outs.append(out.splitlines()[0])
    return outs, time.perf_counter() - t0


def check_rows(url: str, table: str, rows: int) -> int:
    """Rows whose name, shard or status differ from the contract's (0 when all is right)."""
    engine = sa.create_engine(url)
    wrong = 0
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True).execute(sa.text(f"SELECT id, des_name, des_hash_bits, des_status FROM {table}"))
        for i, name, shard, status in result:
            want = expected_name(i, rows)
            if (name, shard, status) != (want, shard_of_name(want, 8), "READY"):
                wrong += 1
    engine.dispose()
    return wrong


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    table = build_table(args.url, args.rows)
    try:
        outs, seconds = run_markers(args.url, table, args.processes, args.batch)
        marked = sum(int(o.split()[1]) for o in outs)
        print(json.dumps({
            "rows": args.rows, "processes": args.processes, "batch": args.batch, "marked": marked,
            "wrong_rows": check_rows(args.url, table, args.rows), "seconds": round(seconds, 2),
            "rows_per_s": round(args.rows / seconds), "markers": outs,
        }))
    finally:
        engine = sa.create_engine(args.url)
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))


if __name__ == "__main__":
    main()
