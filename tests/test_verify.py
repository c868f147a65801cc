"""desq/verify.py: containers verified concurrently give the sequential output; failures are reported."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from desq.cli import run
from desq.container import ContainerWriter
from desq.storage import Storage, StorageUnavailable
from desq.storage.counting import CountingStorage
from desq.storage.local import LocalStorage
from desq.verify import Checked, Tally, Targets, VerifyRun, check, check_all


def make(storage: Storage, key: str, members: int = 30, seed: int = 0) -> None:
    with storage.open_upload(key) as upload:
        writer = ContainerWriter(upload)
        for i in range(members):
            writer.add(f"{key}-{i}", bytes([seed, i]) * (100 + 37 * i))
        writer.close()
        upload.commit()


def flip(path: Path, needle: bytes) -> None:
    data = bytearray(path.read_bytes())
    data[data.index(needle) + 3] ^= 0x20
    path.write_bytes(bytes(data))


def desq(capsysbinary: pytest.CaptureFixture[bytes], *args: str) -> tuple[int, str, str]:
    code = run(list(args))
    out, err = capsysbinary.readouterr()
    return code, out.decode(), err.decode()


@pytest.fixture
def archive(in_tmp: Path) -> Path:
    root = in_tmp / "desq-data" / "archive"
    storage = LocalStorage(root)
    for i in range(12):
        make(storage, f"20251120/{i:02X}.des", seed=i)
    return root


def test_concurrent_output_is_the_sequential_output(archive: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    for shard, member in (("03", 4), ("07", 0), ("07", 29), ("0B", 17)):
        flip(archive / "20251120" / f"{shard}.des", bytes([int(shard, 16), member]) * 4)
    sequential = desq(capsysbinary, "verify", "--all", "--jobs", "1")
    concurrent = desq(capsysbinary, "verify", "--all", "--jobs", "6")
    assert sequential[:2] == concurrent[:2]
    code, out, err = concurrent
    assert code == 1 and err.splitlines()[-1] == "desq: error: 3 of 12 container(s) failed verification"
    bad = [line for line in out.splitlines() if line.startswith("BAD")]
    assert bad == [
        "BAD 20251120/03.des: 20251120/03.des-4: data checksum does not match",
        "BAD 20251120/07.des: 20251120/07.des-0: data checksum does not match",
        "BAD 20251120/07.des: 20251120/07.des-29: data checksum does not match",
        "BAD 20251120/0B.des: 20251120/0B.des-17: data checksum does not match",
    ]
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith("ok")] == [f"ok  20251120/{i:02X}.des" for i in range(12) if i not in (3, 7, 11)]
    assert out.index("ok  20251120/02.des") < out.index("BAD 20251120/03.des") < out.index("ok  20251120/04.des")
    summary = [line for line in err.splitlines() if line.startswith("verified ")]
    assert len(summary) == 1 and summary[0].startswith("verified 12 container(s), 360 members, ") and summary[0].endswith("; 3 bad")
    assert "MB/s" in summary[0]


def test_all_good_exits_0_with_the_summary(archive: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    code, out, err = desq(capsysbinary, "verify", "--all")
    assert code == 0 and out.splitlines() == [f"ok  20251120/{i:02X}.des: 30 members" for i in range(12)]
    assert "verified 12 container(s), 360 members" in err and "warning" not in err


@pytest.mark.parametrize("jobs", ["0", "-1", "x"])
def test_bad_jobs_is_a_usage_error(archive: Path, capsysbinary: pytest.CaptureFixture[bytes], jobs: str) -> None:
    assert desq(capsysbinary, "verify", "--all", "--jobs", jobs)[0] == 2


class Failing(CountingStorage):
    """Reads of keys in ``broken`` fail: with a storage error, or with an error no one expects."""

    def __init__(self, inner: Storage, broken: dict[str, Exception]) -> None:
        super().__init__(inner)
        self.broken = broken

    def read(self, key: str, offset: int, length: int, *, if_match: str | None = None) -> bytes:
        if key in self.broken:
            raise self.broken[key]
        return super().read(key, offset, length, if_match=if_match)


def test_a_container_that_fails_to_read_is_reported_not_a_traceback(archive: Path) -> None:
    storage = Failing(LocalStorage(archive), {"20251120/02.des": StorageUnavailable("S3 answered 503 after retries"), "20251120/05.des": RuntimeError("boom")})
    found = VerifyRun(Targets(lambda: storage), [], True, jobs=4)
    lines = list(found.run(lambda items, _desc: iter(items), 5))
    assert "BAD 20251120/02.des: S3 answered 503 after retries" in lines
    assert "BAD 20251120/05.des: RuntimeError: boom" in lines
    assert found.tally.bad == 2 and found.tally.containers == 12 and found.leftovers == []


def test_a_missing_or_junk_target_is_a_problem_of_its_own(in_tmp: Path) -> None:
    (in_tmp / "junk.des").write_bytes(b"\0" * 100)
    targets = Targets(lambda: LocalStorage(in_tmp / "archive"))
    assert check(targets, "junk.des").problems[0].name is None
    assert "no container at 'nowhere/00.des'" in check(targets, "nowhere/00.des").problems[0].message
    assert "no container at '../x.des'" in check(targets, "../x.des").problems[0].message


class Gate(CountingStorage):
    """Every read waits until ``width`` reads are in progress at once (or 10 s pass), and the
    most ever in progress is recorded: a sequential verify never gets past ``now == 1``."""

    def __init__(self, inner: Storage, width: int) -> None:
        super().__init__(inner)
        self.width = width
        self.now = self.most = 0
        self.lock = threading.Condition()

    def read(self, key: str, offset: int, length: int, *, if_match: str | None = None) -> bytes:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
            self.lock.notify_all()
            self.lock.wait_for(lambda: self.most >= self.width, timeout=10)
        try:
            return super().read(key, offset, length, if_match=if_match)
        finally:
            with self.lock:
                self.now -= 1


def test_verify_runs_containers_at_once_and_never_more_than_jobs(archive: Path) -> None:
    gate = Gate(LocalStorage(archive), width=4)
    found = VerifyRun(Targets(lambda: gate), [], True, jobs=4)
    lines = list(found.run(lambda items, _desc: iter(items), 5))
    assert gate.most == 4 and found.tally.bad == 0 and len(lines) == 12
    one = Gate(LocalStorage(archive), width=1)
    list(VerifyRun(Targets(lambda: one), [], True, jobs=1).run(lambda items, _desc: iter(items), 5))
    assert one.most == 1


def test_results_come_in_target_order_whichever_finishes_first() -> None:
    order: list[str] = []
    released = {t: threading.Event() for t in "abcdef"}

    def one(target: str) -> Checked:
        if target != "f":
            released[chr(ord(target) + 1)].wait(10)  # each waits for the next one to finish first
        order.append(target)
        released[target].set()
        return Checked(target, [])

    assert [c.target for c in check_all(list("abcdef"), one, jobs=6)] == list("abcdef")
    assert order == list("fedcba")
    with pytest.raises(ValueError):
        list(check_all(["a"], one, jobs=0))


def test_the_window_of_work_in_flight_is_bounded() -> None:
    started: list[str] = []

    def one(target: str) -> Checked:
        started.append(target)
        return Checked(target, [])

    results: Iterator[Checked] = check_all([str(i) for i in range(1000)], one, jobs=3)
    next(results)
    assert len(started) <= 2 * 3 + 1
    assert len(list(results)) == 999


def test_tally_summary() -> None:
    tally = Tally(started=100.0)
    tally.add(Checked("a", [], members=3, bytes=2_000_000))
    tally.add(Checked("b", [object()], members=1, bytes=0))  # type: ignore[list-item]
    assert tally.summary(now=102.0) == "verified 2 container(s), 4 members, 2.0 MB in 2.0 s (1.0 MB/s); 1 bad"


def test_big_file_references_are_known_only_for_a_container_that_verified(in_tmp: Path) -> None:
    storage = LocalStorage(in_tmp)
    make(storage, "c.des")
    good = check(Targets(lambda: storage), "c.des")
    assert good.externals == frozenset() and good.bytes == sum(2 * (100 + 37 * i) for i in range(30))
    flip(in_tmp / "c.des", bytes([0, 3]) * 4)
    assert check(Targets(lambda: storage), "c.des").externals is None

