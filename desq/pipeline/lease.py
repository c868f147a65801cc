"""Leases: at most one packer works on a (date, shard) at a time.

A lease is a row of desq's own ``desq_lease`` table with an expiry and a fencing token drawn anew
(62 random bits) every time the lease changes hands, so no two holders ever share one. The holder renews it while it works; before it
publishes anything it checks that its token is still the current one and unexpired, so a packer
that stalled past its lease (and was replaced) cannot publish over its successor's work.
"""

from __future__ import annotations

import secrets
import threading
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

    def keep_alive(self) -> _Renewer:
        """A background thread renewing the lease every ttl/3 until stopped."""
        return _Renewer(self)


class _Renewer:
    def __init__(self, lease: Lease) -> None:
        self._lease = lease
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{lease.key}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._lease.ttl / 3):
            try:
                if not self._lease.renew():
                    return
            except Exception:  # noqa: BLE001 - a failed renewal is retried next round; expiry decides
                continue

    def __enter__(self) -> Lease:
        self._thread.start()
        return self._lease

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


class Leases:
    """The lease table in desq's own database (created on first use)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
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
