"""What differs between name mode and uid mode, in one object per mode.

A request names a file (name mode: the name carries its date; uid mode: a uid plus its
created_at); a night finds its work (name mode: the marker's READY rows; uid mode: the days after
the cutoff) and finishes it (name mode: rows marked PACKED; uid mode: the cutoff moves). Callers
ask the mode and never compare ``settings.mode`` themselves.

The read side (``locate``, ``shard_of``, ``archived``) is pure. The night side works on the source
database; it imports desq's source layer when first called, so the files API, which only locates,
never loads it.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from datetime import date
from typing import TYPE_CHECKING, Any, ClassVar

from desq.errors import LayoutError
from desq.failpoints import failpoint
from desq.layout import Layout, Location, parse_name, shard_of_name

if TYPE_CHECKING:
    from desq.archive import Archive
    from desq.source.marker import MarkReport
    from desq.source.plan import Plan
    from desq.source.rows import SourceRow
    from desq.source.table import SourceTable
    from desq.spool import SpoolWriter
    from desq.state import StateStore
    from desq.storage import Storage

NAME_CHAR = r"[^/\\\u0000-\u001f\u007f\ufffd]"
"""A character a name or text uid may hold (the layout refuses the others)."""


class MissingCreatedAt(LayoutError):
    """uid mode was asked for a uid without its created_at."""


class Mode(ABC):
    """One mode of a deployment, over its layout."""

    name: ClassVar[str]
    takes_created_at: ClassVar[bool]
    """A request names its file with a created_at besides its name (uid mode)."""
    state_columns: ClassVar[tuple[str, ...]]
    """The ``source.columns`` keys of the per-row state the mode keeps in the business table."""
    has_cutoff: ClassVar[bool]
    """The mode keeps an archive cutoff (and so reads newer files from their originals)."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    # --- the read side (pure) ------------------------------------------------------------------

    @abstractmethod
    def locate(self, name: str, created_at: str | None = None) -> Location:
        """Where a requested file lives; LayoutError (MissingCreatedAt) when it cannot be named so."""

    @abstractmethod
    def shard_of(self, name: str) -> int:
        """The shard of a requested name (what the router routes on)."""

    @abstractmethod
    def name_pattern(self) -> str:
        """A regular expression every valid request name matches (for the API's description)."""

    def archived(self, where: Location, cutoff: Callable[[], date | None]) -> bool:
        """Whether the file at ``where`` is read from its container (else from its original);
        ``cutoff`` gives the published cutoff and is called only by a mode that has one."""
        return True

    # --- the night side ------------------------------------------------------------------------

    def mark(self, source: SourceTable, today: date) -> MarkReport | None:
        """The marker's step before planning (name mode); None for a mode without one."""
        return None

    @abstractmethod
    def plan(self, source: SourceTable, state: StateStore, storage: Storage, today: date, spool: SpoolWriter | None = None) -> Plan:
        """Tonight's (date, shard)s, their rows written to ``spool`` (without one: see ``Plan.rows``)."""

    @abstractmethod
    def plan_day(self, source: SourceTable, day: date) -> Plan:
        """The (date, shard)s of one day, as ``desq pack --all`` packs them by hand."""

    @abstractmethod
    def rows_for(self, source: SourceTable, day: date, shard: int) -> Iterator[SourceRow]:
        """The rows of one (date, shard), read from the source."""

    def packed(self, source: SourceTable, ids: Iterable[object], batch_size: int) -> int:
        """Record rows as archived in the source; how many were (0: the mode keeps no row state)."""
        return 0

    def finish(self, source: SourceTable, state: StateStore, archive: Archive, today: date) -> dict[str, Any]:
        """The step after every (date, shard) of a night; what it adds to the night's summary."""
        return {}


class NameMode(Mode):
    """The marker gives each row a name carrying its date and shard, and a status."""

    name = "name"
    takes_created_at = False
    state_columns = ("des_name", "des_shard", "des_status")
    has_cutoff = False

    def locate(self, name: str, created_at: str | None = None) -> Location:
        return self.layout.locate_name(name)

    def shard_of(self, name: str) -> int:
        parse_name(name)  # locate's validation, without building the Location (the router asks this per request)
        return shard_of_name(name, self.layout.shard_bits)

    def name_pattern(self) -> str:
        return rf"^(?:[A-Za-z0-9-]+_)?[0-9]{{8}}_{NAME_CHAR}+$"

    def mark(self, source: SourceTable, today: date) -> MarkReport:
        from desq.source.marker import mark

        return mark(source, today=today)

    def plan(self, source: SourceTable, state: StateStore, storage: Storage, today: date, spool: SpoolWriter | None = None) -> Plan:
        from desq.source.plan import plan_names

        return plan_names(source, spool)

    def plan_day(self, source: SourceTable, day: date) -> Plan:
        from desq.source.plan import plan_names

        return plan_names(source)

    def rows_for(self, source: SourceTable, day: date, shard: int) -> Iterator[SourceRow]:
        from desq.source.plan import name_rows_for

        return name_rows_for(source, day, shard)

    def packed(self, source: SourceTable, ids: Iterable[object], batch_size: int) -> int:
        from desq.source.plan import mark_packed

        marked = mark_packed(source, ids, batch_size=batch_size)
        failpoint("pack.after_mark")
        return marked


class UidMode(Mode):
    """Rows are identified by (uid, created_at); one cutoff date says what is archived."""

    name = "uid"
    takes_created_at = True
    state_columns = ()
    has_cutoff = True

    def locate(self, name: str, created_at: str | None = None) -> Location:
        if not created_at:
            raise MissingCreatedAt("uid mode needs the file's created_at besides its uid")
        return self.layout.locate_uid(name, created_at)

    def shard_of(self, name: str) -> int:
        return self.layout.shard_of_uid(name)

    def name_pattern(self) -> str:
        return r"^[0-9]{1,40}$" if self.layout.uid_kind == "int" else rf"^{NAME_CHAR}+$"

    def archived(self, where: Location, cutoff: Callable[[], date | None]) -> bool:
        day = cutoff()
        return day is not None and where.date <= day

    def plan(self, source: SourceTable, state: StateStore, storage: Storage, today: date, spool: SpoolWriter | None = None) -> Plan:
        from desq.cutoff import plan_after_cutoff

        return plan_after_cutoff(source, state, storage, today, spool)

    def plan_day(self, source: SourceTable, day: date) -> Plan:
        from desq.source.plan import plan_uids

        return plan_uids(source, day, day)

    def rows_for(self, source: SourceTable, day: date, shard: int) -> Iterator[SourceRow]:
        from desq.source.plan import uid_rows_for

        return uid_rows_for(source, day, shard)

    def finish(self, source: SourceTable, state: StateStore, archive: Archive, today: date) -> dict[str, Any]:
        from desq.cutoff import advance

        report = advance(source, state, archive, today=today)
        return {"cutoff": report.summary(), "cutoff_date": report.after.isoformat() if report.after else None, "cutoff_lag_days": report.lag_days}


MODES: dict[str, type[Mode]] = {m.name: m for m in (NameMode, UidMode)}


@functools.cache
def mode_for(layout: Layout) -> Mode:
    """The mode object of ``layout`` (one per layout)."""
    try:
        return MODES[layout.mode](layout)
    except KeyError:
        raise LayoutError(f"mode must be 'name' or 'uid', got {layout.mode!r}") from None
