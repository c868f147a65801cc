"""Leases: the one renewer thread per Leases, fencing, and when a busy pack should try again."""

from __future__ import annotations

import os
import threading
import time
from contextlib import ExitStack
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import OperationalError

from desq.deployment import Deployment
from desq.layout import container_key
from desq.pipeline.lease import Lease, LeaseLost, Leases, seconds_left
from desq.settings import load_settings

DAY = date(2025, 11, 20)


@pytest.fixture
def leases(tmp_path: Path) -> Leases:
    return Leases(sa.create_engine(f"sqlite:///{tmp_path / 'state.db'}"))


def renewers(than: set[threading.Thread] | None = None) -> set[threading.Thread]:
    """The lease threads running (newer ``than`` those: other tests' Leases may have some still)."""
    return {t for t in threading.enumerate() if t.name.startswith("lease")} - (than or set())


def expiry(leases: Leases, key: str) -> datetime:
    held = leases.holder(key)
    assert held is not None, f"{key} is not held"
    return held[1]


def test_one_thread_renews_every_lease_kept_alive(leases: Leases) -> None:
    """Five leases of 0.9 s kept alive for over twice that: all still held, by one thread."""
    before = renewers()
    held = [leases.acquire(f"pack:{i}", "me", 0.9) for i in range(5)]
    with ExitStack() as stack:
        for lease in held:
            assert lease is not None
            stack.enter_context(lease.keep_alive())
        assert len(renewers(before)) == 1
        first = {lease.key: expiry(leases, lease.key) for lease in held if lease}
        time.sleep(2.0)
        for lease in held:
            assert lease is not None and not lease.lost
            assert expiry(leases, lease.key) > first[lease.key]
            lease.check()
        assert len(renewers(before)) == 1


def test_no_thread_per_container(leases: Leases) -> None:
    """A night's 768 containers, one after another, share one renewer thread, which adds little to each."""
    lease = leases.acquire("pack:x", "me", 60)
    assert lease is not None
    before = renewers()
    seen: set[threading.Thread] = set()
    for _ in range(50):
        with lease.keep_alive():
            seen |= renewers(before)  # kept alive: no thread object can be reused for another
    assert len(seen) == 1


def test_a_lease_taken_over_is_marked_lost_and_the_others_kept(leases: Leases) -> None:
    taken, kept = leases.acquire("pack:taken", "me", 0.6), leases.acquire("pack:kept", "me", 0.6)
    assert taken is not None and kept is not None
    with taken.keep_alive(), kept.keep_alive():
        with leases.engine.begin() as conn:  # a successor's token, as if it had taken the lease over
            conn.execute(sa.text("UPDATE desq_lease SET token = :t, holder = 'successor' WHERE key = 'pack:taken'"), {"t": taken.token + 1})
            successors = conn.execute(sa.text("SELECT expires_at FROM desq_lease WHERE key = 'pack:taken'")).scalar_one()
        deadline = time.monotonic() + 5
        while not taken.lost:
            assert time.monotonic() < deadline, "the renewer never noticed"
            time.sleep(0.02)
        with pytest.raises(LeaseLost):
            taken.check()
        time.sleep(1.0)  # more than the lease: only renewals keep it
        kept.check()
    with leases.engine.connect() as conn:  # the successor's lease was left alone
        assert conn.execute(sa.text("SELECT holder, expires_at FROM desq_lease WHERE key = 'pack:taken'")).one() == ("successor", successors)


def test_the_renewer_survives_a_failed_renewal(leases: Leases, monkeypatch: pytest.MonkeyPatch) -> None:
    """A database error while renewing is tried again soon; the lease stays held and not lost."""
    lease = leases.acquire("pack:x", "me", 1.5)
    assert lease is not None
    real = Leases._renew
    failures: list[float] = []

    def flaky(self: Leases, key: str, token: int, ttl: float) -> bool:
        if threading.current_thread().name.startswith("lease") and not failures:
            failures.append(time.monotonic())
            raise OperationalError("UPDATE", {}, Exception("server closed the connection"))
        return real(self, key, token, ttl)

    monkeypatch.setattr(Leases, "_renew", flaky)
    with lease.keep_alive():
        time.sleep(2.5)  # a failed renewal at 0.5 s, then renewals every 0.5 s
        assert failures and not lease.lost
        lease.check()


def test_a_released_lease_is_renewed_no_more(leases: Leases) -> None:
    lease = leases.acquire("pack:x", "me", 0.6)
    assert lease is not None
    with lease.keep_alive():
        pass
    lease.release()
    time.sleep(0.5)
    assert leases.holder("pack:x") is None and not lease.lost
    assert leases.acquire("pack:x", "next", 60) is not None


def test_check_fences_exactly_as_before(leases: Leases) -> None:
    """check() asks the database itself: an expired lease fails it even if never taken over."""
    lease = leases.acquire("pack:x", "me", 0.2)
    assert lease is not None
    lease.check()
    time.sleep(0.3)
    with pytest.raises(LeaseLost, match="was lost"):
        lease.check()
    assert lease.lost


def test_a_forked_child_starts_a_renewer_of_its_own(leases: Leases) -> None:
    """Celery's prefork children are forked: a renewer thread of the parent is not theirs."""
    parent = leases.acquire("pack:parent", "parent", 60)
    assert parent is not None
    with parent.keep_alive():
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through its exit code
            code = 1
            try:
                leases.engine.dispose(close=False)
                child = leases.acquire("pack:child", "child", 0.6)
                if child is not None:
                    with child.keep_alive():
                        time.sleep(1.5)
                        child.check()
                        code = 0
            finally:
                os._exit(code)
        deadline = time.monotonic() + 30
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                pytest.fail("the child hung")
            time.sleep(0.05)
        assert os.waitstatus_to_exitcode(done[1]) == 0, "the child's lease was not renewed"


def test_seconds_left() -> None:
    now = datetime.now(timezone.utc)
    assert 9 < seconds_left(now + timedelta(seconds=10)) <= 10
    assert seconds_left(now - timedelta(seconds=10)) == 0


@pytest.fixture
def deployment(tmp_path: Path) -> Deployment:
    db = tmp_path / "source.db"
    with sa.create_engine(f"sqlite:///{db}").begin() as conn:
        conn.execute(sa.text("CREATE TABLE files (id INTEGER PRIMARY KEY, created_at DATETIME, path TEXT, des_name TEXT, des_hash_bits INTEGER, des_status TEXT)"))
    env = {"DESQ_SOURCE_DB_URL": f"sqlite:///{db}", "DESQ_SOURCE_ROOT": str(tmp_path), "DESQ_ARCHIVE_URL": str(tmp_path / "archive"), "DESQ_SHARD_BITS": "3"}
    return Deployment(load_settings(env=env))


def test_a_busy_pack_says_when_the_holders_lease_expires(deployment: Deployment) -> None:
    """A killed packer's lease (never renewed again): try again when it expires, not a lease later."""
    packer = deployment.packer(worker="successor")
    dead = deployment.leases.acquire(f"pack:{container_key(DAY, 5, 3)}", "killed-packer", 20)
    assert dead is not None
    time.sleep(0.5)
    report = packer.pack(DAY, 5)
    assert report.status == "busy" and "killed-packer" in report.failures[0]
    assert 18 < report.retry_in <= 19.5
    assert report.as_dict()["retry_in"] == report.retry_in


def test_a_lease_expiring_meanwhile_is_tried_again_at_once(deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lease was held when the packer tried to take it and had expired when it asked whose."""
    packer = deployment.packer(worker="successor")
    assert deployment.leases.acquire(f"pack:{container_key(DAY, 5, 3)}", "killed-packer", 1.0) is not None
    acquire = Leases.acquire

    def slow(self: Leases, key: str, holder: str, ttl: float) -> Lease | None:
        taken = acquire(self, key, holder, ttl)
        assert taken is None, "the lease should still have been held"
        time.sleep(1.1)
        return taken

    monkeypatch.setattr(Leases, "acquire", slow)
    report = packer.pack(DAY, 5)
    assert (report.status, report.retry_in) == ("busy", 1.0)
    assert "another packer" in report.failures[0]
