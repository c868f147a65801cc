"""Progress for long commands: a bar on a terminal, plain lines otherwise (CONTRACT section 5)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from typing import TextIO, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(items: Sequence[T], desc: str, *, stream: TextIO | None = None, every: float = 5.0) -> Iterator[T]:
    """Yield ``items``, showing progress on ``stream`` (default stderr).

    On a terminal: a tqdm bar. Otherwise: a line ``desc: done/total`` at most every ``every``
    seconds and one at the end, so logs stay readable.
    """
    stream = stream or sys.stderr
    if stream.isatty():
        yield from tqdm(items, desc=desc, file=stream, leave=False)
        return
    total, last = len(items), time.monotonic()
    for done, item in enumerate(items, 1):
        yield item
        now = time.monotonic()
        if now - last >= every or done == total:
            print(f"{desc}: {done}/{total}", file=stream, flush=True)
            last = now
