"""The files API's logic without HTTP: from a request's name (and created_at) to a member.

Everything a request asks for is validated here, before any storage request: the name against the
layout (length, characters, the name-mode date), the uid and created_at in uid mode, and the
published cutoff. ``web/files.py`` turns the results and errors into HTTP.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from datetime import date
from collections.abc import Callable
from urllib.parse import quote, unquote, urlsplit

from desq.archive import Archive
from desq.errors import DesqError
from desq.layout import LayoutError, Location, yyyymmdd
from desq.mode import MissingCreatedAt, mode_for
from desq.published import Published, read_published, read_state
from desq.settings import Settings
from desq.storage import Storage


class FilesError(DesqError):
    """A request the files API answers with an error status and code."""

    status = 500
    code = "internal_error"


class BadRequest(FilesError):
    status, code = 400, "bad_request"


class NotFoundError(FilesError):
    status, code = 404, "not_found"


class NotArchived(FilesError):
    status, code = 404, "not_archived"


@dataclass(frozen=True, slots=True)
class Target:
    """Where a request's file is: a member of a container, or (uid mode, after the cutoff) its original."""

    name: str
    container: str
    shard: str
    original: str | None = None


class Cutoff:
    """The published cutoff, re-read at most every ``ttl`` seconds (the controller moves it nightly)."""

    def __init__(self, archive: Archive, ttl: float = 30.0) -> None:
        self._archive = archive
        self._ttl = ttl
        self._value: date | None = None
        self._read_at = float("-inf")

    def __call__(self) -> date | None:
        now = time.monotonic()
        if now - self._read_at > self._ttl:
            self._value = read_published(self._archive.storage)
            self._read_at = now
        return self._value


class OriginalsUnavailable(FilesError):
    """The source table, asked for a row's path, did not answer."""

    status, code = 503, "unavailable"


PathOf = Callable[[str, date], "str | None"]
"""The path column of the row with this uid created on this day (None: no such row)."""


def original_path(path: str) -> str:
    """A row's path as ``{path}`` puts it under the original location: relative, no ``.`` or ``..``
    segment, no backslash or NUL; NotFoundError naming the problem otherwise."""
    relative = path.lstrip("/")
    if not relative.strip() or "\\" in relative or "\x00" in relative or "://" in path:
        raise NotFoundError(f"the file's path {path!r} cannot name an original under web.original_url")
    if any(part in (".", "..") for part in relative.split("/")):
        raise NotFoundError(f"the file's path {path!r} leaves the original location of web.original_url")
    return relative


def fill_original(template: str, uid: str, day: date, path: str | None = None) -> str:
    """``web.original_url`` filled in: the uid quoted whole, the day as YYYYMMDD, the row's path
    (``original_path``) quoted with its slashes kept."""
    filled_path = quote(original_path(path), safe="/") if path is not None else ""
    return template.format(uid=quote(uid, safe=""), date=yyyymmdd(day), path=filled_path)


def original_root(template: str) -> str:
    """A file:// template's fixed folder (before its first placeholder): no original is read outside it."""
    fixed = template[: template.index("{")]
    return unquote(urlsplit(fixed[: fixed.rindex("/") + 1]).path)


class FileService:
    """Resolve requests to members for one deployment."""

    def __init__(self, settings: Settings, archive: Archive, cutoff: Cutoff | None = None, *, documents: Storage | None = None, path_of: PathOf | None = None) -> None:
        """``documents``: where to read the published state for metrics (default: the archive's
        storage; the app passes one that does not count towards the request metrics). ``path_of``:
        the row lookup a ``{path}`` in ``web.original_url`` needs."""
        self.path_of = path_of
        self.settings = settings
        self.layout = settings.layout
        self.mode = mode_for(self.layout)
        self.archive = archive
        self.cutoff = cutoff or Cutoff(archive)
        self._documents = documents or archive.storage
        self._state: tuple[float, Published] | None = None

    def published(self, ttl: float = 30.0) -> Published:
        """The archive's published state, re-read at most every ``ttl`` seconds."""
        now = time.monotonic()
        if self._state is None or now - self._state[0] > ttl:
            self._state = (now, read_state(self._documents))
        return self._state[1]

    def place(self, name: str, created_at: str | None) -> Location:
        """Where the container member ``name`` (uid mode: created at ``created_at``) lies, whatever
        the cutoff says; BadRequest if it cannot be named so."""
        try:
            return self.mode.locate(name, created_at)
        except MissingCreatedAt:
            raise BadRequest("uid mode needs ?created_at=YYYY-MM-DD (or ISO 8601)") from None
        except LayoutError as exc:
            raise BadRequest(str(exc)) from None

    def locate(self, name: str, created_at: str | None) -> Target:
        """The target of ``/files/<name>`` (uid mode: with ``?created_at=``); FilesError if bad."""
        where = self.place(name, created_at)
        target = Target(name=where.name, container=where.container, shard=where.shard_hex)
        cutoff = functools.cache(self.cutoff)  # read at most once per request
        if not self.mode.archived(where, cutoff):
            template = self.settings.web.original_url
            if not template:
                raise NotArchived(f"{name} was created after the archive cutoff ({cutoff() or 'none yet'}); read it from the live store")
            path = self._path_of(where.name, where.date) if "{path}" in template else None
            original = fill_original(template, where.name, where.date, path)
            return Target(name=where.name, container=where.container, shard=where.shard_hex, original=original)
        return target

    def _path_of(self, uid: str, day: date) -> str:
        if self.path_of is None:
            raise FilesError("web.original_url has {path} but the files API was given no source table")
        path = self.path_of(uid, day)
        if path is None:
            raise NotFoundError(f"no file {uid} created on {day} in the source table")
        return path
