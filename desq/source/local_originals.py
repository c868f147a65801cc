"""Local originals: the path jail (relative paths stay under the source root) and reading them."""

from __future__ import annotations

import errno
import functools
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from desq.source.mime import guess_content_type
from desq.source.original import FetchError, Original, OriginalChanged, failed
from desq.source.rows import SourceRow

if TYPE_CHECKING:
    from desq.source.readahead import Run

_OS_REASONS = {
    errno.ENOENT: "no such file",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EISDIR: "is a directory",
    errno.ENOTDIR: "a parent of it is not a directory",
    errno.ELOOP: "too many levels of symbolic links",
    errno.ENAMETOOLONG: "name too long",
}
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)  # a FIFO must not block
_PARENTS_CACHED = 65536


class _RowFailed(Exception):
    """A per-row failure found after the reservation (its message is the row's error)."""


def os_message(shown: str, exc: OSError) -> str:
    """One line for a failed file operation on ``shown``: its path and a plain reason."""
    reason = _OS_REASONS.get(exc.errno or 0) or exc.strerror or type(exc).__name__
    return f"{shown!r}: {reason}"


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


class LocalOriginals:
    """Originals on a local file system: absolute paths as they are, relative ones under ``root``."""

    def __init__(self, root: str = "") -> None:
        self.root_real: str | None = None
        if root:
            real = os.path.realpath(root)
            if not os.path.isdir(real):
                raise FetchError(f"source root {root!r} is not a directory")
            self.root_real = real
        self._parents: dict[str, str] = {}  # a relative parent folder -> its checked real path

    def resolve(self, path: str) -> Path:
        """The file a local path names: absolute as is, relative under the root and never outside it."""
        if not isinstance(path, str) or not path:
            raise FetchError("empty path refused")
        if "\x00" in path:
            raise FetchError(f"path {path!r} refused: it contains a NUL byte")
        if os.path.isabs(path):
            return Path(path)
        if self.root_real is None:
            raise FetchError(f"relative path {path!r} refused: no source root is set")
        real = os.path.realpath(os.path.join(self.root_real, path))
        if not _inside(real, self.root_real):
            raise FetchError(f"path {path!r} refused: it leads outside the source root")
        return Path(real)

    def open_fd(self, path: str) -> int:
        """A read-only fd of a local original, with resolve's refusals.

        The real path of each parent folder is checked once per instance; the last component is
        opened with O_NOFOLLOW, so only a symlink there costs a whole resolve.
        """
        root = self.root_real
        if root is not None and isinstance(path, str) and path and "\x00" not in path and not os.path.isabs(path):
            parent, base = os.path.split(path)
            if base not in ("", ".", ".."):
                real_parent = self._parents.get(parent)
                if real_parent is None:
                    real_parent = os.path.realpath(os.path.join(root, parent))
                    if not _inside(real_parent, root):
                        raise FetchError(f"path {path!r} refused: it leads outside the source root")
                    if os.path.isdir(real_parent):
                        if len(self._parents) >= _PARENTS_CACHED:
                            self._parents.clear()
                        self._parents[parent] = real_parent
                try:
                    return os.open(os.path.join(real_parent, base), _OPEN_FLAGS | os.O_NOFOLLOW)
                except OSError as exc:
                    if exc.errno != errno.ELOOP:
                        raise
        return os.open(self.resolve(path), _OPEN_FLAGS)

    def fetch(self, run: Run, index: int, row: SourceRow, big_file_bytes: int) -> tuple[Original, int]:
        """Row ``index``'s Original and the bytes it reserved in ``run``."""
        shown = row.path
        try:
            fd = self.open_fd(shown)
        except FetchError as exc:
            return failed(row, str(exc)), 0
        except OSError as exc:
            return failed(row, os_message(shown, exc)), 0
        try:
            info = os.fstat(fd)
            if stat.S_ISDIR(info.st_mode):
                return failed(row, f"{shown!r}: is a directory"), 0
            if not stat.S_ISREG(info.st_mode):
                return failed(row, f"{shown!r}: not a regular file"), 0
            size = info.st_size
            content_type = guess_content_type(row.name, shown)
            if size >= big_file_bytes:
                opener = functools.partial(_open_local, str(self.resolve(shown)), size, shown)
                return Original(row, size, None, opener, None, content_type), 0
            run.reserve(index, size)
            try:
                data = _read_exactly(fd, size, shown)
            except (OSError, _RowFailed) as exc:
                run.release(size)
                message = os_message(shown, exc) if isinstance(exc, OSError) else str(exc)
                return failed(row, message), 0
            return Original(row, size, data, None, None, content_type), size
        except OSError as exc:
            return failed(row, os_message(shown, exc)), 0
        except FetchError as exc:
            return failed(row, str(exc)), 0
        finally:
            os.close(fd)

    def delete(self, path: str) -> None:
        """Delete a local original (a symlink itself, not its target); already gone is fine."""
        self.resolve(path)  # the refusals
        named = path if os.path.isabs(path) else os.path.join(self.root_real or "", path)
        try:
            os.unlink(named)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise FetchError(f"deleting {os_message(path, exc)}") from exc


def _open_local(path: str, size: int, shown: str) -> BinaryIO:
    """A big local original's stream, refused if its size is no longer the one fetch() saw."""
    try:
        stream = open(path, "rb")  # noqa: SIM115 - the caller closes it
    except OSError as exc:
        raise OriginalChanged(os_message(shown, exc)) from exc
    now = os.fstat(stream.fileno()).st_size
    if now != size:
        stream.close()
        raise OriginalChanged(f"{shown!r}: now {now} bytes, {size} when it was fetched")
    return stream


def _read_exactly(fd: int, size: int, shown: str) -> bytes:
    """``size`` bytes from ``fd``; _RowFailed if the file is now shorter or longer."""
    chunks: list[bytes] = []
    got = 0
    while got < size:
        chunk = os.read(fd, min(size - got, 1 << 30))
        if not chunk:
            raise _RowFailed(f"{shown!r}: read {got} of {size} bytes (the file shrank while it was read)")
        chunks.append(chunk)
        got += len(chunk)
    if os.read(fd, 1):
        raise _RowFailed(f"{shown!r}: the file grew past its {size} bytes while it was read")
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)  # one read is the rule: no copy
