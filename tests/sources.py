"""Test helpers for containers: a source that counts storage requests, and quick builders."""

from __future__ import annotations

import io
from collections.abc import Iterable

from desq.container import BytesSource, ContainerWriter


class CountingSource(BytesSource):
    """A BytesSource that counts its calls: each one stands for one storage request."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.calls: list[tuple[str, int, int]] = []

    def read(self, offset: int, length: int) -> bytes:
        self.calls.append(("read", offset, length))
        return super().read(offset, length)

    def read_suffix(self, length: int) -> tuple[bytes, int]:
        self.calls.append(("suffix", -length, length))
        return super().read_suffix(length)


def build(members: Iterable[tuple[str, bytes]], **kwargs: object) -> bytes:
    """A v2 container holding ``members`` as (name, bytes)."""
    out = io.BytesIO()
    with ContainerWriter(out, **kwargs) as writer:  # type: ignore[arg-type]
        for name, data in members:
            writer.add(name, data)
    return out.getvalue()
