"""What readers of every container version report about a member."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Member:
    """One member as the index places it."""

    name: str
    size: int
    offset: int
    """Absolute offset of the member's first data byte in the container (0 when external)."""
    external: bool = False


@dataclass(frozen=True, slots=True)
class MemberMeta:
    """A member's stored metadata; fields a container version does not record are None."""

    name: str
    size: int
    content_type: str | None = None
    path: str | None = None
    created_at: datetime | None = None
    checksum: int | None = None
    """CRC32C of the member's bytes (format v2); None where the format has no checksum (v1)."""
    external_key: str | None = None


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing ``verify`` found wrong; ``name`` is None for container-wide damage."""

    name: str | None
    message: str

    def __str__(self) -> str:
        return f"{self.name}: {self.message}" if self.name is not None else self.message
