"""The ordered, memory-bounded read-ahead that ``Fetcher.fetch`` runs its rows through.

Items are fetched on a bounded thread pool and yielded in their own order, so what a consumer
sees never depends on timing. Memory is bounded: before reading a body, a worker reserves its size
out of the run's budget and the reservation is given back when the consumer asks for the next
item. Reservations are granted in item order, so the item the consumer waits for can always be
reserved (no deadlock), and one item larger than the whole budget is fetched alone.

Cheap items (local files in the page cache) are fetched in the consumer's own thread while
``Pace`` finds them fast: handing a 4 KiB read to a pool costs more than the read. A read that took
long without ever blocking (this thread was only waiting for a CPU, as when packers fill every core)
counts as fast: on the pool it would wait for the same CPU, plus the hand-off.
"""

from __future__ import annotations

import resource
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

from desq.source.original import FetchError

T = TypeVar("T")
R = TypeVar("R")

_END: Any = object()
_RUSAGE_THREAD = getattr(resource, "RUSAGE_THREAD", None)


def _voluntary_switches() -> int:
    """This thread's voluntary context switches so far (it blocked: on I/O, a lock); -1 if unknown."""
    return resource.getrusage(_RUSAGE_THREAD).ru_nvcsw if _RUSAGE_THREAD is not None else -1


class Cancelled(Exception):
    """The run was stopped while a worker waited for its reservation."""


class Pace:
    """Chooses where cheap items are fetched: inline while they are fast, else on the pool."""

    def __init__(self, *, slow: float, probe_every: int, probe_rows: int) -> None:
        self.slow = slow  # seconds an inline fetch may take on average
        self.probe_every = probe_every  # pooled items after which inline fetches are timed again
        self.probe_rows = probe_rows
        self.cost = 0.0  # moving average of an inline fetch, in seconds
        self.pooled = 0  # items handed to the pool since the last inline fetch
        self.probing = 0  # inline fetches still to do before the average decides again

    def probe_due(self) -> bool:
        """True when the pool has had ``probe_every`` cheap items: drain it, then ``start_probe``."""
        return self.pooled >= self.probe_every

    def start_probe(self) -> None:
        """Time the next ``probe_rows`` cheap items inline, whatever the average says."""
        self.pooled, self.probing = 0, self.probe_rows

    def inline(self) -> bool:
        """Whether the next cheap item is fetched in the consumer's thread."""
        return self.probing > 0 or self.cost < self.slow

    def note_inline(self, seconds: float, *, blocked: bool = True) -> None:
        """Count an inline fetch that took ``seconds`` (``blocked``: it waited for I/O, else only for a CPU)."""
        self.probing = max(0, self.probing - 1)
        seconds = min(seconds, 4 * self.slow) if blocked else 0.0  # one stall (a page fault, a GC pass) is not a slow disk
        self.cost = 0.9 * self.cost + 0.1 * seconds  # from 0: the first read of a run pays for cold dentries

    def note_pooled(self) -> None:
        """Count a cheap item handed to the pool."""
        self.pooled += 1


class Run:
    """One read-ahead: its pool and its in-flight budget, reserved strictly in item order."""

    def __init__(self, limit: int, note_peak: Callable[[int], None]) -> None:
        self.limit = limit
        self.note_peak = note_peak
        self.cond = threading.Condition()
        self.turn = 0  # the item whose reservation comes next
        self.passed: set[int] = set()  # later items that need no reservation
        self.in_flight = 0
        self.cancelled = False
        self.futures: list[Future[Any]] = []
        """What this run handed to the pool (the pool outlives the run)."""

    def _advance(self) -> None:
        while self.turn in self.passed:
            self.passed.discard(self.turn)
            self.turn += 1
        self.cond.notify_all()

    def reserve(self, index: int, size: int) -> None:
        """Wait for item ``index``'s turn and room for ``size`` bytes (or an empty budget), then take them."""
        with self.cond:
            while True:
                if self.cancelled:
                    raise Cancelled
                if self.turn == index and (self.in_flight == 0 or self.in_flight + size <= self.limit):
                    break
                self.cond.wait()
            self.in_flight += size
            self.turn += 1
            self.note_peak(self.in_flight)
            self._advance()

    def skip(self, index: int) -> None:
        """Item ``index`` reserves nothing (a failure, a big original); no-op once it reserved."""
        with self.cond:
            if index >= self.turn:
                self.passed.add(index)
                self._advance()

    def release(self, size: int) -> None:
        """Give back ``size`` reserved bytes."""
        if size:
            with self.cond:
                self.in_flight -= size
                self.cond.notify_all()

    def cancel(self) -> None:
        """Make waiting and future reservations raise Cancelled."""
        with self.cond:
            self.cancelled = True
            self.cond.notify_all()

    def stop(self) -> None:
        """Cancel, drop this run's work not started and wait for the work already started."""
        self.cancel()
        for future in self.futures:
            future.cancel()
        wait(self.futures)
        self.futures = []


def read_ahead(
    items: Iterator[T],
    fetch: Callable[[Run, int, T], tuple[R, int]],
    *,
    run: Run,
    pool: Callable[[], ThreadPoolExecutor],
    window: int,
    pace: Pace,
    cheap: Callable[[T], bool],
    on_inline: Callable[[], None],
) -> Iterator[R]:
    """``fetch(run, index, item)`` of every item, in item order, at most ``window`` items ahead.

    ``fetch`` returns its result and the bytes it reserved, released once the consumer moves on;
    it must call ``run.skip(index)`` whatever happens. ``pool()`` gives the thread pool, asked for
    only when an item is not fetched inline, and kept by the caller from run to run (starting a
    thread costs about a millisecond here). Closing the iterator stops the run.
    """
    pending: deque[Future[tuple[R, int]]] = deque()
    index = 0
    more = True
    try:
        while True:
            while more and len(pending) < window:
                if pace.probe_due():
                    if pending:
                        break
                    pace.start_probe()
                item = next(items, _END)
                if item is _END:
                    more = False
                    break
                if run.cancelled:
                    raise FetchError("the fetcher was closed while fetching")
                is_cheap = cheap(item)
                if is_cheap and not pending and pace.inline():
                    switches, started = _voluntary_switches(), time.perf_counter()
                    result, reserved = fetch(run, index, item)
                    pace.note_inline(time.perf_counter() - started, blocked=switches < 0 or _voluntary_switches() > switches)
                    on_inline()
                    index += 1
                    yield result
                    run.release(reserved)
                    continue
                if is_cheap:
                    pace.note_pooled()
                try:
                    future = pool().submit(fetch, run, index, item)
                    run.futures.append(future)
                    pending.append(future)
                except RuntimeError:  # the pool was shut down by the run's stop()
                    raise FetchError("the fetcher was closed while fetching") from None
                index += 1
            if not pending:
                return
            try:
                result, reserved = pending.popleft().result()
            except (CancelledError, Cancelled):
                raise FetchError("the fetcher was closed while fetching") from None
            yield result
            run.release(reserved)
    finally:
        run.stop()
