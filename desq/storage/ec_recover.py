"""Recovery for the erasure-coded backend: what killed writers left, finished or cleared.

A version with K+1 fragments stored is committed, marked or not; one with fewer was never
visible. ``desq recover`` calls ``ECStorage.abort_stale_uploads``, which lands here.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from desq.storage.base import PendingUpload
from desq.storage.ec_format import Footer, Version, fragment_key, parse_fragment_key, parse_marker_key, version_time

if TYPE_CHECKING:
    from desq.storage.ec import ECStorage


@dataclass(frozen=True, slots=True)
class Leftover:
    """Fragments (or a commit marker) of a version no reader uses, and the nodes holding them."""

    key: str
    version: bytes
    nodes: list[int]
    superseded: bool
    marker: Version | None = None
    """Set when this is an old version's commit marker, not fragments."""


def leftovers(ec: ECStorage, prefix: str = "") -> Iterator[Leftover]:
    """What no reader uses: killed writes' fragments (never marked), superseded versions (older
    than the current one: a replace that died before deleting them, or a deleted object's that a
    node kept while it was away) and deletion markers that hide nothing any more."""
    marked, fragments, everywhere = ec._versions_answered(prefix)
    for key in sorted(set(marked) | set(fragments)):
        versions = marked.get(key, {})
        newest = max(versions) if versions else None
        current = newest.id if newest else None
        for version, nodes in sorted(versions.items()):
            if version.id != current:
                yield Leftover(key, version.id, sorted(nodes), superseded=True, marker=version)
        for vid, nodes in sorted(fragments.get(key, {}).items()):
            if vid != current:
                yield Leftover(key, vid, sorted(nodes), superseded=current is not None and vid < current)
        # Last for its key: whoever deletes the rest first (every node answered) may then drop it.
        if newest is not None and newest.deleted and everywhere and all(vid < newest.id for vid in fragments.get(key, {})):
            yield Leftover(key, newest.id, sorted(versions[newest]), superseded=True, marker=newest)


def uploads(ec: ECStorage) -> Iterator[PendingUpload]:
    """The nodes' unfinished uploads and the unmarked versions, each under its object's key."""
    for node in ec.nodes:
        for pending in node.uploads():
            parsed = parse_fragment_key(pending.key) or parse_marker_key(pending.key)
            if parsed is not None:
                yield PendingUpload(key=parsed[0], started=pending.started, size=pending.size)
    for left in leftovers(ec):
        if not left.superseded:
            yield PendingUpload(key=left.key, started=datetime.fromtimestamp(version_time(left.version), timezone.utc))


def roll_forward(ec: ECStorage, older_than_seconds: float, prefix: str = "") -> list[str]:
    """Finish the commits and publishes that writers were killed in; the keys it finished.

    A newer version never marked (a kill between its K+1 fragments and its marker), once older than
    ``older_than_seconds``, gets its markers and becomes the current one, and the current version
    gets its marker on every node that lacks it, so that no single lost node hides it. A version id
    names one write, so its fragments under another key are a publish's renames that a kill cut
    short: they are renamed to the key the version is committed under."""
    marked, fragments = ec._versions(prefix)
    elsewhere: dict[bytes, dict[str, set[int]]] = {}
    for key, versions in fragments.items():
        for vid, holders in versions.items():
            elsewhere.setdefault(vid, {})[key] = holders
    cutoff = time.time() - older_than_seconds
    everywhere = set(range(len(ec.nodes))) - set(ec._away())  # a folder node that is gone would be made again
    done: list[str] = []
    for key in sorted(set(marked) | set(fragments)):
        versions = marked.get(key, {})
        current = max(versions) if versions else None
        lacking = everywhere - (versions[current] if current else set())
        for vid, holders in sorted(fragments.get(key, {}).items(), reverse=True):
            if (current is not None and vid <= current.id) or len(holders) < ec.k + 1 or version_time(vid) >= cutoff:
                continue
            found = ec._each(lambda i: ec._footer_of(i, key, vid), sorted(holders))
            footer = next((f for f in found.values() if isinstance(f, Footer)), None)
            if footer is not None:
                current, lacking = Version(vid, footer.length, footer.cell, footer.block), set(everywhere)
                break
        if current is None or current.deleted:
            continue
        held = fragments.get(key, {}).get(current.id, set())
        for other, nodes in elsewhere.get(current.id, {}).items():
            strays = sorted(nodes - held) if other != key else []
            moved = ec._each(lambda i: ec.nodes[i].publish(fragment_key(other, current.id), fragment_key(key, current.id)), strays)
            held |= {i for i, got in moved.items() if not isinstance(got, BaseException)}
            done += [key] if strays else []
        if lacking:
            ec._mark(key, current, sorted(lacking))
            done.append(key)
    return sorted(set(done))


def abort_stale(ec: ECStorage, older_than_seconds: float) -> int:
    """Abort the nodes' abandoned uploads, finish the commits writers were killed in
    (``roll_forward``), delete killed writes' fragments older than this (fewer than K+1) and
    every superseded version's; how many writes it cleared."""
    cutoff = time.time() - older_than_seconds
    stale = {parsed for node in ec.nodes for pending in node.uploads()
             if pending.started is None or pending.started.timestamp() < cutoff
             if (parsed := parse_fragment_key(pending.key) or parse_marker_key(pending.key)) is not None}
    for node in ec.nodes:
        node.abort_stale_uploads(older_than_seconds)
    aborted = len(stale)
    roll_forward(ec, older_than_seconds)
    unfinished: set[str] = set()  # keys with a leftover some node did not delete: their deletion marker stays
    for left in list(leftovers(ec)):
        if left.marker is not None and left.marker.deleted and (left.key in unfinished or ec._away()):
            continue  # what it hides may still be on a node (a folder gone meanwhile "deletes" nothing)
        if left.superseded or version_time(left.version) < cutoff:
            name = left.marker.marker(left.key) if left.marker else fragment_key(left.key, left.version)
            if any(isinstance(got, BaseException) for got in ec._each(lambda i: ec.nodes[i].delete(name), left.nodes).values()):
                unfinished.add(left.key)
            aborted += 0 if left.superseded else 1
    return aborted
