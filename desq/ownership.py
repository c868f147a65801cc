"""Which files-API backend owns which shard (pure: no I/O).

Consistent hashing with virtual nodes: each backend puts ``vnodes`` points on a 64-bit ring, a
shard belongs to the first point clockwise from its own hash, and its next choices are the next
distinct backends clockwise. Adding or removing one of N backends moves about 1/N of the shards,
so index caches stay hot. An operator may pin ranges instead with a static table.
"""

from __future__ import annotations

import hashlib
import math
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Mapping

from desq.layout import queue_ranges, shard_count

VNODES = 150


def _point(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def shard_point(shard: int, bits: int) -> int:
    """Where a shard sits on the ring: evenly spaced, so that every backend's share of shards is its
    share of the ring (hashing 256 shards to random points would add binomial noise of ~3%)."""
    return (shard << (64 - bits)) + (1 << (63 - bits))


class Ring:
    """Backends on a consistent-hash ring, with bounded loads.

    A shard's owner is the first backend clockwise from it that owns fewer than
    ``ceil((1 + slack) * shards / backends)`` shards (consistent hashing with bounded loads): each
    backend's share stays within ``slack`` of the average, and adding one of N backends still moves
    about 1/N of the shards (with 256 shards, plain hashing would add ~3% of binomial noise).
    """

    def __init__(self, backends: Iterable[str], vnodes: int = VNODES, slack: float = 0.05) -> None:
        self.backends = sorted(set(backends))
        self.vnodes = vnodes
        self.slack = slack
        points = sorted((_point(f"{backend}#{i}"), backend) for backend in self.backends for i in range(vnodes))
        self._keys = [p for p, _ in points]
        self._owners = [b for _, b in points]
        self._assigned: dict[int, dict[int, str]] = {}

    def _clockwise(self, shard: int, bits: int) -> Iterator[str]:
        """Distinct backends in ring order from the shard's point."""
        start = bisect_right(self._keys, shard_point(shard, bits))
        seen: set[str] = set()
        for i in range(len(self._keys)):
            backend = self._owners[(start + i) % len(self._keys)]
            if backend not in seen:
                seen.add(backend)
                yield backend
                if len(seen) == len(self.backends):
                    return

    def assignment(self, bits: int) -> dict[int, str]:
        """Every shard's owner (computed once per shard width)."""
        if bits not in self._assigned:
            shards = shard_count(bits)
            cap = math.ceil((1 + self.slack) * shards / max(1, len(self.backends)))
            load = dict.fromkeys(self.backends, 0)
            owners: dict[int, str] = {}
            for shard in range(shards):
                for backend in self._clockwise(shard, bits):
                    if load[backend] < cap:
                        owners[shard] = backend
                        load[backend] += 1
                        break
            self._assigned[bits] = owners
        return self._assigned[bits]

    def choices(self, shard: int, bits: int, count: int = 2) -> list[str]:
        """The first ``count`` distinct backends for ``shard``: its owner, then its failovers clockwise."""
        if not self._keys:
            return []
        owner = self.assignment(bits)[shard]
        rest = [b for b in self._clockwise(shard, bits) if b != owner]
        return [owner, *rest][:count]

    def owner(self, shard: int, bits: int) -> str | None:
        choices = self.choices(shard, bits, 1)
        return choices[0] if choices else None


def moved(before: Ring, after: Ring, bits: int) -> float:
    """The share of shards whose owner differs between two rings."""
    a, b = before.assignment(bits), after.assignment(bits)
    return sum(a[s] != b[s] for s in a) / len(a)


class StaticTable:
    """Explicit ranges: ``{"shards-00-3f": "http://a", ...}``; every queue's range must be given."""

    def __init__(self, table: Mapping[str, str], bits: int, queue_count: int) -> None:
        from desq.layout import queue_name

        self._by_shard: dict[int, str] = {}
        for lo, hi in queue_ranges(bits, queue_count):
            name = queue_name(lo, hi, bits)
            if name not in table:
                raise ValueError(f"the static route table has no backend for {name}")
            for shard in range(lo, hi + 1):
                self._by_shard[shard] = table[name]
        self.backends = sorted(set(table.values()))

    def choices(self, shard: int, bits: int, count: int = 2) -> list[str]:
        owner = self._by_shard[shard]
        return [owner] + [b for b in self.backends if b != owner][: count - 1]
