"""``POST /batch`` without HTTP: a request's entries -> their members, in the order asked.

The entries are taken in the order asked, in windows whose members add up to at most ``budget``
bytes. A window reads each of its containers' members with one ``read_members`` (adjacent frames
in one request; a request also spans frame heads and tails and gaps of up to 64 KiB, so it is
capped at twice the budget), then hands them out in the order asked. A member larger than
``budget``, or one whose size the index cannot tell, is a window of its own and is streamed in
checked blocks, ``budget`` bytes read at a time. So a batch holds about two windows of bytes
whatever it asks for. Containers are opened through the archive's index cache, so each is opened
once (while it stays cached), and one that failed is not asked again within the batch.

``desq.tarstream`` turns the results into the tar; ``web/batch.py`` into HTTP.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from desq.container import ContainerError, MemberMeta, MemberNotFound
from desq.files import BadRequest, FileService, FilesError
from desq.mode import Mode
from desq.storage import NotFound, StorageError

MAX_ENTRIES = 1000
"""Entries one request may ask for (CONTRACT section 6)."""
MAX_BODY = 1 << 20
"""Largest request body read: 1000 entries of the longest names fit in a third of it."""
GROUP_BYTES = 8 << 20
"""Bytes of members one window holds, and the largest read it makes."""
ERRORS_NAME = "errors.json"
RESERVED = frozenset({".", "..", ERRORS_NAME})
"""Names (uids) that cannot be a tar member: an extractor would write them outside the file
itself ('.', '..') or over the batch's own error list."""
GIVE_UP_AFTER = 3
"""Storage failures in a row after which the rest of a batch is reported unavailable untried."""


@dataclass(frozen=True, slots=True)
class Ask:
    """One entry of a batch request: a name, or (uid mode) a uid as text and its created_at."""

    index: int
    name: str
    created_at: str | None = None
    label: tuple[tuple[str, Any], ...] = ()
    """How errors.json names the entry: its position and the values as the request gave them."""


@dataclass(frozen=True, slots=True)
class Failure:
    """Why an entry was not served: the files API's error code and a one-line message."""

    code: str
    message: str


@dataclass(slots=True)
class Item:
    """An entry located: its container, member name and size from the index (None: unknown)."""

    ask: Ask
    container: str = ""
    name: str = ""
    size: int | None = None
    day: date | None = None
    failure: Failure | None = None


@dataclass(slots=True)
class Served:
    """A member ready to send: its metadata, its first bytes and (streamed alone) the rest."""

    meta: MemberMeta
    first: bytes
    rest: Iterator[bytes] = field(default_factory=lambda: iter(()))


# --- the request ------------------------------------------------------------------------------


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise BadRequest(f"the request repeats the key {next(k for k in keys if keys.count(k) > 1)!r}")
    return dict(pairs)


def _refuse_constant(name: str) -> None:
    raise BadRequest(f"{name} is not JSON")


def parse_request(body: bytes, mode: Mode) -> list[Ask]:
    """The entries of a batch request body; BadRequest naming the first problem of its shape.

    Name mode: ``{"names": ["<name>", ...]}``; uid mode: ``{"files": [{"uid": "<uid>" or an
    integer, "created_at": "<date>"}, ...]}``; 1 to MAX_ENTRIES entries, no other keys. A name or
    uid that is malformed is not an error here: the entry fails alone (``locate``).
    """
    try:
        doc = json.loads(body, object_pairs_hook=_no_duplicate_keys, parse_constant=_refuse_constant)
    except BadRequest:
        raise
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise BadRequest(f"the request body is not JSON: {str(exc)[:200]}") from None
    uid_mode = mode.takes_created_at
    key = "files" if uid_mode else "names"
    example = '{"files": [{"uid": ..., "created_at": "YYYY-MM-DD"}, ...]}' if uid_mode else '{"names": ["...", ...]}'
    if not isinstance(doc, dict) or set(doc) != {key}:
        raise BadRequest(f"the request must be {example} (this archive is in {mode.name} mode)")
    entries = doc[key]
    if not isinstance(entries, list) or not entries:
        raise BadRequest(f"{key!r} must be a non-empty list")
    if len(entries) > MAX_ENTRIES:
        raise BadRequest(f"{key!r} holds {len(entries)} entries; at most {MAX_ENTRIES} are allowed")
    return [_uid_ask(i, e) if uid_mode else _name_ask(i, e) for i, e in enumerate(entries)]


def _name_ask(index: int, entry: object) -> Ask:
    if not isinstance(entry, str):
        raise BadRequest(f"names[{index}] must be a string, got {type(entry).__name__}")
    return Ask(index, entry, None, (("index", index), ("name", entry)))


def _uid_ask(index: int, entry: object) -> Ask:
    if not isinstance(entry, dict) or set(entry) != {"uid", "created_at"}:
        raise BadRequest(f"files[{index}] must be an object with exactly the keys 'uid' and 'created_at'")
    uid, created_at = entry["uid"], entry["created_at"]
    if isinstance(uid, bool) or not isinstance(uid, (str, int)):
        raise BadRequest(f"files[{index}].uid must be a string or an integer")
    if not isinstance(created_at, str):
        raise BadRequest(f"files[{index}].created_at must be a string (YYYY-MM-DD or ISO 8601)")
    return Ask(index, str(uid), created_at, (("index", index), ("uid", uid), ("created_at", created_at)))


# --- planning (pure) ----------------------------------------------------------------------------


def alone(item: Item, budget: int) -> bool:
    """Whether ``item`` is streamed by itself: larger than a window, or of a size the index cannot tell."""
    return item.failure is None and (item.size is None or item.size > budget)


def windows(items: Iterable[Item], budget: int) -> Iterator[list[Item]]:
    """Consecutive items whose distinct members add up to at most ``budget`` bytes; an item
    ``alone`` is a window by itself, and a failed one costs nothing."""
    window: list[Item] = []
    held: set[tuple[str, str]] = set()
    used = 0
    for item in items:
        if alone(item, budget):
            if window:
                yield window
                window, held, used = [], set(), 0
            yield [item]
            continue
        key = (item.container, item.name)
        cost = 0 if item.failure is not None or key in held else item.size or 0
        if window and used + cost > budget:
            yield window
            window, held, used = [], set(), 0
        window.append(item)
        if item.failure is None:
            held.add(key)
            used += cost
    if window:
        yield window


def by_container(window: list[Item]) -> dict[str, list[str]]:
    """The members a window reads, container by container (first asked first), each once."""
    reads: dict[str, list[str]] = {}
    for item in window:
        if item.failure is None:
            names = reads.setdefault(item.container, [])
            if item.name not in names:
                names.append(item.name)
    return reads


def failure_of(exc: Exception) -> Failure:
    """The files API's error code for an exception met while reading; re-raised if unknown."""
    if isinstance(exc, FilesError):
        return Failure(exc.code, str(exc))
    if isinstance(exc, (MemberNotFound, NotFound)):
        return Failure("not_found", "no such file in the archive")
    if isinstance(exc, ContainerError):
        return Failure("integrity_error", f"the stored file failed its checks; no bytes were sent ({exc})")
    if isinstance(exc, StorageError):
        return Failure("unavailable", "the archive storage did not answer; try again")
    raise exc


# --- reading ----------------------------------------------------------------------------------


class BatchReader:
    """The results of one batch, in the order asked: ``(item, Served or Failure)``."""

    def __init__(self, service: FileService, *, budget: int = GROUP_BYTES) -> None:
        self.service = service
        self.archive = service.archive
        self.budget = budget
        self._cutoff = functools.cache(service.cutoff)  # read at most once per batch
        self._broken: dict[str, Failure] = {}
        self._down = 0

    def results(self, asks: Iterable[Ask]) -> Iterator[tuple[Item, Served | Failure]]:
        for window in windows(map(self.locate, asks), self.budget):
            if alone(window[0], self.budget):
                yield window[0], self._stream(window[0])
                continue
            got: dict[tuple[str, str], Served | Failure] = {}
            for container, names in by_container(window).items():
                got.update(((container, n), r) for n, r in self._read_together(container, names).items())
            for item in window:
                yield item, item.failure or got[(item.container, item.name)]

    def locate(self, ask: Ask) -> Item:
        """The entry's container and size (opening the container: one request unless cached)."""
        item = Item(ask)
        try:
            where = self.service.place(ask.name, ask.created_at)
        except BadRequest as exc:
            item.failure = Failure("bad_request", str(exc))
            return item
        item.container, item.name, item.day = where.container, where.name, where.date
        if ask.name in RESERVED:
            item.failure = Failure("bad_request", f"{ask.name!r} cannot be a tar member name; GET /files/ serves it")
        elif not self.service.mode.archived(where, self._cutoff):
            item.failure = Failure("not_archived", f"created after the archive cutoff ({self._cutoff() or 'none yet'}); read it from the live store")
        elif self._down >= GIVE_UP_AFTER:
            item.failure = Failure("unavailable", f"not tried: the archive storage failed {GIVE_UP_AFTER} times in a row in this batch")
        elif where.container in self._broken:
            item.failure = self._broken[where.container]
        else:
            try:
                item.size = self.archive.size_hint(where.container, where.name)
                self._down = 0
            except Exception as exc:  # noqa: BLE001 - failure_of re-raises what it does not know
                item.failure = self._broken[where.container] = self._failed(exc)
        return item

    def _failed(self, exc: Exception) -> Failure:
        failure = failure_of(exc)
        self._down = self._down + 1 if failure.code == "unavailable" else 0
        return failure

    def _stream(self, item: Item) -> Served | Failure:
        """A member alone: metadata and first chunk now (a failure is still an errors.json entry)."""
        try:
            meta, chunks = self.archive.open_range(item.container, item.name, chunk_size=self.budget)
            first = next(chunks, b"")
        except Exception as exc:  # noqa: BLE001
            return self._failed(exc)
        self._down = 0
        return Served(meta, first, chunks)

    def _read_together(self, container: str, names: list[str]) -> dict[str, Served | Failure]:
        """Members of one container in coalesced reads; if that fails, each alone, for its own error."""
        try:
            found = self.archive.read_members(container, names, max_merge=2 * self.budget)
        except (ContainerError, StorageError) as exc:
            if isinstance(exc, StorageError) and not isinstance(exc, NotFound):
                failure = self._failed(exc)
                return dict.fromkeys(names, failure)
            return {name: self._alone(container, name) for name in names}
        self._down = 0
        return {meta.name: Served(meta, data) for meta, data in found}

    def _alone(self, container: str, name: str) -> Served | Failure:
        try:
            meta, chunks = self.archive.open_range(container, name, chunk_size=self.budget)
            return Served(meta, b"".join(chunks))
        except Exception as exc:  # noqa: BLE001
            return self._failed(exc)


def error_entry(item: Item, failure: Failure) -> dict[str, Any]:
    """One entry of errors.json."""
    return dict(item.ask.label) | {"error": failure.code, "message": failure.message}
