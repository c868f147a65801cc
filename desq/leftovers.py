"""Leftovers: what packers leave on the archive storage when they crash or lose their lease.

Three kinds, none of them ever read by anyone: *staging* objects (``<key>.staging-<token>``,
written and never published), *uploads* never committed (local ``.desq-upload-*`` files, S3
multipart uploads) and *big files* (``<key>.big/<digest>``) that the container ``<key>`` does not
reference. They are garbage, not damage: every member of every container still reads.

A packer at work right now also has a staging object, an upload and big files no container
references yet, so ``remove_big_files`` removes only those older than a threshold whose container
no live lease covers, checked again just before each delete.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from desq.archive import Archive
from desq.pipeline.pack import STAGING
from desq.storage import NotFound, ObjectInfo, PendingUpload, Storage, join_key

if TYPE_CHECKING:
    from desq.pipeline.lease import Leases

SAFE_AGE = timedelta(hours=6)
"""Leftovers younger than this (or than twice the lease time) may be a packer's work in progress."""

BIG = ".big"
"""Big members of ``<key>`` are stored under ``<key>.big/`` (``archive.external_key_for``)."""


def safe_age(lease_seconds: float, older_than: timedelta = SAFE_AGE) -> timedelta:
    """The age past which ``desq recover`` removes a big file: ``older_than``, and twice the lease time."""
    return max(older_than, timedelta(seconds=2 * lease_seconds))


def owner(key: str) -> tuple[str, str] | None:
    """``(kind, container key)`` of a staging object or big file; None for any other key."""
    folder, _, name = key.rpartition("/")
    if STAGING in name:
        return "staging", key.rpartition(STAGING)[0]
    parent, _, holder = folder.rpartition("/")
    if holder.endswith(BIG) and len(holder) > len(BIG):
        return "big file", f"{parent}/{holder[: -len(BIG)]}" if parent else holder[: -len(BIG)]
    return None


@dataclass(frozen=True)
class Leftover:
    """One object (or upload) no container needs."""

    key: str
    kind: str
    """``staging``, ``upload`` or ``big file``."""
    container: str
    size: int | None
    modified: datetime | None

    def age(self, now: datetime) -> timedelta | None:
        return None if self.modified is None else now - self.modified

    def line(self, now: datetime, young: timedelta) -> str:
        """``leftover 20251120/FE.des.staging-1f: staging object of 20251120/FE.des, 3 bytes, 7h2m old``"""
        age = self.age(now)
        size = "size unknown" if self.size is None else f"{self.size:,} bytes"
        what = {"staging": "staging object", "upload": "upload never committed", "big file": "big file no container references"}[self.kind]
        text = f"leftover {self.key}: {what} (of {self.container}), {size}, {'age unknown' if age is None else human(age) + ' old'}"
        return text + (" (young: a packer may be writing it)" if age is not None and age < young else "")


def human(age: timedelta) -> str:
    """``45s``, ``12m5s``, ``7h2m``, ``3d4h``."""
    s = max(0, int(age.total_seconds()))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"


def find(objects: Iterable[ObjectInfo], uploads: Iterable[PendingUpload], references: Mapping[str, frozenset[str] | None]) -> list[Leftover]:
    """The leftovers among ``objects`` and ``uploads``, by key.

    ``references`` maps each container key to the keys of the big files its index references, or
    to None when that is unknown (it could not be read): its big files are then never leftovers.
    """
    found = [Leftover(u.key, "upload", (owner(u.key) or ("", u.key))[1], u.size, u.started) for u in uploads]
    for info in objects:
        kind = owner(info.key)
        if kind is None:
            continue
        what, container = kind
        if what == "big file" and container in references:
            refs = references[container]
            if refs is None or info.key in refs:
                continue
        found.append(Leftover(info.key, what, container, info.size, info.modified))
    return sorted(found, key=lambda f: (f.key, f.kind))


def references(storage: Storage, keys: Iterable[str]) -> frozenset[str] | None:
    """The big-file keys the containers at ``keys`` reference (a missing one references nothing);
    None when one of them cannot be read."""
    refs: set[str] = set()
    archive = Archive(storage, cache_bytes=0)
    for key in keys:
        try:
            reader = archive.open(key)
            refs.update(join_key(key, reader.meta(m.name).external_key or "") for m in reader.members() if m.external)
        except NotFound:
            continue
        except Exception:  # noqa: BLE001 - unreadable: what it references is unknown, so keep it all
            return None
    return frozenset(refs)


def remove_big_files(storage: Storage, leases: Leases, older_than: timedelta) -> list[str]:
    """Delete big files that neither their container nor any staging object of it references,
    older than ``older_than``, while no packer holds the lease on that container; the keys removed."""
    groups: dict[str, list[str]] = {}
    staging: dict[str, list[str]] = {}
    for info in storage.list():
        kind = owner(info.key)
        if kind is not None:
            (groups if kind[0] == "big file" else staging).setdefault(kind[1], []).append(info.key)
    removed: list[str] = []
    for container, keys in sorted(groups.items()):
        if leases.live_token(f"pack:{container}") is not None:
            continue
        refs = references(storage, [container, *staging.get(container, [])])
        if refs is None:
            continue
        for key in sorted(set(keys) - refs):
            if not _old(storage, key, older_than) or leases.live_token(f"pack:{container}") is not None:
                continue
            storage.delete(key)
            removed.append(key)
    return removed


def _old(storage: Storage, key: str, older_than: timedelta) -> bool:
    """Whether ``key`` is still there, last written more than ``older_than`` ago."""
    try:
        modified = storage.head(key).modified
    except NotFound:
        return False
    return modified is not None and modified < datetime.now(timezone.utc) - older_than
