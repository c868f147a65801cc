"""Byte ranges as both container readers plan them: checking a requested range, grouping reads."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def check_range(name: str, start: int, stop: int, size: int) -> None:
    """ValueError unless ``0 <= start <= stop <= size`` (the member's size)."""
    if not 0 <= start <= stop <= size:
        raise ValueError(f"range [{start}, {stop}) is outside member {name!r} of {size} bytes")


def coalesce(items: Iterable[T], span: Callable[[T], tuple[int, int]], max_merge: int, max_gap: int) -> Iterator[list[T]]:
    """Group items sorted by start into runs read with one request each.

    ``span(item)`` is the item's ``(start, end)``. An item joins the run when it starts at most
    ``max_gap`` bytes after the run's end and the run then spans at most ``max_merge`` bytes; an
    item larger than ``max_merge`` is a run of its own.
    """
    group: list[T] = []
    lo = hi = 0
    for item in items:
        start, end = span(item)
        if group and start - hi <= max_gap and max(hi, end) - lo <= max_merge:
            group.append(item)
            hi = max(hi, end)
            continue
        if group:
            yield group
        group, lo, hi = [item], start, end
    if group:
        yield group
