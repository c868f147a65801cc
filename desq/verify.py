"""``desq verify``: every checksum of many containers, several at a time, in a stable order.

Containers are read by a bounded pool of threads (the work waits on storage, not on the CPU:
CRC32C runs without the GIL), each in reads of at most 8 MiB, so memory stays at about
``jobs`` x 8 MiB plus the open indexes. Results come back in the order of the targets, whichever
finishes first, so the output of ``--jobs 8`` is the output of ``--jobs 1``.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from datetime import datetime, timezone
from pathlib import Path

from desq.archive import Archive
from desq.container import ContainerError, Problem, Reader
from desq.errors import DesqError
from desq.leftovers import SAFE_AGE, Leftover, find, human, safe_age
from desq.storage import InvalidKey, NotFound, Storage, StorageError, check_key, join_key
from desq.storage.ec import ECStorage, ec_of
from desq.storage.ec_repair import check_many
from desq.storage.ec_repair import targets as ec_targets
from desq.storage.local import LocalStorage

DEFAULT_JOBS = min(8, 2 * (os.cpu_count() or 1))
"""Containers verified at once by default: reads wait on disk or S3, so more than the cores."""


class Targets:
    """Where ``desq`` finds a container it is given: a local file, or a key under the archive.

    The archive's storage is built once, on first need, and shared (safely) by threads.
    """

    def __init__(self, archive: Callable[[], Storage]) -> None:
        self._make = archive
        self._storage: Storage | None = None
        self._lock = threading.Lock()

    def archive(self) -> Storage:
        """The archive's storage."""
        with self._lock:
            if self._storage is None:
                self._storage = self._make()
            return self._storage

    def locate(self, target: str) -> tuple[Storage, str]:
        """The storage and key of ``target``; DesqError when it can be neither."""
        path = Path(target)
        if path.is_file():
            return LocalStorage(path.parent), path.name
        try:
            return self.archive(), check_key(target)
        except InvalidKey:
            raise DesqError(f"no container at {target!r}: not a file, nor a key under the archive") from None

    def open(self, target: str) -> tuple[Reader, Storage, str]:
        """The reader of ``target``, with its storage and key."""
        storage, key = self.locate(target)
        try:
            return Archive(storage, cache_bytes=0).open(key), storage, key
        except NotFound:
            raise DesqError(f"no container at {target!r} (not a file, nor under {storage.url})") from None


@dataclass(frozen=True)
class Checked:
    """One container verified."""

    target: str
    problems: list[Problem]
    members: int = 0
    bytes: int = 0
    """The bytes of its members (big files too), all read and checked."""
    version: int = 2
    externals: frozenset[str] | None = None
    """Storage keys of the big files its index references; None when it could not be read."""

    def lines(self) -> list[str]:
        """What ``desq verify`` prints for it: one ``BAD`` line a problem, or one ``ok`` line."""
        if self.problems:
            return [f"BAD {self.target}: {p}" for p in self.problems]
        return [f"ok  {self.target}: {self.members} members"]


def check(targets: Targets, target: str) -> Checked:
    """Verify one container; a failure to open or read it is a problem of it, never an exception."""
    try:
        reader, _, key = targets.open(target)
        problems = reader.verify()
        members = list(reader.members())
        externals = frozenset(join_key(key, reader.meta(m.name).external_key or "") for m in members if m.external)
        return Checked(target, problems, len(members), sum(m.size for m in members), reader.version, None if problems else externals)
    except (ContainerError, StorageError, DesqError) as exc:
        return Checked(target, [Problem(None, str(exc))])
    except Exception as exc:  # noqa: BLE001 - one unreadable container is reported; the others go on
        return Checked(target, [Problem(None, f"{type(exc).__name__}: {exc}")])


def check_all(targets: Sequence[str], one: Callable[[str], Checked], jobs: int = DEFAULT_JOBS) -> Iterator[Checked]:
    """``one(target)`` for every target, ``jobs`` at a time, yielded in the order of ``targets``.

    At most ``2 * jobs`` containers are in flight or waiting to be yielded.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, not {jobs}")
    pending: Iterator[str] = iter(targets)
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="verify") as pool:
        window: deque[Future[Checked]] = deque(pool.submit(one, t) for t in islice(pending, 2 * jobs))
        while window:
            result = window.popleft().result()
            window.extend(pool.submit(one, t) for t in islice(pending, 1))
            yield result


@dataclass
class Tally:
    """What a verify run adds up to, for its summary line."""

    containers: int = 0
    members: int = 0
    bytes: int = 0
    bad: int = 0
    started: float = 0.0
    coded: int | None = None
    """Erasure-coded archive: objects whose fragments were checked (None: not coded)."""
    fragments_bad: int = 0
    """Missing or damaged fragments and commit markers found."""

    def add(self, checked: Checked) -> None:
        self.containers += 1
        self.members += checked.members
        self.bytes += checked.bytes
        self.bad += bool(checked.problems)

    def summary(self, now: float | None = None) -> str:
        """``verified 16 container(s), 32,712 members, 1,073.7 MB in 2.9 s (370.2 MB/s); 0 bad``"""
        seconds = max((time.monotonic() if now is None else now) - self.started, 1e-9)
        mb = self.bytes / 1e6
        coded = "" if self.coded is None else f"; fragments of {self.coded} object(s) checked, {self.fragments_bad} missing or damaged"
        return f"verified {self.containers} container(s), {self.members:,} members, {mb:,.1f} MB in {seconds:.1f} s ({mb / seconds:,.1f} MB/s); {self.bad} bad{coded}"


Progress = Callable[[Sequence[str], str], Iterator[str]]


class VerifyRun:
    """``desq verify``: the containers named, with ``everything`` all under the archive and the
    leftovers beside them; ``run`` yields the output lines, ``tally`` and ``leftovers`` are after."""

    def __init__(self, targets: Targets, containers: Sequence[str], everything: bool, jobs: int = DEFAULT_JOBS) -> None:
        self.targets = targets
        self.containers = list(containers)
        self.everything = everything
        self.jobs = jobs
        self.tally = Tally()
        self.leftovers: list[Leftover] = []
        self.young = SAFE_AGE

    def run(self, show: Progress, lease_seconds: float) -> Iterator[str]:
        """``ok``/``BAD`` lines in the order of the targets, then one ``leftover`` line each."""
        names, objects = list(self.containers), []
        if self.everything:
            objects = list(self.targets.archive().list())
            names += [o.key for o in objects if o.key.endswith(".des")]
        self.tally = Tally(started=time.monotonic())
        refs: dict[str, frozenset[str] | None] = {}
        for _, checked in zip(show(names, "verify"), check_all(names, lambda t: check(self.targets, t), self.jobs)):
            self.tally.add(checked)
            refs[checked.target] = checked.externals
            yield from checked.lines()
        coded = ec_of(self.targets.archive()) if self.everything or any(not Path(c).is_file() for c in self.containers) else None
        if coded is not None:
            yield from self._fragments(coded)
        if self.everything:
            self.young = safe_age(lease_seconds)
            self.leftovers = find(objects, self.targets.archive().uploads(), refs)
            now = datetime.now(timezone.utc)
            yield from (leftover.line(now, self.young) for leftover in self.leftovers)

    def _fragments(self, ec: ECStorage) -> Iterator[str]:
        """A ``BAD`` line for each missing or damaged fragment of the objects verified."""
        keys = [] if self.everything else ec_targets(ec, [c for c in self.containers if not Path(c).is_file()])
        self.tally.coded = 0
        for _, problems in check_many(ec, keys, self.jobs):
            self.tally.coded += 1
            self.tally.fragments_bad += len(problems)
            yield from (problem.line() for problem in problems)

    def leftover_note(self) -> str:
        """The warning after the leftover lines."""
        size = sum(f.size or 0 for f in self.leftovers)
        return (
            f"{len(self.leftovers)} leftover(s), {size:,} bytes, that no container needs (garbage, not damage); "
            f"`desq recover` removes those older than {human(self.young)} that no packer is writing"
        )
