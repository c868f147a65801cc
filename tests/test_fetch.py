"""The fetcher of originals: local and S3, in row order, in bounded memory, per-row errors."""

from __future__ import annotations

import itertools
import os
import random
import threading
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import boto3
import pytest

from desq.source import fetch as fetch_module
from desq.source.fetch import Fetcher, FetchError, Original, OriginalChanged
from desq.source.rows import SourceRow
from leaks import Snapshot


def row(path: str, name: str | None = None, id: object = 0) -> SourceRow:
    return SourceRow(id=id, name=name if name is not None else path.rsplit("/", 1)[-1], created_at=None, path=path, date=date(2025, 11, 20), shard=0)


def blob(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    root.mkdir()
    return root


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def one(fetcher: Fetcher, r: SourceRow) -> Original:
    (original,) = list(fetcher.fetch([r]))
    return original


def assert_failed(original: Original, *words: str) -> None:
    assert original.error is not None, original
    assert "\n" not in original.error
    assert original.data is None and original.open is None and original.size == 0
    for word in words:
        assert word in original.error, original.error


# --- local ------------------------------------------------------------------------------------


def test_local_relative_absolute_and_unicode_paths(src: Path, tmp_path: Path) -> None:
    write(src / "a.txt", b"hello")
    write(src / "sub dir" / "ü ñ 文件", blob(3000, 1))
    outside = write(tmp_path / "elsewhere" / "x.json", b'{"x": 1}')
    write(src / "empty.txt", b"")
    rows = [row("a.txt", id=1), row("sub dir/ü ñ 文件", id=2), row(str(outside), id=3), row("./sub dir/../empty.txt", id=4)]
    with Fetcher(root=str(src)) as fetcher:
        got = list(fetcher.fetch(rows))
    assert [o.row for o in got] == rows
    assert [o.error for o in got] == [None] * 4
    assert [o.data for o in got] == [b"hello", blob(3000, 1), b'{"x": 1}', b""]
    assert [o.size for o in got] == [5, 3000, 8, 0]
    assert all(o.open is None for o in got)
    assert [o.content_type for o in got] == ["text/plain", None, "application/json", "text/plain"]


def test_resolve_local(src: Path, tmp_path: Path) -> None:
    write(src / "d" / "f", b"x")
    write(tmp_path / "secret", b"s")
    (src / "out").symlink_to(tmp_path)
    fetcher = Fetcher(root=str(src))
    assert fetcher.resolve_local("d/f") == src.resolve() / "d" / "f"
    assert fetcher.resolve_local("d/../d/f") == src.resolve() / "d" / "f"
    assert fetcher.resolve_local("/etc/../etc/hosts") == Path("/etc/../etc/hosts")  # absolute: as is
    for bad in ("", "../secret", "d/../../secret", "out/secret", "out", "a\x00b"):
        with pytest.raises(FetchError):
            fetcher.resolve_local(bad)
    with pytest.raises(FetchError, match="no source root"):
        Fetcher().resolve_local("d/f")
    with pytest.raises(FetchError, match="not a directory"):
        Fetcher(root=str(src / "d" / "f"))
    for bad_config in ({"threads": 0}, {"max_bytes_in_flight": 0}, {"s3_endpoint_url": "127.0.0.1:5055"}):
        with pytest.raises(FetchError):
            Fetcher(**bad_config)  # type: ignore[arg-type]


def test_order_is_kept_whatever_finishes_first(src: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    n = 200
    for i in range(n):
        write(src / f"f{i:03}.bin", blob(random.Random(i).randrange(1, 4000), i))
    real = Fetcher._fetch_local
    active, most = 0, 0
    lock = threading.Lock()

    def slow(self: Fetcher, run: object, index: int, r: SourceRow) -> object:
        nonlocal active, most
        with lock:
            active += 1
            most = max(most, active)
        time.sleep(random.uniform(0, 0.01))
        with lock:
            active -= 1
        return real(self, run, index, r)  # type: ignore[arg-type]

    monkeypatch.setattr(Fetcher, "_fetch_local", slow)
    rows = [row(f"f{i:03}.bin", id=i) for i in range(n)]
    with Fetcher(root=str(src), threads=8) as fetcher:
        got = list(fetcher.fetch(rows))
    assert [o.row.id for o in got] == list(range(n))
    assert all(o.data == (src / o.row.path).read_bytes() for o in got)
    assert most > 1, "the rows were not fetched concurrently"


def test_memory_stays_under_the_budget(src: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    budget = 64 << 10
    sizes = [random.Random(i).randrange(1, 24 << 10) for i in range(300)]
    for i, size in enumerate(sizes):
        write(src / f"{i}", blob(size, i))
    assert sum(sizes) > 40 * budget
    # An independent count of bytes read but not yet consumed: counted once a worker has them,
    # discounted before the consumer asks for the next one (so never after the fetcher's release).
    live, live_peak = 0, 0
    lock = threading.Lock()
    real = Fetcher._fetch_local

    def counted(self: Fetcher, run: object, index: int, r: SourceRow) -> tuple[Original, int]:
        nonlocal live, live_peak
        time.sleep(random.uniform(0, 0.002))
        original, reserved = real(self, run, index, r)  # type: ignore[arg-type]
        with lock:
            live += len(original.data or b"")
            live_peak = max(live_peak, live)
        return original, reserved

    monkeypatch.setattr(Fetcher, "_fetch_local", counted)
    with Fetcher(root=str(src), threads=8, max_bytes_in_flight=budget) as fetcher:
        stream = fetcher.fetch(row(str(i), id=i) for i in range(len(sizes)))
        for i, original in enumerate(stream):
            assert original.row.id == i and original.data == blob(sizes[i], i)
            if i % 7 == 0:
                time.sleep(0.002)  # a slow consumer: the workers fill the budget meanwhile
            with lock:
                live -= len(original.data or b"")
    assert 0 < fetcher.peak_bytes_in_flight <= budget
    assert fetcher.peak_bytes_in_flight > budget // 2, "the budget was never used: no concurrency"
    assert live_peak <= budget and live == 0


def test_an_original_larger_than_the_budget_is_fetched_alone(src: Path) -> None:
    budget = 100 << 10
    sizes = [30 << 10] * 10 + [300 << 10] + [30 << 10] * 10
    for i, size in enumerate(sizes):
        write(src / f"{i}", blob(size, i))
    with Fetcher(root=str(src), threads=8, max_bytes_in_flight=budget) as fetcher:
        got = list(fetcher.fetch(row(str(i), id=i) for i in range(len(sizes))))
    assert [o.data for o in got] == [blob(size, i) for i, size in enumerate(sizes)]
    # Anything reserved beside the big one would have pushed the peak above its size.
    assert fetcher.peak_bytes_in_flight == 300 << 10


def test_big_originals_are_streamed_not_read(src: Path) -> None:
    write(src / "small.txt", blob(999, 1))
    write(src / "edge.bin", blob(1000, 2))
    write(src / "big.pdf", blob(50_000, 3))
    with Fetcher(root=str(src), big_file_bytes=1000, max_bytes_in_flight=4096) as fetcher:
        small, edge, big = fetcher.fetch([row("small.txt"), row("edge.bin"), row("big.pdf")])
    assert small.data == blob(999, 1) and small.open is None
    for original, data in ((edge, blob(1000, 2)), (big, blob(50_000, 3))):
        assert original.data is None and original.open is not None and original.error is None
        assert original.size == len(data)
        for _ in range(2):  # each call is a fresh stream
            with original.open() as stream:
                chunks = iter(lambda: stream.read(4096), b"")
                assert b"".join(chunks) == data
    assert big.content_type == "application/pdf"
    assert fetcher.peak_bytes_in_flight == 999  # big originals reserve nothing
    write(src / "big.pdf", blob(10, 4))
    with pytest.raises(OriginalChanged, match="when it was fetched"):
        big.open()
    (src / "big.pdf").unlink()
    with pytest.raises(OriginalChanged, match="no such file"):
        big.open()


def test_per_row_failures_leave_the_other_rows_alone(src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(src / "ok1", b"one")
    write(src / "ok2", b"two")
    (src / "folder").mkdir()
    locked = write(src / "locked", b"secret")
    write(tmp_path / "outside", b"outside")
    (src / "escape").symlink_to(tmp_path / "outside")
    (src / "inner").symlink_to(src / "ok1")
    write(src / "big", blob(5000))
    if os.geteuid() == 0:  # root reads through chmod 000: refuse that one path at open instead
        real_open = os.open

        def denying_open(path: object, *args: object, **kwargs: object) -> int:
            if os.fspath(path) == str(locked.resolve()):  # type: ignore[arg-type]
                raise PermissionError(13, "Permission denied", path)
            return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(os, "open", denying_open)
    else:
        locked.chmod(0)
    cases = [
        (row("ok1"), None),
        (row("missing"), "no such file"),
        (row("folder"), "is a directory"),
        (row("locked"), "permission denied"),
        (row("big"), None),  # a big original: streamed later through open()
        (row("../outside"), "outside the source root"),
        (row("escape"), "outside the source root"),
        (row(""), "empty path"),
        (row("a\x00b"), "NUL"),
        (row("ftp://host/x"), "only local paths and s3://"),
        (row("inner"), None),
        (row("ok2"), None),
    ]
    with Fetcher(root=str(src), big_file_bytes=1000) as fetcher:
        got = list(fetcher.fetch(r for r, _ in cases))
    assert [o.row for o in got] == [r for r, _ in cases]
    for original, (_, words) in zip(got, cases):
        if words is None:
            assert original.error is None, original.error
        else:
            assert_failed(original, words)
    assert got[0].data == b"one" and got[10].data == b"one" and got[11].data == b"two"
    assert got[4].open is not None


def test_symlinked_folders_are_checked_once_and_never_lead_outside(src: Path, tmp_path: Path) -> None:
    write(src / "d" / "a", b"a")
    write(src / "d" / "b", b"b")
    write(tmp_path / "outside" / "a", b"secret")
    (src / "inlink").symlink_to(src / "d")
    (src / "outlink").symlink_to(tmp_path / "outside")
    (src / "d" / "up").symlink_to(tmp_path / "outside" / "a")
    paths = ["d/a", "inlink/b", "outlink/a", "d/b", "outlink/a", "d/up", "d/../d/a", "d/../../outside/a", "inlink/../outlink/a"]
    with Fetcher(root=str(src)) as fetcher:
        got = {p: o for p, o in zip(paths, fetcher.fetch(row(p, id=i) for i, p in enumerate(paths)))}
    assert got["d/a"].data == b"a" and got["inlink/b"].data == b"b" and got["d/b"].data == b"b" and got["d/../d/a"].data == b"a"
    for bad in ("outlink/a", "d/up", "d/../../outside/a", "inlink/../outlink/a"):
        assert_failed(got[bad], "outside the source root")


def test_cached_local_reads_stay_in_the_consumers_thread(src: Path) -> None:
    for i in range(500):
        write(src / f"{i % 7}" / f"{i}", blob(1000, i))
    before = Snapshot()
    with Fetcher(root=str(src), threads=8) as fetcher:
        for i, original in enumerate(fetcher.fetch(row(f"{i % 7}/{i}", id=i) for i in range(500))):
            assert original.data == blob(1000, i)
            assert before.new_threads() == []
    assert fetcher.inline_rows == 500


def test_slow_local_reads_go_to_the_pool_and_come_back(src: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    n = 600
    for i in range(n):
        write(src / f"{i}", blob(500, i))
    monkeypatch.setattr(fetch_module, "PROBE_EVERY", 64)
    real = Fetcher._fetch_local
    reader: dict[int, str] = {}

    def disk(self: Fetcher, run: object, index: int, r: SourceRow) -> tuple[Original, int]:
        if index < 200:
            time.sleep(0.002)  # a cold disk for the first rows, then the page cache
        reader[index] = threading.current_thread().name
        return real(self, run, index, r)  # type: ignore[arg-type]

    monkeypatch.setattr(Fetcher, "_fetch_local", disk)
    with Fetcher(root=str(src), threads=8) as fetcher:
        got = list(fetcher.fetch(row(str(i), id=i) for i in range(n)))
    assert [o.row.id for o in got] == list(range(n)) and all(o.data == blob(500, o.row.id) for o in got)
    pooled = [i for i, name in reader.items() if name.startswith("desq-fetch")]
    assert pooled and min(pooled) < 50, "slow reads stayed inline"
    assert all(reader[i] == threading.current_thread().name for i in range(n - 100, n)), "fast reads never came back inline"


def test_local_reads_slowed_only_by_busy_cpus_stay_inline(src: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read that takes long without blocking (its thread waited for a CPU, not for a disk) gains
    nothing on the pool: it stays in the consumer's thread."""
    n = 300
    for i in range(n):
        write(src / f"{i}", blob(500, i))
    real = Fetcher._fetch_local
    reader: dict[int, str] = {}

    def busy(self: Fetcher, run: object, index: int, r: SourceRow) -> tuple[Original, int]:
        until = time.perf_counter() + 4 * fetch_module.SLOW_LOCAL_READ
        while time.perf_counter() < until:
            pass
        reader[index] = threading.current_thread().name
        return real(self, run, index, r)  # type: ignore[arg-type]

    monkeypatch.setattr(Fetcher, "_fetch_local", busy)
    with Fetcher(root=str(src), threads=8) as fetcher:
        got = list(fetcher.fetch(row(str(i), id=i) for i in range(n)))
    assert [o.data for o in got] == [blob(500, i) for i in range(n)]
    assert {name for name in reader.values()} == {threading.current_thread().name} and fetcher.inline_rows == n


def test_relative_paths_need_a_root(tmp_path: Path) -> None:
    absolute = write(tmp_path / "a.txt", b"abs")
    with Fetcher() as fetcher:
        relative, ok = fetcher.fetch([row("a.txt"), row(str(absolute))])
    assert_failed(relative, "no source root")
    assert ok.data == b"abs"


def _fake_size(monkeypatch: pytest.MonkeyPatch, target: Path, delta: int) -> None:
    """Make fstat of ``target`` say ``delta`` bytes more than it has (Linux: via /proc/self/fd)."""
    real_fstat = os.fstat

    def fstat(fd: int) -> os.stat_result:
        st = real_fstat(fd)
        if os.readlink(f"/proc/self/fd/{fd}") == str(target.resolve()):
            fields = list(st[:10])
            fields[6] = st.st_size + delta
            return os.stat_result(fields)
        return st

    monkeypatch.setattr(os, "fstat", fstat)


@pytest.mark.parametrize(("delta", "words"), [(10, "read 20 of 30 bytes"), (-5, "grew")])
def test_a_file_that_changes_while_read_is_a_row_error(src: Path, monkeypatch: pytest.MonkeyPatch, delta: int, words: str) -> None:
    target = write(src / "changing", blob(20))
    write(src / "fine", b"fine")
    _fake_size(monkeypatch, target, delta)
    with Fetcher(root=str(src)) as fetcher:
        changing, fine = fetcher.fetch([row("changing"), row("fine")])
    assert_failed(changing, words)
    assert fine.data == b"fine"
    # Both rows may be in flight at once; the changed file reserves no more than its stated size.
    assert fetcher.peak_bytes_in_flight <= 20 + abs(delta) + len(b"fine")


def test_content_type_is_guessed_from_the_name_then_the_path(src: Path) -> None:
    for name in ("report.pdf", "a.tar.gz", "x.des", "noext", "page.HTML"):
        write(src / name, b"x")
    rows = [
        row("report.pdf", name="12345"),  # uid mode: the name says nothing, the path does
        row("a.tar.gz"),
        row("x.des"),
        row("noext"),
        row("page.HTML", name="page.html"),
        row("noext", name="picture.png"),
    ]
    with Fetcher(root=str(src)) as fetcher:
        types = [o.content_type for o in fetcher.fetch(rows)]
    assert types == ["application/pdf", "application/gzip", None, None, "text/html", "image/png"]


# --- laziness and shutdown ----------------------------------------------------------------------


def test_rows_are_consumed_lazily(src: Path) -> None:
    write(src / "f", b"data")
    pulled = 0

    def endless() -> Iterator[SourceRow]:
        nonlocal pulled
        for i in itertools.count():
            pulled += 1
            yield row("f", id=i)

    before = Snapshot()
    with Fetcher(root=str(src), threads=4) as fetcher:
        stream = fetcher.fetch(endless())
        first = list(itertools.islice(stream, 5))
        assert [o.row.id for o in first] == [0, 1, 2, 3, 4] and all(o.data == b"data" for o in first)
        assert pulled <= 5 + fetcher.window + 1
        stream.close()  # type: ignore[attr-defined]
    assert before.new_threads() == []


def test_closing_early_cancels_the_work_and_closing_the_fetcher_stops_the_threads(src: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(100):
        write(src / f"{i}", blob(1000, i))
    started = 0
    lock = threading.Lock()
    real = Fetcher._fetch_local

    def slow(self: Fetcher, run: object, index: int, r: SourceRow) -> object:
        nonlocal started
        with lock:
            started += 1
        time.sleep(0.02)
        return real(self, run, index, r)  # type: ignore[arg-type]

    monkeypatch.setattr(Fetcher, "_fetch_local", slow)
    before = Snapshot()
    # A budget of one original: the workers ahead wait for their reservation when closed.
    fetcher = Fetcher(root=str(src), threads=8, max_bytes_in_flight=1000)
    stream = fetcher.fetch(row(str(i), id=i) for i in range(100))
    assert [next(stream).row.id for _ in range(8)] == list(range(8))  # the first few are timed inline
    assert before.new_threads() != []
    t0 = time.monotonic()
    stream.close()  # type: ignore[attr-defined]
    assert time.monotonic() - t0 < 2
    assert started < 40, "the pending rows were fetched anyway"
    settled = started
    time.sleep(0.1)
    assert started == settled, "rows were still fetched after the stream was closed"
    # The pool's threads stay for the fetcher's next fetch (a packer's next container).
    pool = set(before.new_threads())
    assert [o.row.id for o in fetcher.fetch(row(str(i), id=i) for i in range(20))] == list(range(20))
    assert set(before.new_threads()) <= pool
    # Closing the fetcher itself stops a fetch that is still open, and refuses new ones.
    stream = fetcher.fetch(row(str(i), id=i) for i in range(100))
    assert next(stream).row.id == 0
    fetcher.close()
    assert before.new_threads() == []
    with pytest.raises(FetchError, match="closed"):
        list(stream)
    with pytest.raises(FetchError, match="closed"):
        fetcher.fetch([])


def test_an_unstarted_fetch_starts_no_threads(src: Path) -> None:
    before = Snapshot()
    with Fetcher(root=str(src)) as fetcher:
        fetcher.fetch([row("x")])
    assert before.new_threads() == []


def test_delete_original_local(src: Path, tmp_path: Path) -> None:
    relative = write(src / "d" / "rel.txt", b"r")
    absolute = write(tmp_path / "abs.txt", b"a")
    target = write(src / "target", b"t")
    (src / "link").symlink_to(target)
    outside = write(tmp_path / "outside", b"o")
    (src / "escape").symlink_to(outside)
    (src / "folder").mkdir()
    with Fetcher(root=str(src)) as fetcher:
        fetcher.delete_original(row("d/rel.txt"))
        fetcher.delete_original(row(str(absolute)))
        fetcher.delete_original(row("link"))  # the link the row names, never what it points to
        fetcher.delete_original(row("d/rel.txt"))  # already gone: fine
        fetcher.delete_original(row("never/was"))
        for refused in ("../outside", "escape", ""):
            with pytest.raises(FetchError, match="refused"):
                fetcher.delete_original(row(refused))
        with pytest.raises(FetchError, match="is a directory"):
            fetcher.delete_original(row("folder"))
    assert not relative.exists() and not absolute.exists() and not (src / "link").is_symlink()
    assert target.read_bytes() == b"t" and outside.read_bytes() == b"o" and (src / "escape").is_symlink()


# --- S3 ---------------------------------------------------------------------------------------


@pytest.mark.integration
def test_s3_originals(s3_endpoint: str, s3_bucket: str, src: Path) -> None:
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.put_object(Bucket=s3_bucket, Key="dir/ü n x.bin", Body=b"small", ContentType="text/x-custom")
    client.put_object(Bucket=s3_bucket, Key="untyped/data.json", Body=b"{}")
    client.put_object(Bucket=s3_bucket, Key="big/film.mp4", Body=blob(20_000, 7))
    write(src / "local.txt", b"local")
    base = f"s3://{s3_bucket}"
    rows = [
        row(f"{base}/dir/ü n x.bin", id=1),
        row(f"{base}/untyped/data.json", id=2),
        row(f"{base}/big/film.mp4", id=3),
        row(f"{base}/no/such key", id=4),
        row("s3://", id=5),
        row(f"{base}", id=6),
        row(f"{base}/", id=7),
        row("s3:///key", id=8),
        row(f"s3://no-such-bucket-{s3_bucket}/k", id=9),
        row("local.txt", id=10),
    ]
    with Fetcher(root=str(src), s3_endpoint_url=s3_endpoint, big_file_bytes=10_000) as fetcher:
        got = list(fetcher.fetch(rows))
        assert [o.row.id for o in got] == list(range(1, 11))
        small, untyped, big = got[:3]
        assert (small.data, small.size, small.content_type, small.error) == (b"small", 5, "text/x-custom", None)
        assert (untyped.data, untyped.content_type) == (b"{}", "application/json")  # S3's default type: guessed
        assert big.data is None and big.size == 20_000 and big.content_type == "video/mp4"
        assert big.open is not None
        stream = big.open()
        try:
            assert b"".join(iter(lambda: stream.read(3000), b"")) == blob(20_000, 7)
        finally:
            stream.close()
        assert_failed(got[3], "no such object")
        for malformed in got[4:8]:
            assert_failed(malformed, "not an s3://bucket/key URL")
        assert_failed(got[8], "no such bucket")
        assert got[9].data == b"local"
        assert 5 <= fetcher.peak_bytes_in_flight <= 5 + 2 + 5  # the small ones at most; big ones reserve nothing
        # A big original replaced since fetch() is refused when opened, not streamed with the wrong size.
        client.put_object(Bucket=s3_bucket, Key="big/film.mp4", Body=blob(20_000, 8))
        with pytest.raises(OriginalChanged, match="changed"):
            big.open()


@pytest.mark.integration
def test_s3_many_originals_in_order_under_the_budget(s3_endpoint: str, s3_bucket: str) -> None:
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    sizes = [random.Random(i).randrange(1, 8000) for i in range(60)]
    for i, size in enumerate(sizes):
        client.put_object(Bucket=s3_bucket, Key=f"k/{i}", Body=blob(size, i))
    budget = 16_000
    with Fetcher(s3_client=client, threads=8, max_bytes_in_flight=budget) as fetcher:
        got = list(fetcher.fetch(row(f"s3://{s3_bucket}/k/{i}", id=i) for i in range(len(sizes))))
    assert [o.row.id for o in got] == list(range(len(sizes)))
    assert [o.data for o in got] == [blob(size, i) for i, size in enumerate(sizes)]
    assert 0 < fetcher.peak_bytes_in_flight <= budget
    client.head_bucket(Bucket=s3_bucket)  # a client passed in is not closed by the fetcher


@pytest.mark.integration
def test_s3_delete_original(s3_endpoint: str, s3_bucket: str) -> None:
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.put_object(Bucket=s3_bucket, Key="a b/ü.txt", Body=b"x")
    with Fetcher(s3_endpoint_url=s3_endpoint) as fetcher:
        fetcher.delete_original(row(f"s3://{s3_bucket}/a b/ü.txt"))
        fetcher.delete_original(row(f"s3://{s3_bucket}/a b/ü.txt"))  # already gone: fine
        with pytest.raises(FetchError, match="not an s3://bucket/key URL"):
            fetcher.delete_original(row(f"s3://{s3_bucket}"))
    assert client.list_objects_v2(Bucket=s3_bucket).get("KeyCount", 0) == 0


def test_s3_without_credentials_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    before = Snapshot()
    with Fetcher(s3_endpoint_url="http://127.0.0.1:1") as fetcher, pytest.raises(FetchError, match="no S3 credentials"):
        list(fetcher.fetch([row("s3://b/k")]))
    assert before.new_threads() == []
    assert fetch_module.FetchError is FetchError


def test_an_unreachable_s3_stops_the_fetch(aws_env: None) -> None:
    """A dead endpoint is the whole fetch's failure (retried later), not a failure of every row."""
    from desq.source.fetch import OriginalsUnavailable

    rows = [SourceRow(id=i, name=f"n{i}", created_at=None, path=f"s3://abc/k{i}", date=date(2025, 11, 20), shard=0) for i in range(3)]
    with Fetcher(s3_endpoint_url="http://127.0.0.1:1", threads=2) as fetcher:
        with pytest.raises(OriginalsUnavailable, match="does not answer"):
            list(fetcher.fetch(rows))


# --- S3 failures, answered by a stand-in client -------------------------------------------------


class _Body:
    """A GET's body: ``data``, after breaking off ``breaks`` times."""

    def __init__(self, data: bytes, breaks: int = 0) -> None:
        self.data, self.breaks = data, breaks

    def read(self) -> bytes:
        from botocore.exceptions import IncompleteReadError

        if self.breaks:
            self.breaks -= 1
            raise IncompleteReadError(actual_bytes=1, expected_bytes=len(self.data))
        return self.data

    def close(self) -> None:
        pass


class _Client:
    """Answers get_object from a list (a dict, or an exception to raise) and records every request."""

    def __init__(self, *answers: object) -> None:
        self.answers = list(answers)
        self.requests: list[dict[str, object]] = []

    def get_object(self, **request: object) -> object:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def _answer(data: bytes, body: _Body | None = None, size: int | None = None) -> dict[str, object]:
    return {"Body": body or _Body(data), "ContentLength": len(data) if size is None else size, "ETag": '"v1"'}


def _client_error(status: int, code: str, message: str = "") -> Exception:
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")


@pytest.mark.parametrize(("answer", "error"), [
    (_client_error(403, "AccessDenied", "Access Denied"), "'s3://b/k': access denied"),
    (_client_error(404, "NoSuchKey"), "'s3://b/k': no such object"),
    (_client_error(404, "NoSuchBucket"), "'s3://b/k': no such bucket"),
    (_client_error(400, "Odd", "two\nlines"), "'s3://b/k': S3 answered 400 Odd: two lines"),
    (_answer(b"abc", size=5), "'s3://b/k': read 3 of 5 bytes"),
])
def test_s3_row_errors_say_what_s3_answered(answer: object, error: str) -> None:
    with Fetcher(s3_client=_Client(answer)) as fetcher:
        assert one(fetcher, row("s3://b/k")).error == error


def test_a_broken_s3_body_is_fetched_again_pinned_to_its_version() -> None:
    client = _Client(_answer(b"whole", _Body(b"whole", breaks=1)), _answer(b"whole"))
    with Fetcher(s3_client=client) as fetcher:
        assert one(fetcher, row("s3://b/k")).data == b"whole"
    assert client.requests == [{"Bucket": "b", "Key": "k"}, {"Bucket": "b", "Key": "k", "IfMatch": '"v1"'}]
    replaced = _Client(_answer(b"whole", _Body(b"whole", breaks=1)), _client_error(412, "PreconditionFailed"))
    with Fetcher(s3_client=replaced) as fetcher:
        assert one(fetcher, row("s3://b/k")).error == "'s3://b/k': the object changed while it was fetched"


def test_a_body_that_keeps_breaking_off_is_a_row_error() -> None:
    attempts = fetch_module.S3_ATTEMPTS
    client = _Client(*(_answer(b"whole", _Body(b"whole", breaks=1)) for _ in range(attempts)))
    with Fetcher(s3_client=client) as fetcher:
        got = one(fetcher, row("s3://b/k"))
    assert got.error == f"'s3://b/k': the download broke off {attempts} times (IncompleteReadError)"
    assert len(client.requests) == attempts


def test_a_busy_s3_stops_the_fetch() -> None:
    from desq.source.fetch import OriginalsUnavailable

    client = _Client(_client_error(503, "SlowDown", "Please reduce your request rate."))
    with Fetcher(s3_client=client) as fetcher, pytest.raises(OriginalsUnavailable) as caught:
        one(fetcher, row("s3://b/k"))
    assert str(caught.value) == "the originals' S3 does not answer: 's3://b/k': S3 answered 503 SlowDown: Please reduce your request rate."


@pytest.mark.parametrize(("status", "code", "whole_fetch"), [
    (500, "InternalError", True), (503, "ServiceUnavailable", True), (400, "Throttling", True), (429, "SlowDown", True),
    (400, "RequestTimeout", False), (400, "InvalidRequest", False),
])
def test_only_a_failure_of_the_service_stops_the_fetch(status: int, code: str, whole_fetch: bool) -> None:
    """5xx and throttling fail the whole fetch (retried later); any other answer fails one row."""
    from desq.source.fetch import OriginalsUnavailable

    with Fetcher(s3_client=_Client(_client_error(status, code, "no"))) as fetcher:
        if whole_fetch:
            with pytest.raises(OriginalsUnavailable):
                one(fetcher, row("s3://b/k"))
        else:
            assert one(fetcher, row("s3://b/k")).error == f"'s3://b/k': S3 answered {status} {code}: no"
