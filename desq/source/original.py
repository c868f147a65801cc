"""What fetching an original yields, and how it fails."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from desq.errors import DesqError, one_line
from desq.source.rows import SourceRow


class FetchError(DesqError):
    """A bad fetcher configuration, or a refused path (empty, relative without a root, outside the root)."""


class OriginalsUnavailable(FetchError):
    """The store of the originals does not answer (after retries): a failure of the whole fetch,
    to be retried later, not something to record against every row."""


class OriginalChanged(DesqError):
    """Raised by ``Original.open``: the big original changed, vanished or became unreadable since fetch()."""


@dataclass(frozen=True, slots=True)
class Original:
    """One row's original, as ``Fetcher.fetch`` yields it."""

    row: SourceRow
    size: int
    """Its size in bytes (0 if error)."""
    data: bytes | None
    """The whole original, when it is smaller than ``big_file_bytes``."""
    open: Callable[[], BinaryIO] | None
    """For originals of ``big_file_bytes`` or more: opens a fresh binary stream (OriginalChanged if it changed)."""
    error: str | None
    """One line saying why the original could not be fetched; then ``data`` and ``open`` are None."""
    content_type: str | None = None
    """S3's Content-Type, else guessed from the row's name (or path) with Python's own table; None if unknown."""


def failed(row: SourceRow, error: str) -> Original:
    """The Original of a row that could not be fetched."""
    return Original(row, 0, None, None, one_line(error), None)
