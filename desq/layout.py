"""The layout: a file's identity -> (date, shard, container key), and shard -> queue.

Pure functions with no I/O (CONTRACT sections 3 and 4). The marker, the packers, the files
API and the router all import this module, so that they can never disagree on where a file
lives. Anything that changes a result here is a new ``LAYOUT_VERSION``.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from dataclasses import dataclass
from datetime import date, datetime, tzinfo
from typing import Literal

from desq import days
from desq.errors import LayoutError

LAYOUT_VERSION = 1
"""Stored in every container; packers and readers refuse to mix versions."""

MIN_SHARD_BITS = 1
MAX_SHARD_BITS = 16
MAX_NAME_BYTES = 255
"""Longest name or text uid, in UTF-8 bytes (a file name on most filesystems)."""

Mode = Literal["name", "uid"]
UidKind = Literal["int", "text"]

PREFIX_RE = re.compile(r"[A-Za-z0-9-]+")
_DATE8_RE = re.compile(r"[0-9]{8}")
# Characters no name or uid may hold: they would break URL paths, object keys or terminals, and
# U+FFFD, which only ever stands for bytes that were not valid UTF-8.
_FORBIDDEN_RE = re.compile(r"[/\\\x00-\x1f\x7f\ufffd]")
_INT_UID_RE = re.compile(r"[0-9]+")
_SPACED_OFFSET_RE = re.compile(r"^(.{10}[Tt ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:[.,][0-9]+)?)?) ([0-9]{2}(?::?[0-9]{2})?)$")


@dataclass(frozen=True, slots=True)
class Location:
    """Where one file lives: the container for ``(date, shard)`` and its name inside it."""

    name: str
    date: date
    shard: int
    shard_hex: str
    container: str


@dataclass(frozen=True, slots=True)
class ParsedName:
    """The parts of a name-mode name ``[<prefix>_]<YYYYMMDD>_<id>``."""

    prefix: str
    date: date
    id: str


# --- shards ---------------------------------------------------------------------------------


def check_shard_bits(bits: int) -> int:
    """Return ``bits`` if it is a valid shard width (1..16), else raise LayoutError."""
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise LayoutError(f"shard_bits must be an integer, got {bits!r}")
    if not MIN_SHARD_BITS <= bits <= MAX_SHARD_BITS:
        raise LayoutError(
            f"shard_bits must be between {MIN_SHARD_BITS} and {MAX_SHARD_BITS}, got {bits}"
        )
    return bits


def shard_count(bits: int) -> int:
    """Number of shards, ``2**bits``."""
    return 1 << check_shard_bits(bits)


def shard_width(bits: int) -> int:
    """Hex digits in a shard's name: ``ceil(bits / 4)``."""
    return (check_shard_bits(bits) + 3) // 4


def shard_hex(shard: int, bits: int) -> str:
    """A shard as uppercase hex zero-padded to the shard width (8 bits: ``00``..``FF``)."""
    _check_shard(shard, bits)
    return format(shard, f"0{shard_width(bits)}X")


def parse_shard_hex(text: str, bits: int) -> int:
    """Read a shard written in hex (either case, exactly the shard width) back to an int."""
    width = shard_width(bits)
    if len(text) != width or any(c not in "0123456789abcdefABCDEF" for c in text):
        raise LayoutError(f"shard {text!r} is not {width} hex digit(s)")
    return _check_shard(int(text, 16), bits)


def _check_shard(shard: int, bits: int) -> int:
    if isinstance(shard, bool) or not isinstance(shard, int):
        raise LayoutError(f"shard must be an integer, got {shard!r}")
    if not 0 <= shard < shard_count(bits):
        raise LayoutError(f"shard {shard} is outside [0, {shard_count(bits)}) for {bits} bits")
    return shard


def shard_of_name(name: str, bits: int) -> int:
    """Name mode: the low ``bits`` bits of the big-endian SHA-256 of the UTF-8 name."""
    mask = shard_count(bits) - 1
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    # bits <= 16, so the last two bytes hold every bit the mask keeps.
    return int.from_bytes(digest[-2:], "big") & mask


def shard_of_int_uid(uid: int, bits: int) -> int:
    """uid mode, integer uids: ``uid % 2**bits``."""
    if isinstance(uid, bool) or not isinstance(uid, int) or uid < 0:
        raise LayoutError(f"an integer uid must be a non-negative integer, got {uid!r}")
    return uid & (shard_count(bits) - 1)


def shard_of_text_uid(uid: str, bits: int) -> int:
    """uid mode, text uids: the low ``bits`` bits of the CRC32 of the UTF-8 uid."""
    return zlib.crc32(uid.encode("utf-8")) & (shard_count(bits) - 1)


# --- names and uids -------------------------------------------------------------------------


def check_prefix(prefix: str) -> str:
    """Return ``prefix`` if it can start a name: ``[A-Za-z0-9-]+`` and not 8 digits.

    An 8-digit prefix would make ``<prefix>_<YYYYMMDD>_<id>`` read back as a name without a
    prefix, so it is refused rather than guessed at.
    """
    if not PREFIX_RE.fullmatch(prefix):
        raise LayoutError(f"name prefix {prefix!r} must match [A-Za-z0-9-]+")
    if _DATE8_RE.fullmatch(prefix):
        raise LayoutError(f"name prefix {prefix!r} must not be 8 digits (it reads as a date)")
    return prefix


def _check_text(kind: str, text: str) -> str:
    if not isinstance(text, str) or not text:
        raise LayoutError(f"{kind} must be a non-empty string")
    bad = _FORBIDDEN_RE.search(text)
    if bad:
        raise LayoutError(f"{kind} {text!r} holds a forbidden character {bad.group()!r}")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise LayoutError(f"{kind} {text!r} is not valid UTF-8 text") from None
    if size > MAX_NAME_BYTES:
        raise LayoutError(f"{kind} is {size} bytes long; at most {MAX_NAME_BYTES} are allowed")
    return text


def build_name(day: date, row_id: object, prefix: str = "") -> str:
    """Name mode: ``<YYYYMMDD>_<id>``, or ``<prefix>_<YYYYMMDD>_<id>`` with a prefix."""
    id_text = str(row_id)
    _check_text("row id", id_text)
    head = f"{check_prefix(prefix)}_" if prefix else ""
    return _check_text("name", f"{head}{yyyymmdd(day)}_{id_text}")


def parse_name(name: str) -> ParsedName:
    """Split a name-mode name into prefix, date and id; LayoutError if it is malformed."""
    _check_text("name", name)
    first, sep, rest = name.partition("_")
    if sep and _DATE8_RE.fullmatch(first):
        prefix, day_text, id_text = "", first, rest
    else:
        day_text, sep2, id_text = rest.partition("_")
        if not (sep and sep2 and PREFIX_RE.fullmatch(first)):
            raise LayoutError(f"name {name!r} is not [<prefix>_]<YYYYMMDD>_<id>")
        prefix = first
    if not _DATE8_RE.fullmatch(day_text) or not id_text:
        raise LayoutError(f"name {name!r} is not [<prefix>_]<YYYYMMDD>_<id>")
    return ParsedName(prefix=prefix, date=parse_yyyymmdd(day_text), id=id_text)


def parse_int_uid(text: str) -> int:
    """An integer uid as written in a URL or on the command line (decimal digits only)."""
    if not isinstance(text, str) or not _INT_UID_RE.fullmatch(text) or len(text) > 40:
        raise LayoutError(f"uid {text!r} is not a non-negative decimal integer")
    return int(text)


def check_text_uid(uid: str) -> str:
    """Return a text uid if it is usable as a name inside a container."""
    return _check_text("uid", uid)


# --- dates ----------------------------------------------------------------------------------


def yyyymmdd(day: date) -> str:
    """A day as its 8 digits, ``YYYYMMDD`` (``%Y`` would write the year 999 as 3 digits)."""
    return f"{day.year:04d}{day.month:02d}{day.day:02d}"


def parse_yyyymmdd(text: str) -> date:
    """``YYYYMMDD`` -> date; LayoutError on anything that is not a real calendar day."""
    if not _DATE8_RE.fullmatch(text):
        raise LayoutError(f"date {text!r} is not YYYYMMDD")
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        raise LayoutError(f"date {text!r} is not a calendar day") from None


def date_of(created_at: object, zone: tzinfo) -> date:
    """The day a ``created_at`` falls on in ``zone`` (CONTRACT section 3; see ``desq.days``)."""
    return days.day_of(created_at, zone)


def parse_created_at(text: str, zone: tzinfo) -> date:
    """A created_at given by a user (a URL, the command line): ``YYYY-MM-DD`` or ISO 8601 -> its day.

    A ``+`` of an offset left unescaped in a query string arrives as a space; it is read back as ``+``."""
    if not isinstance(text, str) or not 10 <= len(text) <= 40:
        raise LayoutError(f"created_at {text!r} is not YYYY-MM-DD or ISO 8601")
    text = _SPACED_OFFSET_RE.sub(r"\1+\2", text)
    try:
        return days.day_of(text, zone)
    except LayoutError:
        raise LayoutError(f"created_at {text!r} is not YYYY-MM-DD or ISO 8601 (or is outside the years 1..9999)") from None


# --- containers and queues ------------------------------------------------------------------


def container_key(day: date, shard: int, bits: int) -> str:
    """``<YYYYMMDD>/<SHARD>.des`` under the archive url."""
    return f"{yyyymmdd(day)}/{shard_hex(shard, bits)}.des"


def check_queue_count(count: int, bits: int) -> int:
    """Return ``count`` if it is a power of two no larger than the number of shards."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise LayoutError(f"queue_count must be a positive integer, got {count!r}")
    if count & (count - 1):
        raise LayoutError(f"queue_count must be a power of two, got {count}")
    if count > shard_count(bits):
        raise LayoutError(
            f"queue_count {count} is more than the {shard_count(bits)} shards of {bits} bits"
        )
    return count


def queue_ranges(bits: int, count: int) -> list[tuple[int, int]]:
    """The ``count`` equal contiguous ``(lo, hi)`` shard ranges, both ends inclusive."""
    size = shard_count(bits) // check_queue_count(count, bits)
    return [(i * size, (i + 1) * size - 1) for i in range(count)]


def queue_name(lo: int, hi: int, bits: int) -> str:
    """``shards-<lo>-<hi>`` in lowercase hex of the shard width."""
    return f"shards-{shard_hex(lo, bits).lower()}-{shard_hex(hi, bits).lower()}"


def queue_names(bits: int, count: int) -> list[str]:
    """Every packer queue, in shard order."""
    return [queue_name(lo, hi, bits) for lo, hi in queue_ranges(bits, count)]


def queue_of(shard: int, bits: int, count: int) -> str:
    """The queue whose range holds ``shard``."""
    size = shard_count(bits) // check_queue_count(count, bits)
    lo = _check_shard(shard, bits) // size * size
    return queue_name(lo, lo + size - 1, bits)


# --- the layout of one deployment -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Layout:
    """The layout parameters of one deployment, with the lookups every component needs."""

    mode: Mode
    shard_bits: int
    queue_count: int
    zone: tzinfo
    uid_kind: UidKind = "int"
    name_prefix: str = ""
    version: int = LAYOUT_VERSION

    def __post_init__(self) -> None:
        if self.mode not in ("name", "uid"):
            raise LayoutError(f"mode must be 'name' or 'uid', got {self.mode!r}")
        if self.uid_kind not in ("int", "text"):
            raise LayoutError(f"uid_kind must be 'int' or 'text', got {self.uid_kind!r}")
        check_queue_count(self.queue_count, self.shard_bits)
        if self.name_prefix:
            check_prefix(self.name_prefix)

    def name_for(self, created_at: datetime | date, row_id: object) -> str:
        """Name mode: the name the marker gives a row."""
        return build_name(date_of(created_at, self.zone), row_id, self.name_prefix)

    def shard_of_uid(self, uid: str | int) -> int:
        """uid mode: the shard of a uid given as text (from a URL) or as its native type."""
        if self.uid_kind == "int":
            return shard_of_int_uid(uid if isinstance(uid, int) else parse_int_uid(uid), self.shard_bits)
        return shard_of_text_uid(check_text_uid(str(uid)), self.shard_bits)

    def locate_name(self, name: str) -> Location:
        """Name mode: where the file ``name`` lives; the date is read back out of the name."""
        day = parse_name(name).date
        return self._location(name, day, shard_of_name(name, self.shard_bits))

    def locate_uid(self, uid: str | int, created_at: datetime | date | str) -> Location:
        """uid mode: where the file ``(uid, created_at)`` lives; its name inside is the uid."""
        shard = self.shard_of_uid(uid)
        if isinstance(created_at, str):
            day = parse_created_at(created_at, self.zone)
        else:
            day = date_of(created_at, self.zone)
        return self._location(str(uid), day, shard)

    def _location(self, name: str, day: date, shard: int) -> Location:
        return Location(
            name=name,
            date=day,
            shard=shard,
            shard_hex=shard_hex(shard, self.shard_bits),
            container=container_key(day, shard, self.shard_bits),
        )

    def queue_of(self, shard: int) -> str:
        """The packer queue that owns ``shard``."""
        return queue_of(shard, self.shard_bits, self.queue_count)

    def queue_names(self) -> list[str]:
        """Every packer queue, in shard order."""
        return queue_names(self.shard_bits, self.queue_count)
