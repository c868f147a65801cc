"""S3 listing of one day of 100k files (10k with --quick) over 256 shards, beside its anchor.

    python bench/s3_listing.py [--quick]

desq walks the whole day with ``Lister.page(prefix="<day>/", max_keys=1000)`` from a fresh
lister (cold: every container's names read once) and again (warm: names cached, each page one
storage listing of the day). The anchor is ``os.scandir`` of a folder holding the same 100k
names as empty files, sorted, cut in pages of 1000: what listing the same day costs where it was
a folder of files, on the same disk; both keep the bytes in the page cache, so the figures
compare the work done, not the disk.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from desq.container import ContainerWriter  # noqa: E402
from desq.layout import Layout, container_key, shard_of_name  # noqa: E402
from desq.s3.listing import Lister  # noqa: E402
from desq.storage.local import LocalStorage  # noqa: E402

DAY = "20251120"


def _spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def build_day(root: Path, layout: Layout, count: int) -> LocalStorage:
    """A day of ``count`` small members, each in its name-mode shard."""
    storage = LocalStorage(root)
    shards: dict[int, list[str]] = {}
    for i in range(count):
        name = f"{DAY}_{i}"
        shards.setdefault(shard_of_name(name, layout.shard_bits), []).append(name)
    for shard, names in shards.items():
        path = root / container_key(date(2025, 11, 20), shard, layout.shard_bits)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh, ContainerWriter(fh) as writer:
            for name in names:
                writer.add(name, b"x" * (len(name) % 7))
    return storage


def walk(lister: Lister) -> tuple[int, int, int]:
    """(keys, pages, storage requests) of listing the whole day in pages of 1000."""
    keys = pages = requests = 0
    after = ""
    while True:
        page = lister.page(prefix=f"{DAY}/", after=after, max_keys=1000)
        keys, pages, requests = keys + len(page.entries), pages + 1, requests + page.requests
        if not page.truncated:
            return keys, pages, requests
        after = page.next_after or ""


def scandir_pages(folder: Path) -> int:
    names = sorted((entry.name for entry in os.scandir(folder)), key=str.encode)
    return sum(len(names[i : i + 1000]) for i in range(0, len(names), 1000))


def listing_day(quick: bool, **_: Any) -> dict[str, Any]:
    """keys/s listing a whole day, cold and warm, against os.scandir of a folder of the same files."""
    count = 10_000 if quick else 100_000
    repeat = 3 if quick else 5
    layout = Layout(mode="name", shard_bits=8, queue_count=1, zone=ZoneInfo("UTC"))
    work = Path(tempfile.mkdtemp(prefix="desq-bench-list-"))
    try:
        storage = build_day(work / "archive", layout, count)
        folder = work / "folder"
        folder.mkdir()
        for i in range(count):
            (folder / f"{DAY}_{i}").touch()
        cold, warm, anchor = [], [], []
        for _ in range(repeat):
            lister = Lister(storage, layout)
            t = time.perf_counter()
            keys, pages, cold_requests = walk(lister)
            cold.append(keys / (time.perf_counter() - t))
            t = time.perf_counter()
            _, _, warm_requests = walk(lister)
            warm.append(keys / (time.perf_counter() - t))
            t = time.perf_counter()
            assert scandir_pages(folder) == keys == count
            anchor.append(keys / (time.perf_counter() - t))
        rate = {"cold": _spread(cold), "warm": _spread(warm), "scandir": _spread(anchor)}
        ratio = rate["warm"]["median"] / rate["scandir"]["median"]
        return {
            "figure": f"warm {rate['warm']['median']:,.0f} keys/s, cold {rate['cold']['median']:,.0f} keys/s",
            "anchor": f"os.scandir + sort of the same {count:,} files: {rate['scandir']['median']:,.0f} keys/s",
            "ratio": ratio, "goal": "reported (warm against scandir)",
            "details": {"files": count, "shards": len(list(storage.list(f"{DAY}/"))), "pages": pages, "keys_per_s": rate,
                        "storage_requests": {"cold_whole_day": cold_requests, "warm_whole_day": warm_requests}},
            "plot": {"unit": "keys/s", "bars": [{"label": "desq warm", **rate["warm"]}, {"label": "desq cold", **rate["cold"]}, {"label": "os.scandir + sort", **rate["scandir"]}]},
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    print(json.dumps(listing_day(parser.parse_args().quick), indent=2))
