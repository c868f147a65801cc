"""The erasure-coded backend: every object as K data and M parity fragments on K+M node backends.

Layout, footer and names are ``desq.storage.ec_format``'s; the code is ``desq.storage.ec_codec``'s.
A read pinned to an ETag goes straight to the data fragment that holds its bytes (one request to
one node); a fragment that is missing, damaged or on a node that does not answer makes the read
degraded: the same byte range from any K other fragments, decoded. Nodes are asked in parallel.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import TypeVar

from desq.failpoints import failpoint
from desq.storage.base import (
    InvalidKey, NotFound, ObjectInfo, PendingUpload, RangeError, StaleObject, Storage, StorageError, StorageUnavailable, Upload,
    check_key,
)
from desq.storage import ec_recover
from desq.storage.ec_codec import Codec
from desq.storage.ec_format import (
    FOOTER_SIZE, Footer, FragmentError, Geometry, Segment, Version, fragment_key, open_blocks, parse_fragment_key, parse_marker_key,
)
from desq.storage.ec_recover import Leftover

T = TypeVar("T")

DOWN_SECONDS = 10.0
"""A node that did not answer is skipped by reads (they go degraded at once) for this long."""


class Events:
    """Counters of what reads met (a web app turns them into metrics)."""

    def __init__(self, on_event: Callable[[str, str], None] | None = None) -> None:
        self._listeners = [on_event] if on_event else []
        self._lock = threading.Lock()
        self.counts: dict[tuple[str, str], int] = {}

    def listen(self, on_event: Callable[[str, str], None]) -> None:
        """Call ``on_event(event, detail)`` on every event from now on."""
        self._listeners.append(on_event)

    def __call__(self, event: str, detail: str = "") -> None:
        with self._lock:
            self.counts[event, detail] = self.counts.get((event, detail), 0) + 1
        for listener in self._listeners:
            listener(event, detail)

    def total(self, event: str) -> int:
        with self._lock:
            return sum(n for (name, _), n in self.counts.items() if name == event)


def error_kind(exc: BaseException) -> str:
    """How a fragment read failed: missing, damaged or unreachable (the metrics' label)."""
    if isinstance(exc, NotFound):
        return "missing"
    if isinstance(exc, (FragmentError, RangeError)):
        return "damaged"
    return "unreachable"


def _version_id(key: str, node_key: str) -> bytes | None:
    """The version id a node key of ``key`` names (a fragment or a marker), else None."""
    if (marker := parse_marker_key(node_key)) is not None:
        return marker[1].id if marker[0] == key else None
    fragment = parse_fragment_key(node_key)
    return fragment[1] if fragment is not None and fragment[0] == key else None


def ec_of(storage: object) -> ECStorage | None:
    """The erasure-coded storage under ``storage`` (through wrappers such as CountingStorage), if any."""
    while storage is not None and not isinstance(storage, ECStorage):
        storage = getattr(storage, "inner", None)
    return storage


class ECStorage(Storage):
    """Objects erasure-coded over ``nodes`` (exactly K+M backends, fragment ``i`` on node ``i``)."""

    def __init__(self, nodes: list[Storage], k: int, m: int, *, cell: int = 1 << 20, block: int = 16 << 10,
                 on_event: Callable[[str, str], None] | None = None) -> None:
        self.geometry = Geometry(k, m, cell, block)
        if len(nodes) != k + m:
            raise StorageError(f"ec://{k}+{m} needs {k + m} nodes, got {len(nodes)}")
        self.nodes = nodes
        self.k, self.m = k, m
        self.url = f"ec://{k}+{m}"
        self.codec = Codec(k, m)
        self.events = Events(on_event)
        self._pools: tuple[int, ThreadPoolExecutor, ThreadPoolExecutor] | None = None
        self._down_until = [0.0] * (k + m)
        self._failed_at = [float("-inf")] * (k + m)
        self._staged: dict[str, Version] = {}
        """Staged writes of this process not yet published: their versions (they have no marker)."""

    # --- nodes ------------------------------------------------------------------------------

    def _executors(self) -> tuple[ThreadPoolExecutor, ThreadPoolExecutor]:
        """The pool for requests to nodes (nothing run there waits on it again) and the pool for
        the segments of a read that spans cells; made again in a forked child (a Celery pool
        process), whose copies of the parent's threads do not exist."""
        pools = self._pools
        if pools is None or pools[0] != os.getpid():
            n = len(self.nodes)
            pools = self._pools = (os.getpid(), ThreadPoolExecutor(4 * n, "desq-ec-node"), ThreadPoolExecutor(16, "desq-ec-read"))
        return pools[1], pools[2]

    def _each(self, fn: Callable[[int], T], indices: Iterable[int]) -> dict[int, T | BaseException]:
        """``fn(i)`` for every node index, in parallel: its result, or the exception it raised."""
        order = list(indices)

        def run(i: int) -> T | BaseException:
            try:
                return fn(i)
            except Exception as exc:  # noqa: BLE001 - each node's failure is an answer of its own
                return exc

        if len(order) == 1:
            return {order[0]: run(order[0])}
        return dict(zip(order, self._executors()[0].map(run, order)))

    def _note_down(self, i: int, exc: BaseException) -> None:
        self._failed_at[i] = time.monotonic()  # asked last by degraded reads for a while (a node folder gone: NotFound each time)
        if error_kind(exc) == "unreachable":
            self._down_until[i] = time.monotonic() + DOWN_SECONDS

    def _up(self, i: int) -> bool:
        return self._down_until[i] <= time.monotonic()

    def node_states(self) -> list[tuple[str, str | None]]:
        """Each node's url and why it does not answer (None when it does): one request each."""
        away = self._away()
        return [(node.url, str(away[i]) if i in away else None) for i, node in enumerate(self.nodes)]

    # --- versions ---------------------------------------------------------------------------

    def _listing(self, prefix: str) -> tuple[dict[int, list[str]], dict[int, BaseException]]:
        """Every node's keys under ``prefix``, and the nodes that did not answer."""
        answers = self._each(lambda i: [info.key for info in self.nodes[i].list(prefix)], range(len(self.nodes)))
        keys = {i: a for i, a in answers.items() if not isinstance(a, BaseException)}
        failed = {i: a for i, a in answers.items() if isinstance(a, BaseException)}
        for i, exc in failed.items():
            self._note_down(i, exc)
        return keys, failed

    def _away(self) -> dict[int, BaseException]:
        """The nodes that are not there (a folder gone lists as empty: only a probe tells)."""
        probes = self._each(lambda i: self.nodes[i].probe(), range(len(self.nodes)))
        return {i: exc for i, exc in probes.items() if isinstance(exc, BaseException)}

    def _unlisted(self, what: str, failed: dict[int, BaseException]) -> StorageUnavailable:
        reasons = "; ".join(f"node {i} ({self.nodes[i].url}): {getattr(exc, 'reason', exc)}" for i, exc in sorted(failed.items()))
        return StorageUnavailable(f"{what}: more than M={self.m} nodes do not answer ({reasons})", reason=f"{len(failed)} of {len(self.nodes)} nodes do not answer")

    def marked(self, key: str) -> dict[Version, set[int]]:
        """The committed versions of ``key`` and the nodes holding each one's marker (one listing
        on each node); StorageUnavailable when more than M nodes do not answer."""
        check_key(key)
        keys, failed = self._listing(f"{key}~")
        if len(failed) > self.m:  # fewer than K answer: nothing could be read, whatever they hold
            raise self._unlisted(f"looking up {key!r} in {self.url}", failed)
        found: dict[Version, set[int]] = {}
        for i, node_keys in keys.items():
            for node_key in node_keys:
                if (parsed := parse_marker_key(node_key)) is not None and parsed[0] == key:
                    found.setdefault(parsed[1], set()).add(i)
        return found

    def _current(self, key: str) -> Version:
        """The version readers see now; NotFound if there is none."""
        staged = self._staged.get(key)
        if staged is not None:
            return staged
        found = self.marked(key)
        if not found or (current := max(found)).deleted:
            raise NotFound(f"no object {key!r} in {self.url}")
        return current

    def _pinned(self, key: str, if_match: str | None) -> Version:
        check_key(key)
        if if_match is None:
            return self._current(key)
        version = Version.from_etag(if_match)
        if version is None or version.deleted:
            raise StaleObject(f"{key!r} changed since it was opened (its version {if_match!r} is not one of {self.url})")
        return version

    def _info(self, key: str, version: Version) -> ObjectInfo:
        return ObjectInfo(key=key, size=version.length, etag=version.etag, modified=datetime.fromtimestamp(version.started, timezone.utc))

    def _geometry(self, version: Version) -> Geometry:
        if (version.cell, version.block) == (self.geometry.cell, self.geometry.block):
            return self.geometry
        try:
            return Geometry(self.k, self.m, version.cell, version.block)
        except ValueError as exc:
            raise StorageError(f"version {version.etag}: {exc}") from None

    # --- reads ------------------------------------------------------------------------------

    def fragment_range(self, i: int, key: str, version: Version, at: int, size: int) -> bytes:
        """Bytes [at, at + size) of fragment ``i``, every block checked (one request to node ``i``)."""
        geometry = self._geometry(version)
        span = geometry.blocks(geometry.fragment_length(version.length), at, size)
        stored = self.nodes[i].read(fragment_key(key, version.id), span.start, span.stored)
        return open_blocks(stored, span, geometry.block, version.id, i)

    def _segment(self, key: str, version: Version, segment: Segment) -> bytes:
        i = segment.index
        if self._up(i):
            try:
                return self.fragment_range(i, key, version, segment.at, segment.size)
            except (StorageError, FragmentError) as exc:
                if isinstance(exc, (StaleObject, InvalidKey)):
                    raise
                self._note_down(i, exc)
                self.events("fragment_error", error_kind(exc))
                failed: dict[int, BaseException] = {i: exc}
        else:
            failed = {i: StorageUnavailable(f"node {i} did not answer lately")}
        return self._degraded(key, version, segment, failed)

    def _degraded(self, key: str, version: Version, segment: Segment, failed: dict[int, BaseException]) -> bytes:
        """The segment from any K other fragments' same range, decoded."""
        have = self.gather(key, version, segment.at, segment.size, failed)
        self.events("degraded_read")
        return self.codec.data(have)[segment.index]

    def gather(self, key: str, version: Version, at: int, size: int, failed: dict[int, BaseException]) -> dict[int, bytes]:
        """Fragment range [at, at + size) from K fragments not in ``failed`` (which gets those
        that fail on the way); the error of ``_unreadable`` when fewer than K can be read."""
        candidates = sorted((i for i in range(len(self.nodes)) if i not in failed), key=lambda i: (not self._up(i), self._failed_at[i] > time.monotonic() - DOWN_SECONDS))
        have: dict[int, bytes] = {}
        while len(have) < self.k and candidates:
            batch, candidates = candidates[: self.k - len(have)], candidates[self.k - len(have) :]
            for i, got in self._each(lambda i: self.fragment_range(i, key, version, at, size), batch).items():
                if isinstance(got, BaseException):
                    if isinstance(got, (StaleObject, InvalidKey)):
                        raise got
                    self._note_down(i, got)
                    self.events("fragment_error", error_kind(got))
                    failed[i] = got
                else:
                    have[i] = got
        if len(have) < self.k:
            raise self._unreadable(key, version, failed)
        return have

    def _unreadable(self, key: str, version: Version, failed: dict[int, BaseException]) -> StorageError:
        if all(isinstance(exc, NotFound) for exc in failed.values()):
            try:
                now = self._current(key)
            except NotFound:
                return NotFound(f"no object {key!r} in {self.url} (it was deleted since it was opened)")
            except StorageError:
                now = version
            if now != version:
                return StaleObject(f"{key!r} changed since it was opened")
        reasons = "; ".join(f"fragment {i}: {getattr(exc, 'reason', exc)}" for i, exc in sorted(failed.items()))
        return StorageUnavailable(
            f"reading {key!r} from {self.url}: {len(failed)} of {len(self.nodes)} fragments unreadable, {self.k} needed ({reasons})",
            reason=f"only {len(self.nodes) - len(failed)} of {len(self.nodes)} fragments readable, {self.k} needed",
        )

    def read(self, key: str, offset: int, length: int, *, if_match: str | None = None) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError(f"bad range offset={offset} length={length}")
        version = self._pinned(key, if_match)
        if offset + length > version.length:
            raise RangeError(f"range {offset}+{length} runs past the end of {key!r} ({version.length} bytes)")
        if length == 0:
            return b""
        segments = self._geometry(version).segments(version.length, offset, length)
        if len(segments) == 1:
            return self._segment(key, version, segments[0])
        return b"".join(self._executors()[1].map(lambda s: self._segment(key, version, s), segments))

    def read_suffix(self, key: str, length: int, *, if_match: str | None = None) -> tuple[bytes, ObjectInfo]:
        version = self._pinned(key, if_match)
        start = max(0, version.length - max(0, length))
        return self.read(key, start, version.length - start, if_match=version.etag), self._info(key, version)

    def head(self, key: str) -> ObjectInfo:
        return self._info(key, self._current(key))

    def footer(self, i: int, key: str, version: Version) -> Footer:
        """Fragment ``i``'s footer, checked against the version it should belong to."""
        footer = self._footer_of(i, key, version.id)
        if footer.length != version.length or (footer.cell, footer.block) != (version.cell, version.block):
            raise FragmentError(f"its footer says {footer.length} bytes in cells of {footer.cell}, its marker {version.length} in {version.cell}")
        return footer

    def _footer_of(self, i: int, key: str, version: bytes) -> Footer:
        data, info = self.nodes[i].read_suffix(fragment_key(key, version), FOOTER_SIZE)
        footer = Footer.parse(data)
        if (footer.version, footer.index, footer.k, footer.m) != (version, i, self.k, self.m):
            raise FragmentError(f"its footer names fragment {footer.index} of {footer.k}+{footer.m} of another version")
        if info.size != footer.geometry().stored_size(footer.length):
            raise FragmentError(f"{info.size} bytes stored, {footer.geometry().stored_size(footer.length)} expected")
        return footer

    # --- writes -----------------------------------------------------------------------------

    def open_upload(self, key: str, *, content_type: str | None = None, staged: bool = False) -> Upload:
        from desq.storage.ec_write import CodedUpload

        check_key(key)
        return CodedUpload(self, key, staged)

    def _mark(self, key: str, version: Version, on: Iterable[int]) -> list[int]:
        """Store the commit marker on nodes ``on``; the nodes that took it."""
        def mark(i: int) -> None:
            self.nodes[i].put(version.marker(key), b"")
            failpoint("ec.marked")
        done = self._each(mark, on)
        return [i for i, got in done.items() if not isinstance(got, BaseException)]

    def _drop(self, key: str, older_than: Version | None = None,
              listing: tuple[dict[int, list[str]], dict[int, BaseException]] | None = None) -> dict[int, BaseException]:
        """Delete the markers, then the fragments, of every version of ``key`` (with
        ``older_than``: of the versions older than it) on every node that answers, as ``listing``
        (else a new one) shows them; the nodes that did not (``recover`` clears what they keep)."""
        keys, failed = listing or self._listing(f"{key}~")
        doomed: dict[int, list[str]] = {}
        for i, node_keys in keys.items():
            for node_key in node_keys:
                vid = _version_id(key, node_key)
                if vid is None or (older_than is not None and vid >= older_than.id):
                    continue
                if parse_marker_key(node_key) is not None:
                    doomed.setdefault(i, []).insert(0, node_key)
                else:
                    doomed.setdefault(i, []).append(node_key)
        gone = self._each(lambda i: [self.nodes[i].delete(k) for k in doomed[i]], doomed)
        return failed | {i: exc for i, exc in gone.items() if isinstance(exc, BaseException)}

    def publish(self, staging: str, key: str) -> ObjectInfo:
        """Rename each fragment of the staged version; mark it under ``key`` once K+1 are there."""
        remembered = self._staged.pop(staging, None)
        version = remembered or self._current(staging)
        check_key(fragment_key(key, version.id))
        def move(i: int) -> None:
            self.nodes[i].publish(fragment_key(staging, version.id), fragment_key(key, version.id))
            failpoint("ec.fragment_moved")
        moved = self._each(move, range(len(self.nodes)))
        there = [i for i, got in moved.items() if not isinstance(got, BaseException)]

        def undo() -> None:  # the staged object as it was: its fragments back, remembered again
            self._each(lambda i: self.nodes[i].publish(fragment_key(key, version.id), fragment_key(staging, version.id)), there)
            if remembered is not None:
                self._staged[staging] = remembered

        if len(there) < self.k + 1:
            undo()
            reasons = "; ".join(f"node {i}: {getattr(exc, 'reason', exc)}" for i, exc in moved.items() if isinstance(exc, BaseException))
            raise StorageError(f"publishing {staging!r} as {key!r}: only {len(there)} fragments moved, {self.k + 1} needed ({reasons})")
        marked = self._mark(key, version, range(len(self.nodes)))
        if len(marked) < self.k + 1:
            self._each(lambda i: self.nodes[i].delete(version.marker(key)), marked)
            undo()
            raise StorageError(f"publishing {staging!r} as {key!r}: only {len(marked)} nodes took the commit marker, {self.k + 1} needed")
        self._drop(key, older_than=version)
        if remembered is None:  # a marked object, not this process's staged write
            self._each(lambda i: self.nodes[i].delete(version.marker(staging)), range(len(self.nodes)))
        return self._info(key, version)

    def delete(self, key: str) -> None:
        """Markers first, then fragments, on every node. While a node is away, a deletion marker
        stored first on more than max(K, M) others hides what it keeps (``recover`` clears both)."""
        check_key(key)
        self._staged.pop(key, None)
        keys, unlisted = self._listing(f"{key}~")
        failed = unlisted | self._away()
        if len(failed) > self.m:  # the object may still be whole on the nodes that did not answer
            raise self._unlisted(f"deleting {key!r}", failed)
        held = [v for node_keys in keys.values() for node_key in node_keys if (v := _version_id(key, node_key)) is not None]
        if not held:  # a committed version is marked on K+1 nodes: one that answers would list it
            return
        if not failed:
            failed = self._drop(key, listing=(keys, unlisted)) | self._away()  # a folder unmounted meanwhile "deletes" nothing
            if not failed:
                return
        need, present = max(self.k, self.m) + 1, sorted(set(range(len(self.nodes))) - set(failed))
        if len(present) < need:
            raise StorageUnavailable(f"deleting {key!r}: {len(failed)} of {len(self.nodes)} nodes away, and its deletion marker needs {need}; "
                                     "delete it again once they answer", reason=f"{len(failed)} of {len(self.nodes)} nodes do not answer")
        deletion = Version.deletion(after=max(held))
        marked = self._mark(key, deletion, present)
        if len(marked) < need:
            undone = self._each(lambda i: self.nodes[i].delete(deletion.marker(key)), marked)
            partly = " (it may read as deleted meanwhile)" if any(isinstance(u, BaseException) for u in undone.values()) else ""
            raise StorageUnavailable(f"deleting {key!r}: only {len(marked)} nodes took its deletion marker, {need} needed; delete it again{partly}",
                                     reason=f"{len(self.nodes) - len(marked)} of {len(self.nodes)} nodes do not answer")
        self._drop(key, older_than=deletion, listing=(keys, unlisted))

    # --- listing ----------------------------------------------------------------------------

    def _versions(self, prefix: str) -> tuple[dict[str, dict[Version, set[int]]], dict[str, dict[bytes, set[int]]]]:
        """Under ``prefix``: each object's marked versions (deletions too) and each version's
        fragments, with the nodes that hold them (StorageUnavailable if more than M nodes do not answer)."""
        marked, fragments, _ = self._collect(prefix)
        return marked, fragments

    def _versions_answered(self, prefix: str) -> tuple[dict[str, dict[Version, set[int]]], dict[str, dict[bytes, set[int]]], bool]:
        """``_versions`` and whether every node answered and is there."""
        marked, fragments, failed = self._collect(prefix)
        return marked, fragments, not failed and not self._away()

    def _collect(self, prefix: str) -> tuple[dict[str, dict[Version, set[int]]], dict[str, dict[bytes, set[int]]], dict[int, BaseException]]:
        keys, failed = self._listing(prefix)
        if len(failed) > self.m:
            raise self._unlisted(f"listing {self.url}/{prefix}", failed)
        marked: dict[str, dict[Version, set[int]]] = {}
        fragments: dict[str, dict[bytes, set[int]]] = {}
        for i, node_keys in keys.items():
            for node_key in node_keys:
                if (marker := parse_marker_key(node_key)) is not None:
                    if marker[0].startswith(prefix):
                        marked.setdefault(marker[0], {}).setdefault(marker[1], set()).add(i)
                elif (fragment := parse_fragment_key(node_key)) is not None and fragment[0].startswith(prefix):
                    fragments.setdefault(fragment[0], {}).setdefault(fragment[1], set()).add(i)
        return marked, fragments, failed

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        marked, _ = self._versions(prefix)
        for key in sorted(marked):
            if not (current := max(marked[key])).deleted:
                yield self._info(key, current)

    def folders(self, prefix: str = "") -> Iterator[str]:
        """The folders any answering node has under ``prefix`` (a folder whose only objects are a
        killed write's fragments counts until ``recover`` clears them)."""
        answers = self._each(lambda i: list(self.nodes[i].folders(prefix)), range(len(self.nodes)))
        failed = {i: a for i, a in answers.items() if isinstance(a, BaseException)}
        if len(failed) > self.m:
            raise self._unlisted(f"listing the folders of {self.url}/{prefix}", failed)
        yield from sorted({f for a in answers.values() if not isinstance(a, BaseException) for f in a})

    def leftovers(self, prefix: str = "") -> Iterator[Leftover]:
        """What no reader uses: killed writes' fragments and superseded versions (``ec_recover``)."""
        return ec_recover.leftovers(self, prefix)

    def uploads(self) -> Iterator[PendingUpload]:
        return ec_recover.uploads(self)

    def roll_forward(self, older_than_seconds: float, prefix: str = "") -> list[str]:
        """Finish the commits and publishes writers were killed in; the keys it finished."""
        return ec_recover.roll_forward(self, older_than_seconds, prefix)

    def abort_stale_uploads(self, older_than_seconds: float) -> int:
        return ec_recover.abort_stale(self, older_than_seconds)
