"""What every container fuzz case is held to besides its oracle: bounded memory and bounded time.

``Guard`` arms a per-case alarm and traces Python allocations (tracemalloc) of every fifth case
(``FUZZ_TRACE_EVERY``; 1 traces all): a traced case whose peak allocation exceeds its budget
fails naming the case (so a reader that believes a claimed 2**60 length fails here, not on a
lucky ``MemoryError``), and a case that runs past its time bound raises ``Hang`` inside the code
under test, with the traceback showing where it looped.
"""

from __future__ import annotations

import os
import random
import signal
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

ALLOC_FACTOR = 6
"""Peak bytes a case may allocate per byte of its container (a read copies a member a few times)."""
ALLOC_SLACK = 1 << 20
CASE_SECONDS = 20.0
"""Generous: a case takes milliseconds; this only catches loops that never end."""
TRACE_EVERY = int(os.environ.get("FUZZ_TRACE_EVERY", "5"))
"""Every case has the alarm; every TRACE_EVERY-th also runs under tracemalloc (1: all of them)."""


class Hang(BaseException):
    """A fuzz case ran past its time bound (BaseException: no ``except Exception`` swallows it)."""


class OverBudget(AssertionError):
    """A traced case allocated more than its budget."""


def budget(container_bytes: int) -> int:
    """The most a case over a container of this size may allocate at its peak."""
    return ALLOC_FACTOR * container_bytes + ALLOC_SLACK


class Guard:
    """An alarm around every case and tracemalloc around every ``trace_every``-th (tracing costs ~10x)."""

    def __init__(self, seconds: float = CASE_SECONDS, trace_every: int = TRACE_EVERY) -> None:
        self.seconds = seconds
        self.trace_every = max(1, trace_every)
        self.traced = 0
        self.rechecked = 0
        self.peak = 0
        self.worst_ratio = 0.0
        """Largest peak / container size over containers of 64 KiB or more (smaller ones: constant overhead)."""
        self._old_handler: object = None

    def __enter__(self) -> Guard:
        assert not tracemalloc.is_tracing(), "a fuzz Guard needs tracemalloc to itself"
        self._old_handler = signal.signal(signal.SIGALRM, self._alarm)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self._old_handler)  # type: ignore[arg-type]
        if tracemalloc.is_tracing():
            tracemalloc.stop()

    def _alarm(self, _signum: int, _frame: FrameType | None) -> None:
        raise Hang(f"a fuzz case ran longer than {self.seconds:g} s")

    @contextmanager
    def case(self, case: int, container_bytes: int) -> Iterator[None]:
        """Run one case: fail it on a hang, and (traced cases) on a peak allocation over ``budget``."""
        traced = case % self.trace_every == 0
        if traced:
            tracemalloc.start()
        signal.setitimer(signal.ITIMER_REAL, self.seconds)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            peak = tracemalloc.get_traced_memory()[1] if traced else 0
            if traced:
                tracemalloc.stop()
        if not traced:
            return
        self.traced += 1
        self.peak = max(self.peak, peak)
        if container_bytes >= 64 << 10:
            self.worst_ratio = max(self.worst_ratio, peak / container_bytes)
        if peak > budget(container_bytes):
            raise OverBudget(f"case {case}: peak allocation {peak} bytes for a {container_bytes}-byte container (bound {budget(container_bytes)})")

    def run(self, body: Callable[[], None]) -> None:
        """``body`` (a whole case, opening ``self.case`` itself); run again if it went over budget,
        which fails only if it does so twice. The readers are deterministic, so a case over budget
        twice is the reader's doing; once only, a one-off growth of some interpreter-wide table that
        happened to land in the traced window (seen once in 200,000 cases)."""
        try:
            body()
        except OverBudget:
            self.rechecked += 1
            body()

    def summary(self) -> str:
        """One line on what the guard saw."""
        return (f"{self.traced} cases under tracemalloc ({self.rechecked} over budget once and run again): largest peak "
                f"allocation {self.peak / 2**20:.1f} MiB, at most {self.worst_ratio:.2f}x a container of 64 KiB or more")


INTERESTING = (0, 1, 2, 3, 4, 7, 8, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000, (1 << 31) - 1, 1 << 31, (1 << 32) - 1, 1 << 32,
               (1 << 48) - 1, 1 << 48, 1 << 60, (1 << 63) - 1, 1 << 63, (1 << 64) - 1)


def interesting_value(rng: random.Random, old: int, container_bytes: int) -> int:
    """A value a hostile or broken writer would put in an integer field."""
    pick = rng.randrange(5)
    if pick == 0:
        return rng.choice(INTERESTING)
    if pick == 1:
        return container_bytes + rng.randint(-80, 8)
    if pick == 2:
        return old + rng.randint(-16, 16)
    if pick == 3:
        return old * 2 if rng.random() < 0.5 else old // 2
    return rng.randrange(max(1, container_bytes))


def write_int(buf: bytearray, at: int, width: int, value: int) -> None:
    """Store ``value`` (wrapped to ``width`` bytes) little-endian at ``at``."""
    buf[at : at + width] = (value % (1 << (8 * width))).to_bytes(width, "little")


def blind_damage(buf: bytearray, kind: int, rng: random.Random) -> None:
    """Damage that knows nothing of the format, by ``kind`` 0-5: bit flips, a truncation, a splice
    of the container into itself, a cut, zeroed or random bytes, one byte near the end (where
    footer, index and names live)."""
    if kind == 0:
        for _ in range(rng.randint(1, 8)):
            at = rng.randrange(len(buf))
            buf[at] ^= 1 << rng.randrange(8)
    elif kind == 1:
        del buf[rng.randrange(len(buf)) :]
    elif kind == 2:
        a = rng.randrange(len(buf))
        b = min(len(buf), a + rng.randint(1, 256))
        at = rng.randrange(len(buf))
        buf[at:at] = buf[a:b]
    elif kind == 3:
        a = rng.randrange(len(buf))
        del buf[a : a + rng.randint(1, 64)]
    elif kind == 4:
        a = rng.randrange(len(buf))
        n = rng.randint(1, 64)
        buf[a : a + n] = rng.randbytes(n) if rng.random() < 0.5 else bytes(n)
    elif kind == 5:
        at = len(buf) - rng.randint(1, min(len(buf), 400))
        buf[at] = rng.randrange(256)
    else:
        raise ValueError(f"no blind damage of kind {kind}")
