"""A batch's results as a POSIX (pax) tar stream: one regular member per file served, then errors.json.

pax headers carry names that are not ASCII or longer than 100 bytes, sizes of 8 GiB and more and
sub-second or pre-1970 times. Small pieces are joined into writes of about ``FLUSH`` bytes; a
member's bytes of that size or more are passed on as they are, never copied.
"""

from __future__ import annotations

import json
import logging
import tarfile
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, time as clock, tzinfo

from desq.batch import ERRORS_NAME, Failure, Item, Served, error_entry
from desq.errors import DesqError

BLOCK = tarfile.BLOCKSIZE
FLUSH = 256 << 10
log = logging.getLogger("desq.batch")


class BatchAborted(DesqError):
    """A member failed a check after its header was sent: the stream stops (a truncated tar)."""


def header(name: str, size: int, mtime: float) -> bytes:
    """A regular member's header, mode 0644."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, mtime, 0o644
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict")


def padding(size: int) -> bytes:
    """Zeros from the end of ``size`` bytes of data to the next 512-byte block."""
    return b"\0" * (-size % BLOCK)


def end_of_archive(written: int) -> bytes:
    """Two zero blocks, then zeros up to a whole 10 KiB record (as tarfile writes it)."""
    total = written + 2 * BLOCK
    return b"\0" * (2 * BLOCK + (-total % tarfile.RECORDSIZE))


def mtime_of(item: Item, served: Served, zone: tzinfo) -> float:
    """The file's created_at as stored; where the container records none (DES v1), its day's start."""
    created = served.meta.created_at
    if created is None:
        created = datetime.combine(item.day, clock(), zone) if item.day else datetime.fromtimestamp(0, zone)
    stamp = created.timestamp()
    return int(stamp) if stamp == int(stamp) else stamp


def tar_stream(results: Iterable[tuple[Item, Served | Failure]], zone: tzinfo, on_member: Callable[[Item, Served | Failure], None] = lambda i, r: None) -> Iterator[bytes]:
    """The tar of ``results`` (``BatchReader.results``); BatchAborted, after logging, if a member
    streamed alone fails a check midway (its bytes that failed are never yielded)."""
    errors: list[dict[str, object]] = []
    pending: list[bytes] = []
    held = written = 0

    def put(piece: bytes) -> Iterator[bytes]:
        nonlocal held, written
        written += len(piece)
        if len(piece) >= FLUSH:
            if pending:
                yield b"".join(pending)
                pending.clear()
                held = 0
            yield piece
            return
        pending.append(piece)
        held += len(piece)
        if held >= FLUSH:
            yield b"".join(pending)
            pending.clear()
            held = 0

    for item, result in results:
        on_member(item, result)
        if isinstance(result, Failure):
            errors.append(error_entry(item, result))
            continue
        size = result.meta.size
        yield from put(header(item.ask.name, size, mtime_of(item, result, zone)))
        sent = len(result.first)
        yield from put(result.first)
        try:
            for chunk in result.rest:
                sent += len(chunk)
                yield from put(chunk)
        except Exception as exc:
            log.error("batch aborted: %s of %s failed after %d of its %d bytes were sent: %s", item.name, item.container, sent, size, exc)
            raise BatchAborted(f"member {item.name!r} failed midway: {exc}") from exc
        if sent != size:
            log.error("batch aborted: %s of %s gave %d bytes, its index says %d", item.name, item.container, sent, size)
            raise BatchAborted(f"member {item.name!r} gave {sent} bytes, not {size}")
        yield from put(padding(size))
    body = json.dumps(errors, indent=1).encode() + b"\n"  # ASCII: a name asked with a lone surrogate is listed too
    yield from put(header(ERRORS_NAME, len(body), int(time.time())))
    yield from put(body)
    yield from put(padding(len(body)))
    yield from put(end_of_archive(written))
    if pending:
        yield b"".join(pending)
