"""Pack and read back one big member, reporting peak RSS: the bounded-memory claim, measured.

    python bench/bigfile.py --url s3://bucket/prefix --endpoint http://127.0.0.1:5055 [--gib 2]

The member is a generated stream (never held whole): uploaded beside its container with
``store_external``, indexed by a container, then read back through ``Archive.iter_range`` (every
block checked) and compared by SHA-256. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import random
import resource
import sys
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from desq.archive import Archive, store_external  # noqa: E402
from desq.container import ContainerWriter  # noqa: E402
from desq.storage import open_storage  # noqa: E402

CHUNK = 1 << 20


def generated(size: int, digest: "hashlib._Hash") -> Iterator[bytes]:
    rng = random.Random(2026)
    left = size
    while left:
        chunk = rng.randbytes(min(CHUNK, left))
        digest.update(chunk)
        left -= len(chunk)
        yield chunk


def peak_rss_kib() -> int:
    """This process's own peak RSS. Not ru_maxrss: Linux carries that across execve, so a child of a
    big process (a test run) would report its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--endpoint", default="")
    parser.add_argument("--gib", type=float, default=2.0)
    args = parser.parse_args()
    size = int(args.gib * (1 << 30))
    storage = open_storage(args.url, s3_endpoint_url=args.endpoint)
    key = "20251120/FE.des"

    written = hashlib.sha256()
    t0 = time.perf_counter()
    ref = store_external(storage, key, "20251120_big", generated(size, written), size, content_type="application/octet-stream")
    out = io.BytesIO()
    with ContainerWriter(out) as w:
        w.add("20251120_small", b"small")
        w.add_external("20251120_big", size=ref.size, checksum=ref.checksum, block_checksums=ref.block_checksums, external_key=ref.external_key)
    storage.put(key, out.getvalue())
    packed = time.perf_counter() - t0

    read = hashlib.sha256()
    t0 = time.perf_counter()
    archive = Archive(storage)
    got = 0
    for chunk in archive.iter_range(key, "20251120_big", chunk_size=8 << 20):
        read.update(chunk)
        got += len(chunk)
    served = time.perf_counter() - t0
    ranged = b"".join(archive.iter_range(key, "20251120_big", size // 2, size // 2 + 100))
    peak_kib = peak_rss_kib()
    print(json.dumps({
        "bytes": size,
        "same_bytes": got == size and read.digest() == written.digest(),
        "ranged_read_bytes": len(ranged),
        "pack_MB_per_s": round(size / packed / 1e6, 1),
        "serve_MB_per_s": round(size / served / 1e6, 1),
        "peak_rss_MiB": round(peak_kib / 1024, 1),
    }))


if __name__ == "__main__":
    main()
