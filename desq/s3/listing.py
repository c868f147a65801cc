"""The archive's containers as S3 keys ``<YYYYMMDD>/<name>``, paged (ListObjects v1 and v2).

A day's keys are the names stored in that day's containers (their NAMES region, never the source
database), merged across its shards by ``desq.s3.paging``. Only keys ``<YYYYMMDD>/<SHARD>.des``
of the layout's shard width are containers: big-file objects beside them, staging objects and
``_desq/`` documents never become keys.

Storage requests of one page (``Page.requests``), for a day of S shards:

- the day's containers are listed once per page that needs that day's names (a list request
  per 1,000 objects), so a replaced container is seen by its new ETag;
- cold, each container costs one suffix read (its NAMES and INDEX are in the last 64 KiB up to
  about 1,500 members), up to three for bigger ones; S reads for the first page of a day;
- warm, the names are cached by (container key, ETag): a page costs the listing of each day it
  reads, or none when its every entry is a common prefix of whole days (``delimiter=/`` at the
  top), which needs only which days exist: for every prefix shorter than a day that is one list
  of the archive's top-level folders (``Storage.folders``: a request per 1,000 days), read again
  every ``days_ttl`` seconds (days appear once a night). A day folder that holds no container
  yet (the staging object of its first pack) is listed as a common prefix with no key under it.

``last_modified`` of a listed key is the start of its day in the layout's timezone: the exact
``created_at`` is in each member's frame head, which a listing would have to read member by
member; the container's own time changes whenever a late file repacks its shard, which would make
sync tools fetch every file of it again. The day's start is free, stable and never later than the
file's ``created_at`` (GetObject and HeadObject give the exact one).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timezone
from itertools import islice, takewhile

from desq.archive import StorageSource
from desq.container import ContainerError, open_container
from desq.errors import DesqError
from desq.layout import Layout, LayoutError, parse_shard_hex, parse_yyyymmdd, shard_width
from desq.s3.paging import DAY, MAX_KEYS, DayShards, Entry, Page, Shard, check_args, paginate
from desq.storage import NotFound, ObjectInfo, StaleObject, Storage
from desq.storage.counting import CountingStorage

__all__ = ["Entry", "Lister", "ListingError", "Page"]

log = logging.getLogger(__name__)

LOAD_THREADS = 16
"""Containers of one day whose names are read at the same time (cold pages)."""
_DAY_KEY = re.compile(r"[0-9]{8}/")
_DAY_START = re.compile(r"[0-9]{0,8}")
"""What a prefix shorter than ``YYYYMMDD/`` must be for any key to match it."""


class ListingError(DesqError):
    """A container the page needs cannot be listed (its names or index fail their checks).

    The page is refused whole (S3's 500 InternalError), never served without that container's
    keys: a sync tool given a short listing would delete its copies of files still archived.
    """

    def __init__(self, container: str, reason: str) -> None:
        super().__init__(f"container {container} cannot be listed: {reason}")
        self.container = container


class _NamesCache:
    """Sorted names of containers, by (key, ETag), in a least-recently-used bound of bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used = 0
        self._items: OrderedDict[str, tuple[str, Shard, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str, etag: str) -> Shard | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is None or hit[0] != etag:
                return None
            self._items.move_to_end(key)
            return hit[1]

    def put(self, key: str, etag: str, shard: Shard) -> None:
        cost = 200 + sum(len(n) + 100 for n in shard.names)  # str, int and two list slots a name
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.used -= old[2]
            if cost > self.max_bytes:
                return
            self._items[key] = (etag, shard, cost)
            self.used += cost
            while self.used > self.max_bytes:
                self.used -= self._items.popitem(last=False)[1][2]


class Lister:
    """Pages of the archive's keys for the S3 API; safe to share between threads.

    ``on_request(op)`` is called before each storage request (for a metric); each page also
    says how many it made (``Page.requests``).
    """

    def __init__(
        self,
        storage: Storage,
        layout: Layout,
        *,
        cache_bytes: int = 64 << 20,
        days_ttl: float = 30.0,
        on_request: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.storage = storage
        self.layout = layout
        self.days_ttl = days_ttl
        self._on_request = on_request
        self._clock = clock
        self._container = re.compile(rf"([0-9]{{8}})/([0-9A-F]{{{shard_width(layout.shard_bits)}}})\.des")
        self._names = _NamesCache(cache_bytes)
        self._days: tuple[float, list[str]] | None = None
        """When every day was last read, and the days (sorted)."""
        self._lock = threading.Lock()

    def page(self, prefix: str = "", delimiter: str | None = None, after: str = "", max_keys: int = MAX_KEYS) -> Page:
        """The first ``max_keys`` entries after ``after`` (see ``desq.s3.paging``)."""
        check_args(prefix, delimiter, after, max_keys)
        if max_keys == 0 or not (_DAY_KEY.match(prefix) if len(prefix) >= DAY else _DAY_START.fullmatch(prefix)):
            return Page([], [], False, None)  # no key can match: read nothing
        counted = 0
        lock = threading.Lock()

        def note(op: str) -> None:
            nonlocal counted
            with lock:
                counted += 1
            if self._on_request is not None:
                self._on_request(op)

        storage = CountingStorage(self.storage, note)
        page = paginate(self._day_sources(storage, prefix), prefix=prefix, delimiter=delimiter, after=after, max_keys=max_keys, modified=self._day_start)
        return replace(page, requests=counted)

    def cached_bytes(self) -> int:
        """Memory the cached names hold (about)."""
        return self._names.used

    # --- days and their containers -------------------------------------------------------

    def _containers(self, infos: Iterator[ObjectInfo]) -> dict[str, list[ObjectInfo]]:
        """The container objects among ``infos``, by day (in key order)."""
        days: dict[str, list[ObjectInfo]] = {}
        for info in infos:
            match = self._container.fullmatch(info.key)
            if match is None:
                continue
            try:
                parse_yyyymmdd(match.group(1))
                parse_shard_hex(match.group(2), self.layout.shard_bits)
            except LayoutError:
                continue
            days.setdefault(match.group(1), []).append(info)
        return days

    def _day_sources(self, storage: Storage, prefix: str) -> Iterator[tuple[str, DayShards]]:
        """Each day under ``prefix``, ascending, with a loader of its shards."""
        if len(prefix) >= DAY:
            found = self._containers(storage.list(prefix[:DAY]))
            for day, infos in found.items():
                yield day, lambda infos=infos: self._shards(storage, infos)
            return
        for day in self._day_list(storage, prefix):
            yield day, lambda day=day: self._shards(storage, self._containers(storage.list(day + "/")).get(day, []))

    def _day_list(self, storage: Storage, prefix: str) -> list[str]:
        """The days under a prefix shorter than a day, from the one list of every day (its
        top-level folders, read again every ``days_ttl`` seconds); each day's containers are
        listed when its keys are needed."""
        with self._lock:  # one reading at a time: threads arriving meanwhile use it
            now = self._clock()
            if self._days is None or now - self._days[0] >= self.days_ttl:
                self._days = (now, sorted(day for day in storage.folders("") if _is_day(day)))
            days = self._days[1]
        at = bisect_left(days, prefix)
        return list(takewhile(lambda day: day.startswith(prefix), islice(days, at, None)))

    def _shards(self, storage: Storage, infos: Sequence[ObjectInfo]) -> list[Shard]:
        shards: list[Shard | None] = [self._names.get(info.key, info.etag) for info in infos]
        missing = [i for i, shard in enumerate(shards) if shard is None]
        if len(missing) > 1:
            with ThreadPoolExecutor(min(LOAD_THREADS, len(missing))) as pool:
                loaded = list(pool.map(lambda i: self._load(storage, infos[i]), missing))
        else:
            loaded = [self._load(storage, infos[i]) for i in missing]
        for i, shard in zip(missing, loaded):
            shards[i] = shard
        return [s for s in shards if s is not None]

    def _load(self, storage: Storage, info: ObjectInfo) -> Shard | None:
        """A container's names, sorted; None if it was removed since the listing."""
        source = StorageSource(storage, info.key, info.etag)
        try:
            try:
                members = list(open_container(source).members())
            except StaleObject:  # replaced since the listing: read the version there now
                source = StorageSource(storage, info.key)
                members = list(open_container(source).members())
        except NotFound:
            return None
        except ContainerError as exc:
            log.error("listing %s: %s", info.key, exc)
            raise ListingError(info.key, str(exc)) from None
        pairs = sorted((m.name, m.size) for m in members)
        shard = Shard([name for name, _ in pairs], [size for _, size in pairs])
        self._names.put(info.key, source.etag or info.etag, shard)
        return shard

    def _day_start(self, day: str) -> datetime:
        start = parse_yyyymmdd(day)
        return datetime(start.year, start.month, start.day, tzinfo=self.layout.zone).astimezone(timezone.utc)


def _is_day(folder: str) -> bool:
    """Whether a top-level folder is named for a day (8 digits, a real date)."""
    try:
        parse_yyyymmdd(folder)
    except LayoutError:
        return False
    return True
