"""Which files are already in their containers: the cheap check that keeps a night from rewriting
a container it has nothing to add to, and that tells the cutoff controller a day is complete.

A day's containers are found with one listing of its folder; a container's names come from its
index (one or two storage requests), never from reading members.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

from desq.archive import Archive
from desq.container import ContainerError
from desq.errors import DesqError
from desq.layout import container_key, yyyymmdd
from desq.storage import NotFound


class Unreadable(DesqError):
    """A container exists but its index cannot be read."""


class Presence:
    """Looks up the member names of a deployment's containers, listing each day's folder once."""

    def __init__(self, archive: Archive, shard_bits: int) -> None:
        self.archive = archive
        self.bits = shard_bits
        self._days: dict[date, set[str]] = {}
        self.requests = 0
        """Storage requests made so far (listings and index reads), for reports and tests."""

    def exists(self, day: date, shard: int) -> bool:
        """Whether the container of (day, shard) exists."""
        keys = self._days.get(day)
        if keys is None:
            prefix = f"{yyyymmdd(day)}/"
            keys = {info.key for info in self.archive.storage.list(prefix) if info.key.endswith(".des")}
            self._days[day] = keys
            self.requests += 1
        return container_key(day, shard, self.bits) in keys

    def names(self, day: date, shard: int) -> set[str]:
        """The names in the container of (day, shard); empty when it does not exist."""
        if not self.exists(day, shard):
            return set()
        key = container_key(day, shard, self.bits)
        self.requests += 1
        try:
            return {m.name for m in self.archive.open(key).members()}
        except NotFound:
            return set()
        except ContainerError as exc:
            raise Unreadable(f"{key} cannot be read: {exc}") from None

    def missing(self, day: date, shard: int, names: Iterable[str]) -> list[str]:
        """Those of ``names`` that the container of (day, shard) lacks, in the order given."""
        wanted = list(names)
        if not wanted:
            return []
        present = self.names(day, shard)
        return [n for n in wanted if n not in present]
