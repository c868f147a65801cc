"""Failpoints: named places where a crash test can kill the process (like etcd's gofail, FreeBSD's fail(9)).

``failpoint(name)`` does nothing unless ``DESQ_FAILPOINTS`` named a plan when this module was first
imported (the environment is read once; unset, a call costs one global lookup and a comparison)::

    DESQ_FAILPOINTS="pack.after_publish=2,marker.in_batch=1:stop"

Each entry ``point=hit[:action]`` fires on the ``hit``-th time its point is reached after the entry
was armed. Entries are armed one at a time, in the order written: the first entry that has not fired
yet. Actions: ``kill`` (the default) SIGKILLs the process; ``stop`` SIGSTOPs it, so that a test can
look at the state exactly there before it SIGKILLs the process itself.

With ``DESQ_FAILPOINTS_DIR`` naming a folder, each entry fires at most once across every process that
shares the plan: firing first claims ``<dir>/<entry index>`` atomically (a hard link, which fails if
the name exists), holding ``<pid> <point> <hit>``. A killed process and its replacement (a Celery pool
child) thus go on with the next entry, so one plan drives many kills through a night.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Mapping
from dataclasses import dataclass

FAILPOINTS_ENV = "DESQ_FAILPOINTS"
FAILPOINTS_DIR_ENV = "DESQ_FAILPOINTS_DIR"

POINTS: dict[str, str] = {
    "pack.after_lease": "pack_shard holds its lease, nothing read yet",
    "pack.fetched": "an original was fetched (its k-th hit: the k-th original), not yet written",
    "pack.member_written": "a member was added to the staging container (k-th hit: k members)",
    "pack.after_upload": "the staging object is committed, not yet verified",
    "pack.after_verify": "the staging object verified and the lease checked, not yet published",
    "pack.after_publish": "the container is published, no row marked PACKED yet",
    "pack.marked_batch": "between two batches of marking rows PACKED",
    "pack.after_mark": "every row marked PACKED, no original deleted yet",
    "pack.deleted": "an original was deleted (k-th hit: k originals)",
    "pack.done": "pack_shard finished and released its lease, its result not yet returned",
    "ec.fragment_stored": "an erasure-coded write committed a fragment on its node (k-th hit: k fragments), not yet marked",
    "ec.marked": "an erasure-coded write stored a commit marker (k-th hit: k markers), older versions not yet deleted",
    "ec.fragment_moved": "an erasure-coded publish renamed a fragment (k-th hit: k fragments), not yet marked",
    "marker.in_batch": "the marker updated a batch, not yet committed",
    "marker.between_batches": "the marker committed a batch, the next not yet read",
}
ACTIONS = ("kill", "stop")


class FailpointError(ValueError):
    """A malformed failpoint plan."""


@dataclass(frozen=True)
class Entry:
    point: str
    hit: int
    action: str


def parse(text: str) -> list[Entry]:
    """The entries of a plan such as ``pack.fetched=3,pack.done=1:stop``."""
    entries = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        point, sep, rest = item.partition("=")
        hit, _, action = rest.partition(":")
        action = action or "kill"
        if point not in POINTS:
            raise FailpointError(f"{FAILPOINTS_ENV}: unknown failpoint {point!r} (known: {', '.join(POINTS)})")
        if not sep or not hit.isdigit() or int(hit) < 1:
            raise FailpointError(f"{FAILPOINTS_ENV}: {item!r} needs a hit count >= 1")
        if action not in ACTIONS:
            raise FailpointError(f"{FAILPOINTS_ENV}: {item!r} has action {action!r}, not one of {', '.join(ACTIONS)}")
        entries.append(Entry(point, int(hit), action))
    return entries


class Plan:
    """The entries of this process, which one is armed, and how often its point was hit since."""

    def __init__(self, entries: list[Entry], folder: str | None) -> None:
        self.entries = entries
        self.folder = folder
        self.fired = 0
        """Entries before this index have fired (here or, with a folder, in another process)."""
        self.hits = 0
        self.lock = threading.Lock()

    def _claimed(self, index: int) -> bool:
        return self.folder is not None and os.path.exists(os.path.join(self.folder, str(index)))

    def _claim(self, index: int) -> bool:
        if self.folder is None:
            return True
        entry = self.entries[index]
        temp = os.path.join(self.folder, f".claim-{os.getpid()}-{index}")
        with open(temp, "w") as fh:
            fh.write(f"{os.getpid()} {entry.point} {entry.hit}\n")
        try:
            os.link(temp, os.path.join(self.folder, str(index)))
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(temp)

    def hit(self, name: str) -> None:
        if name not in POINTS:
            raise FailpointError(f"failpoint {name!r} is not declared in desq.failpoints.POINTS")
        with self.lock:
            while self.fired < len(self.entries) and self._claimed(self.fired):
                self.fired += 1
                self.hits = 0
            if self.fired >= len(self.entries) or self.entries[self.fired].point != name:
                return
            self.hits += 1
            entry = self.entries[self.fired]
            if self.hits < entry.hit:
                return
            index = self.fired
            self.fired += 1
            self.hits = 0
            if not self._claim(index):
                return
            os.kill(os.getpid(), signal.SIGSTOP if entry.action == "stop" else signal.SIGKILL)


def load(env: Mapping[str, str]) -> Plan | None:
    """The plan ``env`` names, or None."""
    text = env.get(FAILPOINTS_ENV, "")
    entries = parse(text) if text.strip() else []
    return Plan(entries, env.get(FAILPOINTS_DIR_ENV) or None) if entries else None


_PLAN = load(os.environ)


def failpoint(name: str) -> None:
    """Crash here if the plan says so (see the module docstring); otherwise nothing."""
    if _PLAN is not None:
        _PLAN.hit(name)
