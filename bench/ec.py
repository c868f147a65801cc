"""The erasure-coded archive, ``ec://4+2`` over six folders, beside the plain local archive on the
same night (``desq nightly --sync`` in a new process each time, as bench/whole_night.py runs it).

    python bench/run.py [--quick] --only ec      # the rows of ``desq bench``; figures in bench/results/latest.json

One tree of originals (1-20 KB, plus a few big files at or above ``archive.big_file_bytes``, set
to 4 MiB here so that big files are coded too without 64 MiB originals) is packed into both
archives, alternating, over 16 shards a day so that containers are megabytes, as a real night's
are (at the default 256 shards a night this small makes containers of tens of KB, where the
per-container cost of the EC archive's markers and listings dominates). Then, on what the last
two nights stored:

- bytes over all nodes against the plain archive's, and what the overhead beyond (K+M)/K is made of;
- warm random member reads through ``desq.archive.Archive`` (every index cached) and through the
  files API (Flask's test client), with the storage requests of each read counted on every node;
- the same reads with two data nodes' folders renamed away (degraded: decoded from four others);
- checking every fragment (``ec_repair.check``) and rebuilding one lost node (``objects``, ``check``,
  ``repair``), against a plain copy of one node's folder.

Every read is compared with the plain archive's bytes, and a rebuilt node with the one it replaces.
Page cache hot: the figures are CPU and copies, not disks.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from desq.archive import Archive  # noqa: E402
from desq.settings import load_settings  # noqa: E402
from desq.storage import Storage  # noqa: E402
from desq.storage.counting import CountingStorage  # noqa: E402
from desq.storage.ec import ECStorage  # noqa: E402
from desq.storage.ec_format import FOOTER_SIZE, Version  # noqa: E402
from desq.storage.ec_repair import check, objects, repair  # noqa: E402
from desq.storage.local import LocalStorage  # noqa: E402

K, M = 4, 2
BIG_FILE_BYTES = 4 << 20
SHARD_BITS = 4
TODAY = date(2025, 12, 20)
LOST = (0, 1)
"""The node folders a degraded read goes without: two data fragments, the costly case."""


@dataclass(frozen=True)
class Scale:
    """How much one run measures."""

    files: int
    big: int
    nights: int
    reads: int
    repeats: int


QUICK = Scale(files=1_500, big=2, nights=1, reads=200, repeats=2)
FULL = Scale(files=20_000, big=4, nights=3, reads=2_000, repeats=5)


def build(root: Path, scale: Scale, seed: int = 7) -> dict[str, int]:
    """Originals under ``root/originals`` (1-20 KB, then ``scale.big`` of 1-2.5x the big-file size)
    and an unmarked SQLite table of them, all created on one day; bytes and files written."""
    rng = random.Random(seed)
    day = datetime.combine(TODAY - timedelta(days=10), datetime.min.time())
    rows, total = [], 0
    for i in range(1, scale.files + scale.big + 1):
        size = rng.randint(1_000, 20_000) if i <= scale.files else rng.randint(BIG_FILE_BYTES, BIG_FILE_BYTES * 5 // 2)
        rel = f"{i % 256:02x}/{i}.bin"
        path = root / "originals" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size))
        total += size
        rows.append((i, (day + timedelta(seconds=rng.randrange(86_400))).isoformat(sep=" "), rel))
    with sqlite3.connect(root / "pristine.db") as db:
        db.execute("CREATE TABLE files (id INTEGER PRIMARY KEY, created_at TEXT NOT NULL, path TEXT NOT NULL, des_name TEXT, des_hash_bits INTEGER, des_status TEXT)")
        db.executemany("INSERT INTO files (id, created_at, path) VALUES (?, ?, ?)", rows)
    db.close()
    return {"bytes": total, "files": len(rows), "big_files": scale.big}


def node_folders(root: Path) -> list[Path]:
    return [root / "ec" / f"node{i}" for i in range(K + M)]


def archive_env(root: Path, coded: bool) -> dict[str, str]:
    """The settings of the plain archive, or of ``ec://4+2`` over six folders."""
    common = {"DESQ_SHARD_BITS": str(SHARD_BITS), "DESQ_ARCHIVE_BIG_FILE_BYTES": str(BIG_FILE_BYTES)}
    if not coded:
        return common | {"DESQ_ARCHIVE_URL": str(root / "plain")}
    return common | {"DESQ_ARCHIVE_URL": f"ec://{K}+{M}", "DESQ_ARCHIVE_NODES": json.dumps([str(p) for p in node_folders(root)])}


def night(root: Path, coded: bool) -> float:
    """One ``desq nightly --sync`` into an empty archive from the unmarked table: its wall time."""
    shutil.rmtree(root / ("ec" if coded else "plain"), ignore_errors=True)
    shutil.rmtree(root / "data", ignore_errors=True)
    (root / "data").mkdir()
    shutil.copyfile(root / "pristine.db", root / "source.db")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESQ_")} | archive_env(root, coded) | {
        "DESQ_DATA_DIR": str(root / "data"), "DESQ_SOURCE_DB_URL": f"sqlite:///{root / 'source.db'}", "DESQ_SOURCE_ROOT": str(root / "originals"),
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    }
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "desq", "nightly", "--sync", "--today", TODAY.isoformat()], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"desq nightly into {'ec' if coded else 'plain'} failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds


def usage(folder: Path) -> dict[str, int]:
    """Files, their bytes and the disk blocks they take under ``folder``."""
    found = {"files": 0, "bytes": 0, "disk_bytes": 0, "empty_files": 0}
    for path in folder.rglob("*"):
        if path.is_file():
            stat = path.stat()
            found["files"] += 1
            found["bytes"] += stat.st_size
            found["disk_bytes"] += stat.st_blocks * 512
            found["empty_files"] += stat.st_size == 0
    return found


def overhead(ec: ECStorage) -> dict[str, float]:
    """What the nodes hold beyond (K+M)/K of every object's bytes, from the geometry alone:
    last-stripe padding (coded, so times (K+M)/K), block checksums, footers; markers are empty."""
    parts = {"objects": 0, "object_bytes": 0, "cells": 0, "padding": 0.0, "block_checksums": 0, "footers": 0, "marker_files": 0}
    g = ec.geometry
    for info in ec.list():
        cells = g.fragment_length(info.size)
        parts["objects"] += 1
        parts["object_bytes"] += info.size
        parts["cells"] += (K + M) * cells
        parts["padding"] += (K * cells - info.size) * (K + M) / K
        parts["block_checksums"] += (K + M) * 4 * -(-cells // g.block)
        parts["footers"] += (K + M) * FOOTER_SIZE
        parts["marker_files"] += K + M
    return parts


class Counter:
    """Requests counted across threads (CountingStorage's ``on_request``)."""

    def __init__(self) -> None:
        self.n = 0
        self._lock = threading.Lock()

    def __call__(self, _op: str) -> None:
        with self._lock:
            self.n += 1


def coded(root: Path, counter: Counter) -> ECStorage:
    """The EC archive the last night wrote, every node request counted."""
    return ECStorage([CountingStorage(LocalStorage(p), on_request=counter) for p in node_folders(root)], K, M)


def picks(storage: Storage, count: int, seed: int = 3) -> list[tuple[str, str]]:
    """``count`` random (container, member) pairs of the small members (big ones are read whole)."""
    archive = Archive(storage)
    every = [(info.key, m.name) for info in storage.list() if info.key.endswith(".des") for m in archive.open(info.key).members() if not m.external]
    return random.Random(seed).choices(every, k=count)


def timed(read: Callable[[str, str], bytes], chosen: list[tuple[str, str]], expected: list[bytes]) -> list[float]:
    """Seconds of each read; every read's bytes checked."""
    seconds = []
    for (key, name), want in zip(chosen, expected):
        started = time.perf_counter()
        got = read(key, name)
        seconds.append(time.perf_counter() - started)
        if got != want:
            raise AssertionError(f"{key} {name}: {len(got)} bytes read differ from the plain archive's {len(want)}")
    return seconds


def spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def latency(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {"p50_ms": 1e3 * ordered[len(ordered) // 2], "p99_ms": 1e3 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], "reads": len(ordered)}


def http_reader(storage: Storage, env: dict[str, str]) -> Callable[[str, str], bytes]:
    """GET /files/<name> through the files API on ``storage`` (Flask's test client, no sockets)."""
    from web import create_app

    client = create_app(load_settings(env=env), storage=storage).test_client()

    def read(_key: str, name: str) -> bytes:
        response = client.get(f"/files/{name}")
        if response.status_code != 200:
            raise AssertionError(f"GET /files/{name}: {response.status_code}")
        return response.data

    return read


class Ranges(CountingStorage):
    """Remembers the range of the latest read, to tell how many cells it spans."""

    last: tuple[int, int, str | None] = (0, 0, None)

    def read(self, key: str, offset: int, length: int, *, if_match: str | None = None) -> bytes:
        self.last = (offset, length, if_match)
        return super().read(key, offset, length, if_match=if_match)


def requests_per_read(ec: ECStorage, counter: Counter, chosen: list[tuple[str, str]]) -> dict[str, Any]:
    """Node requests of each warm read, against the cells its byte range spans."""
    ranges = Ranges(ec)
    archive = Archive(ranges)
    for key, name in chosen:
        archive.read(key, name)
    by_cells: dict[int, list[int]] = {}
    for key, name in chosen:
        before = counter.n
        archive.read(key, name)
        offset, length, etag = ranges.last
        version = Version.from_etag(etag or "")
        spans = len(ec.geometry.segments(version.length, offset, length)) if version else 0
        by_cells.setdefault(spans, []).append(counter.n - before)
    every = [n for counts in by_cells.values() for n in counts]
    return {"mean": sum(every) / len(every), "max": max(every),
            "by_cells_spanned": {cells: {"reads": len(counts), "max_requests": max(counts)} for cells, counts in sorted(by_cells.items())}}


def reads(root: Path, scale: Scale) -> dict[str, Any]:
    """Warm reads of the same members, plain and EC alternating, through Archive then HTTP."""
    counter = Counter()
    ec = coded(root, counter)
    plain = LocalStorage(root / "plain")
    chosen = picks(plain, scale.reads)
    sides = {"plain": Archive(plain).read, "ec": Archive(ec).read,
             "plain_http": http_reader(plain, archive_env(root, False)), "ec_http": http_reader(ec, archive_env(root, True))}
    expected = [sides["plain"](key, name) for key, name in chosen]
    for read in sides.values():
        timed(read, chosen, expected)  # open every index (the warm-up)
    rates: dict[str, list[float]] = {side: [] for side in sides}
    seconds: dict[str, list[float]] = {side: [] for side in sides}
    for _ in range(scale.repeats):
        for side, read in sides.items():
            took = timed(read, chosen, expected)
            rates[side].append(len(took) / sum(took))
            seconds[side] += took
    return {
        "reads": len(chosen), "bytes_per_read": sum(map(len, expected)) / len(expected),
        "reads_per_s": {side: spread(r) for side, r in rates.items()}, "latency": {side: latency(s) for side, s in seconds.items()},
        "requests_per_warm_read": requests_per_read(ec, counter, chosen),
        "degraded": degraded(root, ec, counter, chosen, expected, seconds["ec"]),
    }


@contextmanager
def renamed(folders: list[Path]) -> Iterator[None]:
    """Rename the folders away for the block, then back."""
    for folder in folders:
        folder.rename(folder.with_name(folder.name + ".gone"))
    try:
        yield
    finally:
        for folder in folders:
            folder.with_name(folder.name + ".gone").rename(folder)


def degraded(root: Path, ec: ECStorage, counter: Counter, chosen: list[tuple[str, str]], expected: list[bytes], healthy: list[float]) -> dict[str, Any]:
    """The same reads with the folders of nodes ``LOST`` gone; latency of those that decoded."""
    archive = Archive(ec)
    timed(archive.read, chosen, expected)
    gone, other, requests = [], [], []
    lost = [node_folders(root)[i] for i in LOST]
    with renamed(lost):
        for (key, name), want in zip(chosen, expected):
            before, asked = ec.events.total("degraded_read"), counter.n
            took = timed(archive.read, [(key, name)], [want])[0]
            if ec.events.total("degraded_read") > before:
                gone.append(took)
                requests.append(counter.n - asked)
            else:
                other.append(took)
    return {"lost_nodes": list(LOST), "decoded": latency(gone), "direct": latency(other), "healthy_ec": latency(healthy),
            "requests_per_decoded_read": {"mean": sum(requests) / len(requests), "max": max(requests)}}


class Inline:
    """An executor that runs each call in the caller's thread, so that cProfile sees the work."""

    def map(self, fn: Callable[[Any], Any], items: Any) -> Iterator[Any]:
        return iter([fn(item) for item in items])


def checks(root: Path, scale: Scale, profile: Callable[[Callable[[], Any]], list[str]] | None = None) -> dict[str, Any]:
    """Check every fragment of the healthy archive, copy node 1's folder (the anchor), then rebuild
    node 0 from nothing, ``scale.repeats`` times; MB/s of each."""
    ec = coded(root, Counter())
    folder = node_folders(root)[0]
    stored = sum(usage(p)["bytes"] for p in node_folders(root))
    node_bytes = usage(folder)["bytes"]
    times: dict[str, list[float]] = {"check": [], "copy": [], "rebuild": [], "rebuild_checking": []}
    same = True

    def rebuild() -> int:
        problems, checking = 0, 0.0
        for key, version, marked in objects(ec):
            started = time.perf_counter()
            found = check(ec, key, version, marked)
            checking += time.perf_counter() - started
            if found:
                problems += len(found)
                repair(ec, key, version, found)
        times["rebuild_checking"].append(checking)
        return problems

    for _ in range(scale.repeats):
        started = time.perf_counter()
        if any(check(ec, key, version, marked) for key, version, marked in objects(ec)):
            raise AssertionError("the healthy archive has bad fragments")
        times["check"].append(time.perf_counter() - started)
        started = time.perf_counter()
        shutil.copytree(node_folders(root)[1], root / "copy")
        times["copy"].append(time.perf_counter() - started)
        shutil.rmtree(root / "copy")
        folder.rename(root / "lost")
        started = time.perf_counter()
        bad = rebuild()
        times["rebuild"].append(time.perf_counter() - started)
        same = same and bad > 0 and identical(root / "lost", folder)
        shutil.rmtree(root / "lost")
    found: dict[str, Any] = {
        "stored_bytes": stored, "node_bytes": node_bytes, "objects": sum(1 for _ in objects(ec)), "rebuilt_identical": same,
        "MB_per_s": {"check": spread([stored / 1e6 / t for t in times["check"]]), "rebuild": spread([node_bytes / 1e6 / t for t in times["rebuild"]]),
                     "copy": spread([node_bytes / 1e6 / t for t in times["copy"]])},
        "seconds": {what: [round(t, 3) for t in ts] for what, ts in times.items()},
    }
    if profile is not None:
        folder.rename(root / "lost")
        ec._pool = ec._reads = Inline()  # type: ignore[assignment]
        found["profile_rebuild_node_requests_in_turn"] = profile(rebuild)
        shutil.rmtree(root / "lost")
    return found


def identical(a: Path, b: Path) -> bool:
    """The same files with the same bytes under both folders."""
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    return files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file()) and all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


def measure(quick: bool, profile: Callable[[Callable[[], Any]], list[str]] | None = None) -> dict[str, Any]:
    """Everything of one run: build, the nights alternating, bytes, reads, degraded reads, repair
    (``profile(fn)``, e.g. run.py's ``top_frames``, is given one rebuild of a node)."""
    scale = QUICK if quick else FULL
    root = Path(tempfile.mkdtemp(prefix="desq-bench-ec-"))
    try:
        data = build(root, scale)
        nights: dict[str, list[float]] = {"plain": [], "ec": []}
        for _ in range(scale.nights):
            nights["plain"].append(night(root, False))
            nights["ec"].append(night(root, True))
        plain = usage(root / "plain")
        nodes = [usage(p) for p in node_folders(root)]
        stored = {key: sum(n[key] for n in nodes) for key in nodes[0]}
        parts = overhead(ECStorage([LocalStorage(p) for p in node_folders(root)], K, M))
        ideal = plain["bytes"] * (K + M) / K
        return {
            "scale": scale.__dict__, "data": data, "big_file_bytes": BIG_FILE_BYTES,
            "pack": {side: {"seconds": s, "files_per_s": spread([data["files"] / t for t in s]), "MB_per_s": spread([data["bytes"] / 1e6 / t for t in s])} for side, s in nights.items()},
            "bytes": {"plain": plain, "ec_nodes": stored, "per_node": [n["bytes"] for n in nodes], "ratio": stored["bytes"] / plain["bytes"],
                      "disk_ratio": stored["disk_bytes"] / plain["disk_bytes"], "ideal": ideal, "beyond_ideal": stored["bytes"] - ideal,
                      "parts": parts, "unaccounted": stored["bytes"] - parts["cells"] - parts["block_checksums"] - parts["footers"]},
            "reads": reads(root, scale),
            "checks": checks(root, scale, profile),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)

