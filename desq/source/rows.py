"""A row of the source table as the packer sees it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime


@dataclass(frozen=True, slots=True)
class SourceRow:
    """One file to pack: its source row's id, its name in the container, where its original is."""

    id: object
    """The row's id as the database returned it (an int or a string)."""
    name: str
    """Its name inside the container: ``des_name`` (name mode) or the uid as text (uid mode)."""
    created_at: datetime | date | None
    path: str
    """Where the original is: a local path (relative ones under ``source.root``) or s3://bucket/key."""
    date: date
    shard: int
