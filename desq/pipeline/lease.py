"""Leases: at most one packer works on a (date, shard) at a time.

A lease is a row of desq's own ``desq_lease`` table with an expiry and a fencing token drawn anew
(62 random bits) every time the lease changes hands, so no two holders ever share one. The holder renews it while it works
(``keep_alive``: one background thread per ``Leases`` renews every lease kept alive); before it
publishes anything it checks that its token is still the current one and unexpired, so a packer
that stalled past its lease (and was replaced) cannot publish over its successor's work.
"""

from __future__ import annotations

import math
import os
import secrets
import threading
import time
import weakref
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from desq.errors import DesqError
from desq.state import LEASE, STATE, create_tables

_EXPIRED = datetime(1970, 1, 1, tzinfo=timezone.utc)


class LeaseLost(DesqError):
    """The lease expired or was taken over: this worker must not publish."""


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _aware(value: datetime) -> datetime:
    """Databases without zone support give naive UTC back."""
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def seconds_left(expires_at: datetime) -> float:
    """Seconds from now until ``expires_at`` (a lease's, from ``Leases.holder``); 0 once passed."""
    return max(0.0, (expires_at - _now()).total_seconds())


@dataclass
class Lease:
    """A held lease; ``check`` before publishing, ``release`` when done."""

    leases: Leases
    key: str
    holder: str
    token: int
    ttl: float
    lost: bool = False

    def renew(self) -> bool:
        """Push the expiry out again; False (and ``lost``) if the lease is no longer ours."""
        ok = self.leases._renew(self.key, self.token, self.ttl)
        self.lost = self.lost or not ok
        return ok

    def check(self) -> None:
        """Raise LeaseLost unless this is still the current, unexpired holder."""
        if self.lost or not self.leases._renew(self.key, self.token, self.ttl):
            self.lost = True
            raise LeaseLost(f"lease {self.key} (token {self.token}) was lost; not publishing")

    def release(self) -> None:
        self.leases._release(self.key, self.token)

    def keep_alive(self) -> AbstractContextManager[Lease]:
        """Renew the lease every ttl/3, from the one renewer thread of its Leases, while inside."""
        return _Kept(self)


class _Kept:
    """``with lease.keep_alive():`` registered with its Leases' renewer while inside."""

    __slots__ = ("_lease",)

    def __init__(self, lease: Lease) -> None:
        self._lease = lease

    def __enter__(self) -> Lease:
        self._lease.leases._renewer.add(self._lease)
        return self._lease

    def __exit__(self, *_: object) -> None:
        self._lease.leases._renewer.discard(self._lease)


class _Renewer:
    """One daemon thread renewing every lease kept alive, each every third of its ttl.

    Started on the first ``add``; it ends after IDLE_SECONDS with nothing to renew (the next
    ``add`` starts another). A renewal that raises is tried again after at most RETRY_SECONDS (the
    expiry decides); one the database refuses (the lease is not ours any more) marks it lost. A
    forked child (a Celery prefork child) starts with no thread and none of its parent's leases.
    """

    IDLE_SECONDS = 60.0
    RETRY_SECONDS = 2.0

    def __init__(self) -> None:
        self._reset()
        _RENEWERS.add(self)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._due: dict[int, tuple[float, Lease]] = {}  # id(lease) -> (monotonic time of its next renewal, lease)
        self._thread: threading.Thread | None = None
        self._wakes_at = math.inf

    def add(self, lease: Lease) -> None:
        due = time.monotonic() + lease.ttl / 3
        with self._lock:
            self._due[id(lease)] = (due, lease)
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="lease-renewer", daemon=True)
                try:
                    thread.start()
                except BaseException:
                    del self._due[id(lease)]
                    raise
                self._thread = thread
            elif due < self._wakes_at:
                self._cond.notify()

    def discard(self, lease: Lease) -> None:
        with self._lock:
            entry = self._due.get(id(lease))
            if entry is not None and entry[1] is lease:
                del self._due[id(lease)]

    def _run(self) -> None:
        idle_since: float | None = None
        while True:
            with self._cond:
                now = time.monotonic()
                due = [lease for at, lease in self._due.values() if at <= now]
                if not due:
                    if self._due:
                        idle_since = None
                        wake = min(at for at, _ in self._due.values())
                    else:
                        idle_since = now if idle_since is None else idle_since
                        wake = idle_since + self.IDLE_SECONDS
                        if now >= wake:
                            self._thread = None
                            return
                    self._wakes_at = wake
                    self._cond.wait(wake - now)
                    self._wakes_at = math.inf
                    continue
            for lease in due:
                self._renew(lease)

    def _renew(self, lease: Lease) -> None:
        try:
            ours, after = lease.renew(), lease.ttl / 3
        except Exception:  # noqa: BLE001 - tried again soon; expiry decides
            ours, after = True, min(lease.ttl / 3, self.RETRY_SECONDS)
        with self._lock:
            entry = self._due.get(id(lease))
            if entry is None or entry[1] is not lease:
                return  # no longer kept alive
            if ours:
                self._due[id(lease)] = (time.monotonic() + after, lease)
            else:
                del self._due[id(lease)]


_RENEWERS: weakref.WeakSet[_Renewer] = weakref.WeakSet()


def _after_fork() -> None:
    """A forked child has no renewer thread and holds none of its parent's leases."""
    for renewer in list(_RENEWERS):
        renewer._reset()


os.register_at_fork(after_in_child=_after_fork)


class Leases:
    """The lease table in desq's own database (created on first use)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._renewer = _Renewer()
        create_tables(engine, [STATE, LEASE])

    def acquire(self, key: str, holder: str, ttl: float) -> Lease | None:
        """Take the lease if it is free or expired; None while someone else holds it."""
        now = _now()
        expires = now + timedelta(seconds=ttl)
        token = secrets.randbits(62)
        for _ in range(2):  # the second pass: an expired row was removed between our INSERT and UPDATE
            try:
                with self.engine.begin() as conn:
                    conn.execute(sa.insert(LEASE).values(key=key, holder=holder, token=token, expires_at=expires))
                return Lease(self, key, holder, token, ttl)
            except IntegrityError:
                pass
            with self.engine.begin() as conn:
                taken = conn.execute(
                    sa.update(LEASE).where(LEASE.c.key == key, LEASE.c.expires_at < now).values(holder=holder, token=token, expires_at=expires)
                ).rowcount
                if taken:
                    return Lease(self, key, holder, token, ttl)
                if conn.execute(sa.select(LEASE.c.key).where(LEASE.c.key == key)).first() is not None:
                    return None  # held, and not expired
        return None

    def _renew(self, key: str, token: int, ttl: float) -> bool:
        now = _now()
        with self.engine.begin() as conn:
            return bool(
                conn.execute(
                    sa.update(LEASE).where(LEASE.c.key == key, LEASE.c.token == token, LEASE.c.expires_at >= now).values(expires_at=now + timedelta(seconds=ttl))
                ).rowcount
            )

    def _release(self, key: str, token: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.update(LEASE).where(LEASE.c.key == key, LEASE.c.token == token).values(expires_at=_EXPIRED))

    def holder(self, key: str) -> tuple[str, datetime] | None:
        """Who holds ``key`` and until when (None if free or expired)."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(LEASE.c.holder, LEASE.c.expires_at).where(LEASE.c.key == key)).first()
        if row is None or _aware(row.expires_at) < _now():
            return None
        return row.holder, _aware(row.expires_at)

    def live_token(self, key: str) -> int | None:
        """The fencing token of the unexpired lease on ``key``; None while it is free or expired."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(LEASE.c.token, LEASE.c.expires_at).where(LEASE.c.key == key)).first()
        if row is None or _aware(row.expires_at) < _now():
            return None
        return int(row.token)

    def clear_expired(self, older_than: timedelta = timedelta(0)) -> int:
        """Forget leases expired more than ``older_than`` ago (one DELETE); returns how many.

        Safe while packers run: an expired lease is free to take whether its row is there or not,
        and its old holder's renewal fails either way, so it cannot publish."""
        with self.engine.begin() as conn:
            return conn.execute(sa.delete(LEASE).where(LEASE.c.expires_at < _now() - older_than)).rowcount
