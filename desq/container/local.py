"""Containers in a local folder: resolving a key or path, and their external members."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from desq.container import Reader, open_container
from desq.container.errors import ContainerError, CorruptContainer
from desq.container.source import ByteSource, FileSource


def external_opener(folder: Path):  # noqa: ANN201 - returns an ExternalOpener
    """Open external members stored beside their container, refusing keys that leave ``folder``."""

    def open_external(key: str) -> ByteSource:
        parts = PurePosixPath(key).parts
        if not key or PurePosixPath(key).is_absolute() or any(p in ("..", "") for p in parts) or "\\" in key or "\x00" in key:
            raise CorruptContainer(f"external key {key!r} would leave the container's folder")
        try:
            return FileSource(folder.joinpath(*parts))
        except FileNotFoundError:
            raise ContainerError(f"external object {key!r} is missing from {folder}") from None

    return open_external


def resolve(target: str, archive_root: Path | None) -> Path:
    """A container given as a local path, or as a key under a local archive folder."""
    path = Path(target)
    if path.is_file():
        return path
    if archive_root is not None:
        key = PurePosixPath(target)
        if not key.is_absolute() and ".." not in key.parts:
            candidate = archive_root.joinpath(*key.parts)
            if candidate.is_file():
                return candidate
    raise ContainerError(f"no container at {target!r}" + (f" (nor under {archive_root})" if archive_root else ""))


@contextmanager
def open_local(path: Path) -> Iterator[Reader]:
    """Open a container file (v2 or DES v1) with its external members beside it."""
    try:
        source = FileSource(path)
    except OSError as exc:
        raise ContainerError(f"cannot open {path}: {exc.strerror}") from None
    try:
        yield open_container(source, external=external_opener(path.parent))
    finally:
        source.close()
