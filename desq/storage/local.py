"""The local-folder backend: atomic replace by temporary file, fsync and rename."""

from __future__ import annotations

import errno
import os
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from stat import S_ISDIR, S_ISLNK

from desq.fileio import pread_exactly
from desq.storage.base import InvalidKey, NotFound, ObjectInfo, PendingUpload, RangeError, StaleObject, Storage, StorageError, StorageUnavailable, Upload, check_key

TEMP_PREFIX = ".desq-upload-"
"""Uploads in progress are hidden files beside their target; list() never shows them."""


def _etag(stat: os.stat_result) -> str:
    return f"{stat.st_ino:x}-{stat.st_mtime_ns:x}-{stat.st_size:x}"


def _info(key: str, stat: os.stat_result) -> ObjectInfo:
    return ObjectInfo(key=key, size=stat.st_size, etag=_etag(stat), modified=datetime.fromtimestamp(stat.st_mtime, timezone.utc))


def _why(exc: OSError) -> str:
    """An OSError as one line naming its errno: "No space left on device (ENOSPC)"."""
    name = errno.errorcode.get(exc.errno or 0)
    return f"{exc.strerror} ({name})" if exc.strerror and name else str(exc)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _LocalUpload(Upload):
    def __init__(self, storage: LocalStorage, key: str, target: Path, *, staged: bool = False) -> None:
        self._storage = storage
        self._staged = staged
        self._key = key
        self._target = target
        target.parent.mkdir(parents=True, exist_ok=True)
        self._temp = target.with_name(f"{TEMP_PREFIX}{uuid.uuid4().hex}-{target.name}")
        self._file = open(self._temp, "xb")  # noqa: SIM115 - closed in commit/abort
        self._done = False

    def write(self, data: bytes | memoryview) -> int:
        if self._done:
            raise StorageError(f"upload of {self._key!r} is already finished")
        try:
            return self._file.write(data)
        except OSError as exc:
            self.abort()
            raise StorageError(f"writing {self._key!r} failed: {_why(exc)}") from exc

    def commit(self) -> ObjectInfo:
        if self._done:
            raise StorageError(f"upload of {self._key!r} is already finished")
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self._temp, self._target)
        except OSError as exc:
            self.abort()
            raise StorageError(f"storing {self._key!r} failed: {_why(exc)}") from exc
        self._done = True
        if self._staged:  # publish renames it within this folder, then syncs the folder
            return _info(self._key, self._target.stat())
        try:
            _fsync_dir(self._target.parent)
        except OSError as exc:
            # The new object is complete and visible; only its rename may not survive a crash.
            raise StorageError(f"stored {self._key!r} but could not make it durable: {_why(exc)}") from exc
        return _info(self._key, self._target.stat())

    def abort(self) -> None:
        self._done = True
        try:
            self._file.close()
        except OSError:
            pass
        try:
            self._temp.unlink()
        except FileNotFoundError:
            pass


class LocalStorage(Storage):
    """Objects as files under ``root``; keys map to paths below it and never above."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.url = self.root.resolve().as_uri()
        self._real_root = os.path.realpath(self.root)
        self._root_id: tuple[int, int] | None = None
        """(st_dev, st_ino) of the folder ``_real_root`` was resolved for: reads recheck it with one stat."""

    def path(self, key: str) -> Path:
        """The file that holds ``key``; InvalidKey if a symbolic link would take it outside the root."""
        check_key(key)
        if any(part.startswith(TEMP_PREFIX) for part in key.split("/")):
            raise InvalidKey(f"storage key {key!r} uses the reserved prefix {TEMP_PREFIX!r}")
        path = self.root.joinpath(*key.split("/"))
        if not self._inside(os.path.realpath(path)):
            raise InvalidKey(f"storage key {key!r} leads outside {self.url} through a symbolic link")
        return path

    def _inside(self, real: str) -> bool:
        for attempt in range(2):
            if attempt:  # the root may have been created, or the working directory changed, since
                self._real_root = os.path.realpath(self.root)
            if real == self._real_root or real.startswith(self._real_root.rstrip(os.sep) + os.sep):
                return True
        return False

    def _unlinked_path(self, key: str) -> str | None:
        """The file of ``key`` under the root's real path when no folder below the root is a
        symbolic link (one lstat a folder instead of a realpath of the whole path); None when
        one is, or the key is refused, so that ``path`` decides."""
        check_key(key)
        if any(part.startswith(TEMP_PREFIX) for part in key.split("/")):
            return None
        now = os.stat(self.root)
        if (now.st_dev, now.st_ino) != self._root_id:  # first read, or the root now names another folder
            self._real_root = os.path.realpath(self.root)
            self._root_id = (now.st_dev, now.st_ino)
        root = self._real_root.rstrip(os.sep)
        at = key.find("/")
        while at != -1:
            if S_ISLNK(os.lstat(f"{root}/{key[:at]}").st_mode):
                return None
            at = key.find("/", at + 1)
        return f"{root}/{key}"

    def _open(self, key: str, if_match: str | None) -> tuple[int, os.stat_result]:
        flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
        try:
            fast = self._unlinked_path(key)
            fd = -1
            if fast is not None:
                try:
                    fd = os.open(fast, flags | os.O_NOFOLLOW)  # the file itself a link: ELOOP, and path() decides
                except OSError as exc:
                    if exc.errno != errno.ELOOP:
                        raise
            if fd == -1:
                fd = os.open(self.path(key), flags)
        except FileNotFoundError:
            raise NotFound(f"no object {key!r} in {self.url}") from None
        except IsADirectoryError:
            raise NotFound(f"{key!r} in {self.url} is a folder, not an object") from None
        except OSError as exc:
            raise StorageError(f"cannot open {key!r}: {_why(exc)}") from exc
        stat = os.fstat(fd)
        if S_ISDIR(stat.st_mode):  # a folder opens for reading on Linux; it is no object
            os.close(fd)
            raise NotFound(f"{key!r} in {self.url} is a folder, not an object")
        if if_match is not None and _etag(stat) != if_match:
            os.close(fd)
            raise StaleObject(f"{key!r} changed since it was opened")
        return fd, stat

    @staticmethod
    def _pread(fd: int, key: str, offset: int, length: int, size: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError(f"bad range offset={offset} length={length}")
        if offset + length > size:
            raise RangeError(f"range {offset}+{length} runs past the end of {key!r} ({size} bytes)")
        data = pread_exactly(fd, offset, length)
        if data is None:
            raise RangeError(f"{key!r} ended before {offset + length}")
        return data

    def read(self, key: str, offset: int, length: int, *, if_match: str | None = None) -> bytes:
        fd, stat = self._open(key, if_match)
        try:
            return self._pread(fd, key, offset, length, stat.st_size)
        finally:
            os.close(fd)

    def read_suffix(self, key: str, length: int, *, if_match: str | None = None) -> tuple[bytes, ObjectInfo]:
        fd, stat = self._open(key, if_match)
        try:
            start = max(0, stat.st_size - length)
            return self._pread(fd, key, start, stat.st_size - start, stat.st_size), _info(key, stat)
        finally:
            os.close(fd)

    def head(self, key: str) -> ObjectInfo:
        fd, stat = self._open(key, None)
        os.close(fd)
        return _info(key, stat)

    def open_upload(self, key: str, *, content_type: str | None = None, staged: bool = False) -> Upload:
        try:
            return _LocalUpload(self, key, self.path(key), staged=staged)
        except OSError as exc:
            raise StorageError(f"cannot start writing {key!r}: {_why(exc)}") from exc

    def publish(self, staging: str, key: str) -> ObjectInfo:
        source, target = self.path(staging), self.path(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
            _fsync_dir(target.parent)
        except FileNotFoundError:
            raise NotFound(f"no object {staging!r} in {self.url} to publish") from None
        except OSError as exc:
            raise StorageError(f"cannot publish {staging!r} as {key!r}: {_why(exc)}") from exc
        return _info(key, target.stat())

    def delete(self, key: str) -> None:
        try:
            self.path(key).unlink()
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            raise StorageError(f"{key!r} is a folder, not an object") from None
        except OSError as exc:
            raise StorageError(f"cannot delete {key!r}: {_why(exc)}") from exc

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        folder, _, name = prefix.rpartition("/")
        start = self.root.joinpath(*folder.split("/")) if folder else self.root
        if folder:
            check_key(folder)
        for key in sorted(key for key in self._walk(start, name) if key.startswith(prefix)):
            stat = self._stat(key)
            if stat is not None:
                yield _info(key, stat)

    def folders(self, prefix: str = "") -> Iterator[str]:
        """One scan of the root; a folder counts once it holds a committed object (not only
        uploads in progress or empty folders), which is usually its first entry."""
        head, slash, _ = prefix.partition("/")
        matches = (lambda name: name == head) if slash else (lambda name: name.startswith(prefix))
        try:
            with os.scandir(self.root) as entries:
                names = [e.name for e in entries if matches(e.name) and not e.name.startswith(TEMP_PREFIX) and e.is_dir(follow_symlinks=False)]
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise StorageError(f"cannot list the folders of {self.url}: {_why(exc)}") from exc
        for name in sorted(names):
            if any(key.startswith(prefix) and self._stat(key) is not None for key in self._walk(self.root / name)):
                yield name

    def _walk(self, start: Path, first: str = "") -> Iterator[str]:
        """The keys of the files under ``start`` whose name there starts with ``first`` (and
        everything below such folders), unsorted, skipping uploads in progress (and not
        following links to folders)."""
        for dirpath, dirnames, filenames in os.walk(start):
            top = dirpath == str(start)
            dirnames[:] = [d for d in dirnames if not d.startswith(TEMP_PREFIX) and (not top or d.startswith(first))]
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                if not name.startswith(TEMP_PREFIX) and (not top or name.startswith(first)):
                    yield name if rel == "." else f"{rel}/{name}"

    def _stat(self, key: str) -> os.stat_result | None:
        """The file of a listed key; None if it was deleted meanwhile or links outside the root."""
        try:
            return self.path(key).stat()
        except (FileNotFoundError, InvalidKey):
            return None

    def probe(self) -> None:
        """A folder that is gone (a disk unmounted, a node removed) is a storage that is not there."""
        if not self.root.is_dir():
            raise StorageUnavailable(f"{self.url} is not a folder (gone or not mounted)", reason="the folder is gone")

    def uploads(self) -> Iterator[PendingUpload]:
        if not self.root.is_dir():
            return
        for path in sorted(self.root.rglob(f"{TEMP_PREFIX}*")):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue  # committed or aborted meanwhile
            target = path.name.removeprefix(TEMP_PREFIX).partition("-")[2]
            rel = path.parent.relative_to(self.root).as_posix()
            key = target if rel == "." else f"{rel}/{target}"
            yield PendingUpload(key=key, started=datetime.fromtimestamp(stat.st_mtime, timezone.utc), size=stat.st_size)

    def abort_stale_uploads(self, older_than_seconds: float) -> int:
        cutoff = time.time() - older_than_seconds
        removed = 0
        if not self.root.is_dir():
            return 0
        for path in self.root.rglob(f"{TEMP_PREFIX}*"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise StorageError(f"cannot remove abandoned upload {path}: {_why(exc)}") from exc
        return removed
