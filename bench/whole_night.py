"""The whole night (``desq nightly --sync``: mark, plan, pack, verify, publish, mark PACKED) against
GNU tar of the same tree, in the same run, hot page cache, embedded default (SQLite, local archive).

    python bench/whole_night.py [--files 20000 --days 3] [--runs 3] [--profile out.prof]

The business table has no index of its own beyond its primary key (as users have it). Each desq
run starts from a fresh copy of the unmarked source database and an empty archive; the anchors are
``tar cf`` of the originals folder and Python's own open/read/close of every original. Prints one
JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

BIN = Path(sys.executable).parent
TODAY = date(2025, 12, 20)
ROOT = Path(__file__).resolve().parents[1]


def build(root: Path, files: int, days: int, seed: int = 18) -> int:
    """Originals of 0.5-8 KiB under ``root/originals`` and an unmarked, unindexed SQLite table of
    them over ``days`` days (text created_at, as SQLite keeps it); returns the bytes written."""
    rng = random.Random(seed)
    originals = root / "originals"
    rows, total = [], 0
    first = TODAY - timedelta(days=10 + days)
    for i in range(1, files + 1):
        rel = f"{i % 256:02x}/{i}.bin"
        path = originals / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = rng.randbytes(rng.randint(512, 8192))
        path.write_bytes(data)
        total += len(data)
        created = datetime.combine(first + timedelta(days=i % days), datetime.min.time()) + timedelta(seconds=rng.randrange(86400))
        rows.append({"id": i, "created_at": created.isoformat(sep=" "), "path": rel})
    engine = sa.create_engine(f"sqlite:///{root / 'pristine.db'}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE files (id INTEGER PRIMARY KEY, created_at TEXT NOT NULL, path TEXT NOT NULL, des_name TEXT, des_hash_bits INTEGER, des_status TEXT)"))
        conn.execute(sa.text("INSERT INTO files (id, created_at, path) VALUES (:id, :created_at, :path)"), rows)
    engine.dispose()
    return total


def env_for(root: Path) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("DESQ_")} | {
        "DESQ_DATA_DIR": str(root / "data"), "DESQ_SOURCE_DB_URL": f"sqlite:///{root / 'source.db'}",
        "DESQ_SOURCE_ROOT": str(root / "originals"), "DESQ_ARCHIVE_URL": str(root / "archive"),
    }


def fresh(root: Path) -> None:
    for name in ("archive", "data"):
        shutil.rmtree(root / name, ignore_errors=True)
    (root / "data").mkdir()
    shutil.copyfile(root / "pristine.db", root / "source.db")


def cpu_children() -> float:
    usage = os.times()
    return usage.children_user + usage.children_system


def run_desq(root: Path, profile: str | None = None) -> dict[str, Any]:
    """One whole night as a user runs it (a new process); its wall time and CPU seconds."""
    fresh(root)
    args = [str(BIN / "desq"), "nightly", "--sync", "--today", TODAY.isoformat()]
    if profile:
        args = [sys.executable, "-m", "cProfile", "-o", profile, "-m", "desq", *args[1:]]
    cpu = cpu_children()
    started = time.perf_counter()
    done = subprocess.run(args, env=env_for(root), capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"desq nightly failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    containers = sum(1 for p in (root / "archive").rglob("*") if p.is_file() and not p.name.startswith("_"))
    return {"seconds": seconds, "cpu": cpu_children() - cpu, "containers": containers, "output": done.stdout.strip().splitlines()[-3:]}


def run_tar(root: Path) -> dict[str, float]:
    out = root / "anchor.tar"
    cpu = cpu_children()
    started = time.perf_counter()
    subprocess.run(["tar", "cf", str(out), "-C", str(root / "originals"), "."], check=True)
    seconds = time.perf_counter() - started
    out.unlink()
    return {"seconds": seconds, "cpu": cpu_children() - cpu}


def python_reads(root: Path) -> float:
    """Python's own open/read/close of every original (the per-file anchor)."""
    paths = [str(p) for p in (root / "originals").rglob("*.bin")]
    started = time.perf_counter()
    for path in paths:
        with open(path, "rb") as f:
            f.read()
    return time.perf_counter() - started


def measure(files: int, days: int, runs: int, profile: str | None = None, keep: Path | None = None) -> dict[str, Any]:
    """Build the tree once, then alternate tar and desq ``runs`` times; medians and ratios."""
    root = Path(tempfile.mkdtemp(prefix="desq-night-", dir=keep))
    try:
        total = build(root, files, days)
        run_tar(root)  # warm the page cache
        desq_runs, tar_runs, py_runs = [], [], []
        for i in range(runs):
            tar_runs.append(run_tar(root))
            py_runs.append(python_reads(root))
            desq_runs.append(run_desq(root, profile if (profile and i == runs - 1) else None))
        desq_s = statistics.median(r["seconds"] for r in desq_runs)
        tar_s = statistics.median(r["seconds"] for r in tar_runs)
        cpu = statistics.median(r["cpu"] for r in desq_runs)
        containers = desq_runs[-1]["containers"]
        return {
            "files": files, "days": days, "bytes": total, "containers": containers,
            "desq_seconds": [round(r["seconds"], 3) for r in desq_runs], "tar_seconds": [round(r["seconds"], 3) for r in tar_runs],
            "python_read_seconds": [round(s, 3) for s in py_runs],
            "ratio_vs_tar": round(tar_s / desq_s, 3),
            "core_seconds_per_million_files": {"desq": round(cpu / files * 1e6, 1), "tar": round(statistics.median(r["cpu"] for r in tar_runs) / files * 1e6, 1)},
            "per_file_ms": round(desq_s / files * 1e3, 4), "per_container_ms": round(desq_s / max(1, containers) * 1e3, 3),
            "output": desq_runs[-1]["output"],
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", help="write a cProfile of the last desq run here")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.files, args.days, args.runs, args.profile), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
