"""Pure paging of S3 keys ``<YYYYMMDD>/<name>`` over days of sorted shards (no I/O).

The rule every page follows, whatever the prefix, delimiter and position: take the keys that
start with ``prefix``; with a delimiter, roll each key that holds it (after the prefix) up to its
common prefix, through the first delimiter; of these entries (keys and common prefixes, in UTF-8
byte order, each once) list the first ``max_keys`` that sort strictly after ``after``. So a page
ending on a common prefix resumes after every key under it, and a ``start-after`` inside a
"folder" does not list that folder again (the folder sorts before it). Since the listed entries
only grow, ``after`` may be the larger of a start-after and a continuation position.

Python compares ``str`` by code point, which is UTF-8 byte order for every string without lone
surrogates; the arguments are checked to be valid UTF-8, and names read from containers are.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

MAX_KEYS = 1000
MAX_ARG_BYTES = 1024
"""S3 keys are at most 1,024 bytes, so no useful prefix, delimiter or position is longer."""
DAY = 9
"""Characters of ``YYYYMMDD/`` that start every key."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One key of a listing."""

    key: str
    size: int
    last_modified: datetime


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing; ``next_after`` (the last entry) resumes it when ``truncated``."""

    entries: list[Entry]
    common_prefixes: list[str]
    truncated: bool
    next_after: str | None
    requests: int = 0
    """Storage requests this page made."""


@dataclass(frozen=True, slots=True)
class Shard:
    """One container's members, sorted by name: parallel lists of names and sizes."""

    names: list[str]
    sizes: list[int] = field(repr=False)


DayShards = Callable[[], Sequence[Shard]]
"""A day's shards, loaded only when the page needs that day's names."""


def check_args(prefix: str, delimiter: str | None, after: str, max_keys: int) -> None:
    """ValueError for arguments no listing can take (the caller clamps or refuses first)."""
    if isinstance(max_keys, bool) or not isinstance(max_keys, int) or not 0 <= max_keys <= MAX_KEYS:
        raise ValueError(f"max_keys must be an integer in 0..{MAX_KEYS}, got {max_keys!r}")
    for what, value in (("prefix", prefix), ("delimiter", delimiter), ("after", after)):
        if value is None and what == "delimiter":
            continue
        if not isinstance(value, str):
            raise ValueError(f"{what} must be a string, got {type(value).__name__}")
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:
            raise ValueError(f"{what} is not valid UTF-8 text") from None
        if size > MAX_ARG_BYTES:
            raise ValueError(f"{what} is {size} bytes long; at most {MAX_ARG_BYTES} are allowed")


def successor(prefix: str) -> str | None:
    """The least string above every string starting with ``prefix``; None if there is none."""
    stem = prefix.rstrip("\U0010ffff")
    return stem[:-1] + chr(ord(stem[-1]) + 1) if stem else None


def day_matches(day_key: str, prefix: str) -> bool:
    """Whether keys under ``day_key`` (``YYYYMMDD/``) can start with ``prefix``."""
    return day_key.startswith(prefix) if len(prefix) <= DAY else prefix.startswith(day_key)


def _tail(shard: Shard, at: int) -> Iterator[tuple[str, int]]:
    names, sizes = shard.names, shard.sizes
    for i in range(at, len(names)):
        yield names[i], sizes[i]


def merged(shards: Sequence[Shard], start: str, inclusive: bool) -> Iterator[tuple[str, int]]:
    """Every (name, size) from ``start`` on across ``shards``, in order, each name once."""
    cut = bisect_left if inclusive else bisect_right
    last = None
    for name, size in heapq.merge(*(_tail(s, cut(s.names, start)) for s in shards)):
        if name != last:
            last = name
            yield name, size


class _Out:
    def __init__(self, max_keys: int) -> None:
        self.max_keys = max_keys
        self.entries: list[Entry] = []
        self.prefixes: list[str] = []
        self.last: str | None = None

    @property
    def full(self) -> bool:
        return len(self.entries) + len(self.prefixes) >= self.max_keys

    def page(self, truncated: bool) -> Page:
        return Page(self.entries, self.prefixes, truncated, self.last if truncated else None)


class _Truncated(Exception):
    pass


def paginate(
    days: Iterable[tuple[str, DayShards]],
    *,
    prefix: str = "",
    delimiter: str | None = None,
    after: str = "",
    max_keys: int = MAX_KEYS,
    modified: Callable[[str], datetime],
) -> Page:
    """One page over ``days`` (ascending ``(YYYYMMDD, shards)``); see the module's rule.

    A day whose every key rolls up into one common prefix (``delimiter="/"`` at the top, say) is
    listed without loading its shards, as is a day only needed to tell that the page is
    truncated: a day's containers hold at least one member (a pack never writes an empty one;
    should a DES v1 container hold only deleted members, the worst is an empty last page).
    """
    check_args(prefix, delimiter, after, max_keys)
    out = _Out(max_keys)
    if max_keys == 0:
        return out.page(False)
    delimiter = delimiter or None
    try:
        for day, shards in days:
            _one_day(out, day + "/", shards, prefix, delimiter, after, modified)
            if out.last is not None:
                after = out.last
    except _Truncated:
        return out.page(True)
    return out.page(False)


def _emit_prefix(out: _Out, common: str) -> None:
    if out.full:
        raise _Truncated
    out.prefixes.append(common)
    out.last = common


def _one_day(out: _Out, day_key: str, shards: DayShards, prefix: str, delimiter: str | None, after: str, modified: Callable[[str], datetime]) -> None:
    if not day_matches(day_key, prefix) or (after >= day_key and not after.startswith(day_key)):
        return
    if delimiter and len(prefix) <= DAY:
        at = day_key.find(delimiter, len(prefix))
        if at != -1 and at + len(delimiter) <= DAY:
            common = day_key[: at + len(delimiter)]
            if common > after:
                _emit_prefix(out, common)
            return
    if out.full:  # this day holds an entry after ``after``: every one of its keys sorts after it
        raise _Truncated
    want = prefix[DAY:]
    if after.startswith(day_key) and after[DAY:] >= want:
        start, inclusive = after[DAY:], False
    else:
        start, inclusive = want, True
    loaded = shards()
    when = modified(day_key[:8])
    stream = merged(loaded, start, inclusive)
    while (item := next(stream, None)) is not None and item[0].startswith(want):
        name, size = item
        key = day_key + name
        at = key.find(delimiter, len(prefix)) if delimiter else -1
        if at == -1:
            if out.full:
                raise _Truncated
            out.entries.append(Entry(key, size, when))
            out.last = after = key
            continue
        common = key[: at + len(delimiter)]
        if common > after:
            _emit_prefix(out, common)
            after = common
        beyond = successor(common)  # skip every key under the prefix: restart the merge past it
        if beyond is None or not beyond.startswith(day_key):
            return
        stream = merged(loaded, beyond[DAY:], True)
