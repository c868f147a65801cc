"""What a test itself leaves running: threads and file descriptors opened since a snapshot.

Counting all threads is not enough: earlier tests' idle pool threads end whenever their executors
are garbage-collected, so a count can fall during a test that leaks nothing.
"""

from __future__ import annotations

import os
import threading


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


class Snapshot:
    """The threads and descriptors alive when it is taken."""

    def __init__(self) -> None:
        self.threads = set(threading.enumerate())
        self.fds = _fds()

    def new_threads(self) -> list[str]:
        """Names of the threads alive now that were not at the snapshot."""
        return sorted(t.name for t in threading.enumerate() if t not in self.threads)

    def new_fds(self) -> list[str]:
        """Descriptors open now that were not at the snapshot (a reused number is not seen)."""
        return sorted(_fds() - self.fds)
