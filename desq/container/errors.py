"""The exceptions of the container code; every damaged input ends in one of these."""

from __future__ import annotations

from desq.errors import ContainerError, CorruptContainer

__all__ = ["ChecksumMismatch", "ContainerError", "CorruptContainer", "MemberNotFound", "WriterError"]


class ChecksumMismatch(CorruptContainer):
    """A member's bytes failed their checksum; none of them may be returned."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"member {name!r}: {message}")
        self.name = name


class MemberNotFound(ContainerError, LookupError):
    """No member of that name in the container."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no member {name!r} in the container")
        self.name = name


class WriterError(ContainerError):
    """The writer refused its input (empty, duplicate or invalid name, wrong size, ...)."""
