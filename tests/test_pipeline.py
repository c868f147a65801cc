"""The packing pipeline in one process: nightly --sync, late files, leases, crashes at every step."""

from __future__ import annotations

import os
import threading
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from desq.archive import Archive
from desq.deployment import Deployment
from desq.layout import container_key, shard_of_name
from desq.pipeline import pack as pack_module
from desq.source import plan as plan_module
from desq.pipeline.lease import Lease, LeaseLost
from desq.pipeline.night import UNREPORTED, gather_reports, recover, run_sync
from desq.pipeline.pack import Packer, PackFailed
from desq.source.fetch import Fetcher
from desq.settings import Settings, load_settings
from desq.source.table import SourceTable
from desq.storage.local import LocalStorage

TODAY = date(2025, 11, 28)
DAYS = [date(2025, 11, 18), date(2025, 11, 19), date(2025, 11, 20)]


class Site:
    """A business table and its original files under one folder (the embedded default's shape)."""

    def __init__(self, root: Path, **env: str) -> None:
        self.root = root
        self.originals = root / "originals"
        self.originals.mkdir(parents=True)
        self.db = root / "source.db"
        self.engine = sa.create_engine(f"sqlite:///{self.db}")
        with self.engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE files (id INTEGER PRIMARY KEY, created_at DATETIME, path TEXT, des_name TEXT, des_hash_bits INTEGER, des_status TEXT)"))
        self.env = {
            "DESQ_SOURCE_DB_URL": f"sqlite:///{self.db}",
            "DESQ_SOURCE_ROOT": str(self.originals),
            "DESQ_ARCHIVE_URL": str(root / "archive"),
            "DESQ_SHARD_BITS": "3",
            "DESQ_QUEUE_COUNT": "2",
            "DESQ_ARCHIVE_BIG_FILE_BYTES": str(64 * 1024),
            "DESQ_PIPELINE_LEASE_SECONDS": "5",
        } | env
        self.contents: dict[int, bytes] = {}

    @property
    def settings(self) -> Settings:
        return load_settings(env=self.env)

    def add(self, ids: range, day: date, *, size: int = 300) -> None:
        rows = []
        for i in ids:
            data = os.urandom(size + i % 500)
            (self.originals / f"{i}.bin").write_bytes(data)
            self.contents[i] = data
            rows.append({"id": i, "created_at": datetime.combine(day, datetime.min.time()) + timedelta(minutes=i % 600), "path": f"{i}.bin"})
        with self.engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO files (id, created_at, path) VALUES (:id, :created_at, :path)"), rows)

    def states(self) -> dict[int, str | None]:
        with self.engine.connect() as conn:
            return dict(conn.execute(sa.text("SELECT id, des_status FROM files")).all())

    def day_of(self, i: int) -> date:
        with self.engine.connect() as conn:
            return datetime.fromisoformat(conn.execute(sa.text("SELECT created_at FROM files WHERE id = :i"), {"i": i}).scalar_one()).date()

    def read_back(self, i: int) -> bytes:
        name = f"{self.day_of(i):%Y%m%d}_{i}"
        return Archive(LocalStorage(self.root / "archive")).read(container_key(self.day_of(i), shard_of_name(name, 3), 3), name)


@pytest.fixture
def site(tmp_path: Path) -> Site:
    s = Site(tmp_path)
    for n, day in enumerate(DAYS):
        s.add(range(100 * n + 1, 100 * n + 61), day)
    return s


def test_the_night_after_a_failed_marking_counts_the_files_found_in_their_containers(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pack that published but could not mark its rows (the database went away) leaves them
    READY; the next run finds their files in the container: counted as present, not packed again."""
    real = plan_module.mark_packed
    calls: list[int] = []

    def once_down(*args: object, **kwargs: object) -> int:
        calls.append(1)
        if len(calls) == 1:
            raise sa.exc.OperationalError("UPDATE", {}, Exception("server closed the connection"))
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(plan_module, "mark_packed", once_down)
    first = run_sync(site.settings, TODAY).summary
    assert first["by_status"]["failed"] == 1 and first["files"] < 180 and first["present"] == 0
    second = run_sync(site.settings, TODAY).summary
    assert second["by_status"] == {"present": 1} and second["files"] == 0
    assert first["files"] + second["present"] == 180 and set(site.states().values()) == {"PACKED"}


def test_a_night_packs_every_file_into_its_container(site: Site) -> None:
    (site.originals / "5.bin").unlink()  # a missing original: reported, its row stays READY
    site.add(range(900, 902), DAYS[0], size=100 * 1024)  # big files: stored beside their container
    report = run_sync(site.settings, TODAY)
    assert report.summary["files"] == 181 and report.summary["failed_rows"] == 1
    assert any("5.bin" in f for f in report.summary["failures"])
    states = site.states()
    assert states[5] == "READY" and all(v == "PACKED" for k, v in states.items() if k != 5)
    for i, data in site.contents.items():
        if i != 5:
            assert site.read_back(i) == data
    assert not [p for p in (site.root / "archive").rglob("*") if ".staging-" in p.name]
    again = run_sync(site.settings, TODAY)
    assert again.summary["files"] == 0 and again.summary["failed_rows"] == 1  # only the missing one is tried again


def test_late_files_join_their_container_without_losing_any(site: Site) -> None:
    run_sync(site.settings, TODAY)
    before = {p.name: p.stat().st_size for p in (site.root / "archive").rglob("*.des")}
    site.add(range(1000, 1040), DAYS[1])  # arrive after that day was packed
    report = run_sync(site.settings, TODAY)
    assert report.summary["files"] == 40 and report.summary["kept"] > 0
    for i, data in site.contents.items():
        assert site.read_back(i) == data
    after = {p.name: p.stat().st_size for p in (site.root / "archive").rglob("*.des")}
    assert set(before) <= set(after)


def test_originals_are_deleted_only_after_verification(site: Site) -> None:
    report = run_sync(load_settings(env=site.env | {"DESQ_ARCHIVE_DELETE_ORIGINALS": "true"}), TODAY)
    assert sum(p["deleted_originals"] for p in report.packs) == 180
    assert list(site.originals.iterdir()) == []
    for i, data in site.contents.items():
        assert site.read_back(i) == data


@pytest.mark.parametrize("step", ["fetch", "write", "verify", "publish", "mark"])
def test_a_crash_at_any_step_converges(site: Site, step: str, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(env=site.env | {"DESQ_ARCHIVE_DELETE_ORIGINALS": "true"})
    SourceTable.connect(settings)
    from desq.source.marker import mark

    mark(SourceTable.connect(settings), today=TODAY)
    day, shard = DAYS[0], shard_of_name(f"{DAYS[0]:%Y%m%d}_1", 3)

    class Crash(Exception):
        pass

    def boom(*_a: object, **_k: object) -> None:
        raise Crash(step)

    targets = {
        "fetch": (Fetcher, "fetch"),
        "write": (pack_module.ContainerWriter, "close"),
        "verify": (Packer, "_verify"),
        "publish": (LocalStorage, "publish"),
        "mark": (plan_module, "mark_packed"),
    }
    owner, attr = targets[step]
    with monkeypatch.context() as patch:
        patch.setattr(owner, attr, boom)
        with pytest.raises(Crash):
            Deployment(settings).packer().pack(day, shard)
    key = container_key(day, shard, 3)
    published = (site.root / "archive" / key).exists()
    assert published == (step == "mark")  # nothing is visible before publishing
    assert "PACKED" not in site.states().values()  # no row is PACKED before its container is verified
    assert len(list(site.originals.iterdir())) == 180  # no original is deleted before that either
    storage = LocalStorage(site.root / "archive")
    version = storage.head(key).etag if published else None
    report = Deployment(settings).packer().pack(day, shard)  # the lease was released by the failed run
    if step == "mark":  # every file is in the container already: it is marked, not rewritten
        assert report.status == "present" and report.files == 0 and not report.rewrote
        assert storage.head(key).etag == version
    else:
        assert report.status == "packed" and not report.rewrote
    assert report.marked_packed == report.files + report.present > 0
    names = [m.name for m in Archive(storage).open(key).members()]
    assert len(names) == len(set(names)) == report.files + report.present


def test_two_packers_for_one_shard(site: Site) -> None:
    settings = site.settings
    from desq.source.marker import mark

    mark(SourceTable.connect(settings), today=TODAY)
    day, shard = DAYS[2], shard_of_name(f"{DAYS[2]:%Y%m%d}_201", 3)
    gate = threading.Event()
    original_verify = Packer._verify
    results: list[object] = []

    def slow_verify(self: Packer, *args: object) -> None:
        gate.wait(10)
        original_verify(self, *args)

    first = Deployment(settings).packer(worker="first")
    first._verify = slow_verify.__get__(first)  # type: ignore[method-assign]
    thread = threading.Thread(target=lambda: results.append(first.pack(day, shard)))
    thread.start()
    for _ in range(100):
        if first.leases.holder(f"pack:{container_key(day, shard, 3)}"):
            break
        threading.Event().wait(0.05)
    second = Deployment(settings).packer(worker="second").pack(day, shard)
    gate.set()
    thread.join()
    assert second.status == "busy" and "first" in second.failures[0]
    assert results[0].status == "packed"
    again = Deployment(settings).packer(worker="second").pack(day, shard)
    assert again.status == "nothing"


def test_a_lost_lease_never_publishes(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = site.settings
    from desq.source.marker import mark

    mark(SourceTable.connect(settings), today=TODAY)
    day, shard = DAYS[0], shard_of_name(f"{DAYS[0]:%Y%m%d}_1", 3)
    packer = Deployment(settings).packer()
    def lost(self: Lease) -> None:
        raise LeaseLost("taken over")

    monkeypatch.setattr(Lease, "check", lost)
    with pytest.raises(PackFailed, match="taken over"):
        packer.pack(day, shard)
    assert not (site.root / "archive" / container_key(day, shard, 3)).exists()


def test_uid_mode_night_moves_the_cutoff(site: Site) -> None:
    settings = load_settings(env=site.env | {"DESQ_MODE": "uid"})
    report = run_sync(settings, TODAY)
    assert report.summary["files"] == 180 and "cutoff None -> 2025-11-20" in report.summary["cutoff"]
    storage = Archive(LocalStorage(site.root / "archive"))
    for i, data in site.contents.items():
        key = container_key(site.day_of(i), i % 8, 3)
        assert storage.read(key, str(i)) == data


def test_recover_clears_what_crashes_leave_and_never_a_container(site: Site) -> None:
    settings = site.settings
    run_sync(settings, TODAY)
    storage = LocalStorage(site.root / "archive")
    containers = sorted(o.key for o in storage.list() if o.key.endswith(".des"))
    storage.put("20251118/00.des.staging-abc", b"left by a crash")
    storage.put("20251118/01.des.staging-new", b"a packer at work now")
    old = site.root / "archive" / "20251118" / "00.des.staging-abc"
    os.utime(old, (0, 0))
    upload = storage.open_upload("20251118/02.des.staging-x")
    upload.write(b"half")
    tmp = next((site.root / "archive" / "20251118").glob(".desq-upload-*"))
    os.utime(tmp, (0, 0))
    leases = Deployment(settings).packer().leases
    assert leases.acquire("pack:20251118/03.des", "dead-worker", 0.001) is not None
    threading.Event().wait(0.01)
    report = recover(Deployment(settings))
    assert (report.staging, report.uploads, report.leases) == (1, 1, 1)  # the night removed its released ones
    assert leases.holder("pack:20251118/03.des") is None
    left = sorted(o.key for o in storage.list())
    assert "20251118/01.des.staging-new" in left and "20251118/00.des.staging-abc" not in left
    assert [k for k in left if k.endswith(".des")] == containers


def _lease_rows(site: Site) -> dict[str, datetime]:
    with site.engine.connect() as conn:
        return {k: v for k, v in conn.execute(sa.text("SELECT key, expires_at FROM desq_lease")).all()}


def test_the_night_removes_leases_expired_longer_than_a_lease_period(site: Site) -> None:
    """A night's finish deletes the leases its packers released, and those of killed packers once
    they have been expired a lease period (5 s here); never a live one."""
    settings = site.settings
    leases = Deployment(settings).leases
    live = leases.acquire("pack:live", "a-packer-at-work", 3600)
    assert live is not None
    just_expired = leases.acquire("pack:just-expired", "killed-packer", 0.001)
    long_expired = leases.acquire("pack:long-expired", "killed-long-ago", 0.001)
    assert just_expired is not None and long_expired is not None
    with site.engine.begin() as conn:
        conn.execute(sa.text("UPDATE desq_lease SET expires_at = :t WHERE key = 'pack:long-expired'"), {"t": datetime(2025, 1, 1)})
    report = run_sync(settings, TODAY)
    assert report.summary["tasks"] == len(report.plan) > 0
    assert report.summary["expired_leases_removed"] == len(report.plan) + 1  # its own (released) and the old one
    assert set(_lease_rows(site)) == {"pack:live", "pack:just-expired"}
    threading.Event().wait(5.1)
    assert run_sync(settings, TODAY).summary["expired_leases_removed"] == 1
    assert set(_lease_rows(site)) == {"pack:live"}
    live.check()
    just_expired.ttl = 5
    with pytest.raises(LeaseLost):
        just_expired.check()  # its row is gone: the killed packer can never publish


def test_a_lease_removed_while_being_taken_is_taken(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    """An expired row removed (by a night's finish or recover) between acquire's INSERT and its
    UPDATE: the UPDATE matches nothing, and the lease, free, must still be taken (not "busy")."""
    from desq.pipeline import lease as lease_module

    leases = Deployment(site.settings).leases
    assert leases.acquire("pack:x", "killed-packer", 0.001) is not None
    threading.Event().wait(0.01)
    update = lease_module.sa.update
    removed = []

    def update_after_removal(table: sa.Table) -> sa.Update:
        if not removed:
            with site.engine.begin() as conn:
                removed.append(conn.execute(sa.text("DELETE FROM desq_lease WHERE key = 'pack:x'")).rowcount)
        return update(table)

    monkeypatch.setattr(lease_module.sa, "update", update_after_removal)
    taken = leases.acquire("pack:x", "a-packer", 60)
    assert removed == [1] and taken is not None
    taken.check()
    assert leases.acquire("pack:x", "another-packer", 60) is None  # and now it is held


@pytest.mark.integration
def test_packers_starting_together_both_create_desqs_tables(pg_url: str) -> None:
    """Regression: two packers' first Leases() on a fresh database raced in CREATE TABLE, and the
    loser's DuplicateTable failed its shard."""
    import threading
    import uuid

    import sqlalchemy as sa

    from desq.state import StateStore
    from desq.pipeline.lease import Leases

    admin = sa.create_engine(pg_url)
    for _ in range(8):
        schema = f"race_{uuid.uuid4().hex[:8]}"
        with admin.begin() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
        engines = [sa.create_engine(pg_url, connect_args={"options": f"-csearch_path={schema}"}) for _ in range(4)]
        start = threading.Barrier(len(engines))
        failures: list[BaseException] = []

        def first_use(engine: sa.Engine, make: type, start: threading.Barrier = start, failures: list[BaseException] = failures) -> None:
            start.wait()
            try:
                make(engine)
            except BaseException as exc:  # noqa: BLE001 - collected for the assertion
                failures.append(exc)

        threads = [threading.Thread(target=first_use, args=(e, Leases if i % 2 else StateStore)) for i, e in enumerate(engines)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for engine in engines:
            engine.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        assert not failures, failures


def test_originals_of_files_found_in_their_container_are_deleted_only_if_they_match(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pack killed after publishing leaves READY rows whose files are in the container; the next
    run marks them without rewriting it, and deletes only the originals that are byte for byte the
    archived member (an original replaced meanwhile stays, and is reported)."""
    site = Site(tmp_path, DESQ_ARCHIVE_DELETE_ORIGINALS="true")
    site.add(range(1, 41), DAYS[0])
    site.add(range(900, 902), DAYS[0], size=100 * 1024)  # big members beside the container
    settings = site.settings
    from desq.source.marker import mark

    mark(SourceTable.connect(settings), today=TODAY)
    day, shard = DAYS[0], shard_of_name(f"{DAYS[0]:%Y%m%d}_900", 3)

    class Crash(Exception):
        pass

    def crash(*_: object, **__: object) -> int:
        raise Crash("killed after publishing")

    with monkeypatch.context() as patch:
        patch.setattr(plan_module, "mark_packed", crash)
        with pytest.raises(Crash):
            Deployment(settings).packer().pack(day, shard)
    key = container_key(day, shard, 3)
    storage = LocalStorage(tmp_path / "archive")
    version = storage.head(key).etag
    names = [m.name for m in Archive(storage).open(key).members()]
    ids = [int(n.rpartition("_")[2]) for n in names]
    assert 900 in ids
    changed = next(i for i in ids if i != 900)
    (site.originals / f"{changed}.bin").write_bytes(b"replaced since")
    report = Deployment(settings).packer().pack(day, shard)
    assert (report.status, report.files, report.present, report.rewrote) == ("present", 0, len(ids), False)
    assert storage.head(key).etag == version and report.marked_packed == len(ids)
    assert report.deleted_originals == len(ids) - 1
    assert (site.originals / f"{changed}.bin").exists() and not any((site.originals / f"{i}.bin").exists() for i in ids if i != changed)
    assert any(f"row {changed}: original differs" in f for f in report.failures)


def test_a_nights_reports_are_the_kept_ones_then_results_carried_then_one_entry_per_missing_task() -> None:
    kept = {("2025-11-20", "07"): {"date": "2025-11-20", "shard": "07", "status": "packed", "files": 3}}
    carried = [{"date": "2025-11-20", "shard": "07", "status": "packed", "files": 1}, {"date": "2025-11-20", "shard": "08", "status": "packed"}]
    assert gather_reports(kept, carried, 2) == [kept[("2025-11-20", "07")], carried[1]]
    short = gather_reports(kept, [], 3)
    assert [r["status"] for r in short] == ["packed", UNREPORTED, UNREPORTED]
    assert len(short[1]["failures"]) == 1 and short[2]["failures"] == []  # said once, counted per task
    assert gather_reports({}, [], None) == [] and gather_reports(kept, [], 0) == [kept[("2025-11-20", "07")]]
