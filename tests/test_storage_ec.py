"""The erasure-coded backend passes the storage conformance suite over folders and S3 nodes,
and reads survive what the code is for: lost, damaged and unreachable nodes."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from itertools import combinations
from pathlib import Path

import pytest

from desq.storage import Storage, StorageError, StorageUnavailable
from desq.storage.base import NotFound, StaleObject
from desq.storage.counting import CountingStorage
from desq.storage.ec import ECStorage
from desq.storage.ec_format import FOOTER_SIZE, Version, fragment_key, new_version, parse_fragment_key
from desq.storage.ec_repair import check, objects, repair
from desq.storage.local import LocalStorage
from desq.storage.s3 import S3Storage
from storage_conformance import StorageConformance

MiB = 1 << 20


def folders(root: Path, n: int) -> list[LocalStorage]:
    return [LocalStorage(root / f"node{i}") for i in range(n)]


class TestECOverFolders(StorageConformance):
    @pytest.fixture
    def storage(self, tmp_path: Path) -> Storage:
        return ECStorage(folders(tmp_path, 6), 4, 2)


class TestECSmallCells(StorageConformance):
    """Cells of 4 KiB: every multi-MiB object of the suite spans hundreds of stripes."""

    @pytest.fixture
    def storage(self, tmp_path: Path) -> Storage:
        return ECStorage(folders(tmp_path, 5), 3, 2, cell=4096, block=1024)


@pytest.mark.integration
class TestECOverS3(StorageConformance):
    held_bytes = 4 * 6 * MiB  # a node gets a quarter of it: more than one part each
    @pytest.fixture
    def storage(self, s3_endpoint: str, s3_bucket: str) -> Iterator[Storage]:
        yield ECStorage([S3Storage(f"s3://{s3_bucket}/node{i}", endpoint_url=s3_endpoint, part_size=5 << 20) for i in range(6)], 4, 2)


# --- faults: what the code is for -----------------------------------------------------------



SMALL = dict(cell=8192, block=1024)


def counted_nodes(root: Path, n: int) -> list[CountingStorage]:
    return [CountingStorage(node) for node in folders(root, n)]


def ec_over(root: Path, **geometry: int) -> ECStorage:
    return ECStorage(folders(root, 6), 4, 2, **(geometry or SMALL))


def blobs(ec: ECStorage) -> dict[str, bytes]:
    """Objects of awkward sizes: empty, one byte, a cell +- 1, many stripes with a ragged end."""
    stripe = ec.geometry.stripe
    sizes = {"empty": 0, "one": 1, "cell-1": ec.geometry.cell - 1, "cell+1": ec.geometry.cell + 1,
             "stripe": stripe, "many/ragged": 5 * stripe + 4097, "k-1 tail": 3 * stripe + 3}
    out = {key: os.urandom(size) for key, size in sizes.items()}
    for key, data in out.items():
        ec.put(key, data)
    return out


def flip(path: Path, at: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[at] ^= 0x40
    path.write_bytes(bytes(raw))


def fragment_file(root: Path, i: int, ec: ECStorage, key: str) -> Path:
    version = Version.from_etag(ec.head(key).etag)
    assert version is not None
    return root / f"node{i}" / fragment_key(key, version.id)


def read_all(ec: ECStorage, data: dict[str, bytes]) -> None:
    for key, blob in data.items():
        assert ec.read(key, 0, len(blob)) == blob, key
        tail = ec.read_suffix(key, 100)[0]
        assert tail == blob[-100:], key
        if len(blob) > 10:
            assert ec.read(key, len(blob) // 3, len(blob) // 3) == blob[len(blob) // 3 : 2 * (len(blob) // 3)], key


def test_a_warm_read_inside_one_cell_is_one_request_to_one_node(tmp_path: Path) -> None:
    nodes = counted_nodes(tmp_path, 6)
    ec = ECStorage(list(nodes), 4, 2)
    blob = os.urandom(3 * MiB)
    etag = ec.put("c.des", blob).etag
    for node in nodes:
        node.requests.clear()
    assert ec.read("c.des", 1_500_000, 4000, if_match=etag) == blob[1_500_000:1_504_000]
    asked = [(i, r) for i, node in enumerate(nodes) for r in node.requests]
    assert asked == [(1, f"read c.des~{Version.from_etag(etag).id.hex()}")]  # byte 1.5M is in cell 1 of stripe 0
    assert ec.events.total("degraded_read") == 0


def test_any_m_folders_removed_every_byte_still_reads(tmp_path: Path) -> None:
    ec = ec_over(tmp_path)
    data = blobs(ec)
    for gone in combinations(range(6), 2):
        for i in gone:
            shutil.move(tmp_path / f"node{i}", tmp_path / f"away{i}")
        read_all(ec, data)
        assert [info.key for info in ec.list()] == sorted(data)
        for i in gone:
            shutil.move(tmp_path / f"away{i}", tmp_path / f"node{i}")
    assert ec.events.total("degraded_read") > 0


def test_one_removed_and_another_bit_flipped_still_reads(tmp_path: Path) -> None:
    ec = ec_over(tmp_path)
    data = blobs(ec)
    shutil.rmtree(tmp_path / "node0")
    for key, blob in data.items():
        if blob:
            path = fragment_file(tmp_path, 2, ec, key)
            for at in range(0, path.stat().st_size - FOOTER_SIZE, 997):
                flip(path, at)
    read_all(ec, data)
    assert ec.events.total("fragment_error") > 0


def test_more_than_m_lost_fails_clearly_with_no_bytes(tmp_path: Path) -> None:
    ec = ec_over(tmp_path)
    blob = os.urandom(100_000)
    etag = ec.put("c.des", blob).etag
    for i in (1, 3, 5):
        shutil.rmtree(tmp_path / f"node{i}")
    with pytest.raises(StorageUnavailable) as failed:
        ec.read("c.des", 0, len(blob), if_match=etag)
    assert "3 of 6 fragments unreadable, 4 needed" in str(failed.value)


def test_unreachable_nodes_degrade_reads_and_readiness_counts_them(tmp_path: Path, aws_env: None) -> None:
    dead = [S3Storage(f"s3://desq-dead/n{i}", endpoint_url="http://127.0.0.1:9", max_attempts=1, connect_timeout=0.2) for i in range(2)]
    ec = ECStorage([*folders(tmp_path, 4), *dead], 3, 3, **SMALL)
    blob = os.urandom(50_000)
    etag = ec.put("c.des", blob).etag
    assert ec.read("c.des", 0, len(blob), if_match=etag) == blob
    states = ec.node_states()
    assert [why is None for _, why in states] == [True] * 4 + [False] * 2
    shutil.rmtree(tmp_path / "node0")
    assert ec.read("c.des", 0, len(blob), if_match=etag) == blob  # 3 of 6 left: K=3
    assert [why is None for _, why in ec.node_states()] == [False] + [True] * 3 + [False] * 2


def test_swapped_nodes_never_give_wrong_bytes(tmp_path: Path) -> None:
    ec = ec_over(tmp_path)
    blob = os.urandom(200_000)
    etag = ec.put("c.des", blob).etag
    nodes = folders(tmp_path, 6)
    swapped = ECStorage([nodes[1], nodes[0], nodes[3], nodes[2], nodes[5], nodes[4]], 4, 2, **SMALL)
    with pytest.raises(StorageUnavailable):
        swapped.read("c.des", 0, len(blob), if_match=etag)


def test_a_replaced_object_refuses_reads_pinned_to_the_old_one(tmp_path: Path) -> None:
    ec = ec_over(tmp_path)
    old = ec.put("c.des", b"a" * 50_000)
    ec.put("c.des", b"b" * 60_000)
    with pytest.raises(StaleObject):
        ec.read("c.des", 0, 10, if_match=old.etag)
    with pytest.raises(StaleObject):
        ec.read("c.des", 0, 10, if_match="3f2a-deadbeef")  # not an erasure-coded version at all


def killed_before_its_marker(ec: ECStorage, key: str, data: bytes, monkeypatch: pytest.MonkeyPatch) -> Version:
    """Write ``key`` and die after its fragments were stored, before any commit marker."""
    class Killed(BaseException):
        pass

    def die(*_: object) -> list[int]:
        raise Killed
    upload = ec.open_upload(key)
    upload.write(data)
    with monkeypatch.context() as patch:
        patch.setattr(ECStorage, "_mark", die)
        with pytest.raises(Killed):
            upload.commit()
    [(_, version)] = [parsed for name in os.listdir(ec.nodes[0].root) if (parsed := parse_fragment_key(name)) and parsed[0] == key and
                      fragment_key(key, parsed[1]) not in {fragment_key(key, v.id) for v in ec.marked(key)}]
    return Version(version, len(data), ec.geometry.cell, ec.geometry.block)


def test_a_write_killed_before_k_plus_1_fragments_is_invisible_and_recover_clears_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ec = ec_over(tmp_path)
    ec.put("c.des", b"old" * 1000)
    version = killed_before_its_marker(ec, "c.des", os.urandom(100_000), monkeypatch)
    for i in (0, 5):  # the kill came after 4 of its 6 fragments: K, not K+1
        ec.nodes[i].delete(fragment_key("c.des", version.id))
    assert ec.read("c.des", 0, 3) == b"old" and ec.head("c.des").size == 3000
    assert [p.key for p in ec.uploads()] == ["c.des"]
    assert ec.abort_stale_uploads(3600) == 0  # too young: it could be a packer still writing
    assert ec.abort_stale_uploads(0) == 1
    assert list(ec.uploads()) == [] and ec.read("c.des", 0, 3) == b"old"
    current = Version.from_etag(ec.head("c.des").etag)
    assert sorted(p.name for p in (tmp_path / "node1").iterdir()) == sorted([fragment_key("c.des", current.id), current.marker("c.des")])


def test_a_write_killed_after_k_plus_1_fragments_is_committed_and_recover_marks_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ec = ec_over(tmp_path)
    ec.put("c.des", b"old" * 1000)
    new = os.urandom(100_000)
    version = killed_before_its_marker(ec, "c.des", new, monkeypatch)
    ec.nodes[2].delete(fragment_key("c.des", version.id))  # 5 of 6 stored: K+1, its data whole
    assert ec.read("c.des", 0, 3) == b"old"  # readers see the marked version until recover runs
    ec.abort_stale_uploads(3600)
    assert ec.read("c.des", 0, 3) == b"old"  # too young: its writer may be marking it right now
    ec.abort_stale_uploads(0)
    assert ec.head("c.des").etag == version.etag and ec.read("c.des", 0, len(new)) == new
    assert list(ec.leftovers()) == []
    [(key, current, marked)] = objects(ec)
    assert [p.line() for p in check(ec, key, current, marked)] == [f"BAD c.des: fragment 2 on {ec.nodes[2].url}: missing"]


def stored(root: Path, key: str) -> dict[int, list[str]]:
    """Each node folder's files of ``key`` (fragments and markers), by node."""
    return {i: sorted(p.name for p in (root / f"node{i}").glob(f"{key}~*")) for i in range(6)}


def away(root: Path, *nodes: int) -> None:
    for i in nodes:
        shutil.move(root / f"node{i}", root / f"away{i}")


def back(root: Path, *nodes: int) -> None:
    for i in nodes:
        shutil.move(root / f"away{i}", root / f"node{i}")


def deleted_while_away(root: Path, node: int) -> ECStorage:
    """An archive whose "c.des" was deleted while ``node`` was away: that node still holds it."""
    ec = ec_over(root)
    ec.put("c.des", b"old" * 1000)
    away(root, node)
    ec.delete("c.des")
    back(root, node)
    return ec


def test_a_delete_with_a_node_away_stays_deleted_when_it_comes_back(tmp_path: Path) -> None:
    ec = ec_over(tmp_path)
    ec.put("c.des", os.urandom(100_000))
    ec.put("other", b"x")
    away(tmp_path, 5)
    ec.delete("c.des")
    back(tmp_path, 5)  # with the deleted object's fragment and marker
    assert len(stored(tmp_path, "c.des")[5]) == 2
    for look in (lambda: ec.head("c.des"), lambda: ec.read("c.des", 0, 10), lambda: ec.read_suffix("c.des", 10)):
        with pytest.raises(NotFound):
            look()
    assert [i.key for i in ec.list()] == ["other"] and [key for key, _, _ in objects(ec)] == ["other"]
    with pytest.raises(StorageError, match="no object 'c.des'"):
        list(objects(ec, ["c.des"]))
    away(tmp_path, 3)  # recover with a node away: node 5's leftovers go, the deletion marker stays for node 3
    ec.abort_stale_uploads(6 * 3600)
    assert not (tmp_path / "node3").exists()  # not made again by marking "other" there
    back(tmp_path, 3)
    left = stored(tmp_path, "c.des")
    assert left[5] == [] and all(len(left[i]) == 1 and left[i][0].endswith("~0-0-0") for i in range(5)), left
    with pytest.raises(NotFound):
        ec.head("c.des")
    ec.abort_stale_uploads(6 * 3600)  # every node there and nothing left to hide: the markers go too
    assert stored(tmp_path, "c.des") == {i: [] for i in range(6)} and list(ec.leftovers()) == []
    assert ec.read("other", 0, 1) == b"x"
    with pytest.raises(StaleObject):  # a deletion's version names no bytes
        ec.read("other", 0, 1, if_match=Version.deletion(after=new_version()).etag)


def test_a_write_after_a_delete_with_a_node_away_is_the_one_read(tmp_path: Path) -> None:
    ec = ec_over(tmp_path)
    ec.put("c.des", b"old" * 1000)
    away(tmp_path, 0)
    ec.delete("c.des")
    back(tmp_path, 0)
    new = os.urandom(50_000)
    version = Version.from_etag(ec.put("c.des", new).etag)
    assert ec.read("c.des", 0, len(new)) == new and [i.key for i in ec.list()] == ["c.des"]
    assert list(ec.leftovers()) == []  # the write dropped what the deletion hid, and the deletion
    assert stored(tmp_path, "c.des") == {i: sorted([fragment_key("c.des", version.id), version.marker("c.des")]) for i in range(6)}


@pytest.mark.integration
def test_a_delete_with_an_s3_node_unreachable_stays_deleted(tmp_path: Path, s3_endpoint: str, s3_bucket: str) -> None:
    site = S3Storage(f"s3://{s3_bucket}/node5", endpoint_url=s3_endpoint)
    ec = ECStorage([*folders(tmp_path, 5), site], 4, 2, **SMALL)
    ec.put("c.des", os.urandom(30_000))
    ec.nodes[5] = S3Storage(f"s3://{s3_bucket}/node5", endpoint_url="http://127.0.0.1:9", max_attempts=1, connect_timeout=0.2)
    ec.delete("c.des")
    ec.nodes[5] = site  # it answers again, with the deleted version
    assert len(list(site.list("c.des~"))) == 2
    with pytest.raises(NotFound):
        ec.head("c.des")
    assert list(ec.list()) == []
    ec.abort_stale_uploads(6 * 3600)
    assert list(site.list()) == [] and stored(tmp_path, "c.des") == {i: [] for i in range(6)}


def test_a_publish_staged_before_a_delete_and_made_after_it_wins(tmp_path: Path) -> None:
    """The deletion ranks just above what it hides, not at the time of the delete: a packer's
    staged write (its version id taken when it began) published after the delete is the one read."""
    ec = ec_over(tmp_path)
    ec.put("c.des", b"old" * 1000)
    new = os.urandom(40_000)
    with ec.open_upload("c.des.staging-1", staged=True) as upload:
        upload.write(new)
        upload.commit()
    away(tmp_path, 5)
    ec.delete("c.des")
    back(tmp_path, 5)
    ec.publish("c.des.staging-1", "c.des")
    assert ec.read("c.des", 0, len(new)) == new
    ec.abort_stale_uploads(0)
    assert ec.read("c.des", 0, len(new)) == new and [i.key for i in ec.list()] == ["c.des"] and list(ec.leftovers()) == []


def test_recover_keeps_a_deletion_while_what_it_hides_may_still_be_somewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ec = deleted_while_away(tmp_path, 5)
    real = LocalStorage.delete

    def stuck(self: LocalStorage, key: str) -> None:
        if self.root.name == "node5":
            raise StorageUnavailable("node5 is stuck", reason="stuck")
        real(self, key)
    with monkeypatch.context() as patch:  # node 5 cannot delete the old version: the deletion stays
        patch.setattr(LocalStorage, "delete", stuck)
        ec.abort_stale_uploads(6 * 3600)
    assert all(name.endswith("~0-0-0") for i in range(5) for name in stored(tmp_path, "c.des")[i]) and len(stored(tmp_path, "c.des")[5]) == 2
    with pytest.raises(NotFound):
        ec.head("c.des")
    killed = killed_before_its_marker(ec, "c.des", b"new" * 100, monkeypatch)  # a newer write, killed unmarked
    ec.abort_stale_uploads(6 * 3600)  # node 5's old version goes; the young killed write might be finished yet
    assert stored(tmp_path, "c.des")[5] == [fragment_key("c.des", killed.id)]
    with pytest.raises(NotFound):
        ec.head("c.des")
    assert all(any(name.endswith("~0-0-0") for name in stored(tmp_path, "c.des")[i]) for i in range(5))
    ec.abort_stale_uploads(0)  # now old enough: recover commits the killed write, the deletion goes
    assert ec.read("c.des", 0, 300) == b"new" * 100
    assert stored(tmp_path, "c.des") == {i: sorted([fragment_key("c.des", killed.id), killed.marker("c.des")]) for i in range(6)}


def test_a_delete_that_too_few_nodes_can_take_deletes_nothing(tmp_path: Path) -> None:
    ec = ec_over(tmp_path)
    blob = os.urandom(100_000)
    ec.put("c.des", blob)
    before = stored(tmp_path, "c.des")
    away(tmp_path, 1, 4)  # M away: 4 nodes left, K+1 = 5 needed for the deletion marker
    with pytest.raises(StorageUnavailable, match="2 of 6 nodes away, and its deletion marker needs 5; delete it again once they answer"):
        ec.delete("c.des")
    assert ec.read("c.des", 0, len(blob)) == blob
    real = LocalStorage.put

    def refused(self: LocalStorage, key: str, data: bytes, **kw: object) -> object:
        if self.root.name == "node3":
            raise StorageUnavailable("node3 refuses", reason="refused")
        return real(self, key, data, **kw)
    back(tmp_path, 1)
    with pytest.MonkeyPatch.context() as patch:  # 5 there, but one of them refuses the marker: undone
        patch.setattr(LocalStorage, "put", refused)
        with pytest.raises(StorageUnavailable, match="only 4 nodes took its deletion marker, 5 needed; delete it again$"):
            ec.delete("c.des")
    back(tmp_path, 4)
    assert stored(tmp_path, "c.des") == before
    assert ec.read("c.des", 0, len(blob)) == blob
    away(tmp_path, 0, 2, 3)
    with pytest.raises(StorageUnavailable, match="more than M=2 nodes do not answer"):
        ec.delete("c.des")
    back(tmp_path, 0, 2, 3)
    assert stored(tmp_path, "c.des") == before and ec.read("c.des", 0, len(blob)) == blob


def test_with_fewer_data_than_parity_fragments_a_deletion_needs_m_plus_1_nodes(tmp_path: Path) -> None:
    """Listings go on with M nodes silent, so a deletion on K+1 <= M nodes could go unseen."""
    ec = ECStorage(folders(tmp_path, 5), 2, 3, **SMALL)
    blob = os.urandom(20_000)
    ec.put("c.des", blob)
    away(tmp_path, 0, 1)
    with pytest.raises(StorageUnavailable, match="its deletion marker needs 4"):
        ec.delete("c.des")
    back(tmp_path, 1)
    ec.delete("c.des")
    back(tmp_path, 0)
    with pytest.raises(NotFound):
        ec.head("c.des")


def test_a_folder_unmounted_during_recover_keeps_the_deletion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ec = deleted_while_away(tmp_path, 5)
    real = LocalStorage.delete

    def unmounted(self: LocalStorage, key: str) -> None:
        if self.root.name == "node5" and self.root.exists():
            away(tmp_path, 5)  # its disk goes just as recover deletes there: a delete of nothing "succeeds"
        real(self, key)
    monkeypatch.setattr(LocalStorage, "delete", unmounted)
    ec.abort_stale_uploads(6 * 3600)
    back(tmp_path, 5)
    assert len(stored(tmp_path, "c.des")[5]) == 2
    with pytest.raises(NotFound):
        ec.head("c.des")
    monkeypatch.setattr(LocalStorage, "delete", real)
    ec.abort_stale_uploads(6 * 3600)
    assert stored(tmp_path, "c.des") == {i: [] for i in range(6)}


def test_a_write_with_fewer_than_k_plus_1_nodes_fails_and_leaves_nothing(tmp_path: Path) -> None:
    nodes: list[Storage] = folders(tmp_path, 4)
    dead = [S3Storage(f"s3://desq-dead/n{i}", endpoint_url="http://127.0.0.1:9", max_attempts=1, connect_timeout=0.2) for i in range(2)]
    ec = ECStorage(nodes + dead, 4, 2, **SMALL)
    with pytest.raises(StorageError, match="only 4 fragments stored, 5 needed"):
        ec.put("c.des", os.urandom(100_000))
    assert all(not any(p.is_file() for p in (tmp_path / f"node{i}").rglob("*")) for i in range(4))


def test_verify_names_each_bad_fragment_and_repair_restores_them(tmp_path: Path) -> None:
    ec = ec_over(tmp_path)
    data = blobs(ec)
    shutil.rmtree(tmp_path / "node4")
    flip(fragment_file(tmp_path, 1, ec, "many/ragged"), 5000)
    found = {key: check(ec, key, version, marked) for key, version, marked in objects(ec)}
    lines = [p.line() for problems in found.values() for p in problems]
    assert f"BAD many/ragged: fragment 1 on {ec.nodes[1].url}: damaged: block 4 fails its checksum" in lines
    assert all(any(p.index == 4 and p.what == "missing" for p in problems) for problems in found.values())
    read_all(ec, data)  # every file still reads meanwhile
    for key, version, marked in objects(ec):
        done = repair(ec, key, version, found[key])
        assert not done.failed and 4 in done.rebuilt
    assert all(check(ec, key, version, marked) == [] for key, version, marked in objects(ec))
    for i in (0, 2):  # the rebuilt fragments carry the data: lose two others, still byte-exact
        shutil.rmtree(tmp_path / f"node{i}")
    read_all(ec, data)


def test_repair_with_more_than_m_lost_says_so_and_stores_nothing(tmp_path: Path) -> None:
    ec = ec_over(tmp_path)
    ec.put("c.des", os.urandom(100_000))
    for i in (0, 1, 2):
        shutil.rmtree(tmp_path / f"node{i}")
    [(key, version, marked)] = objects(ec)
    done = repair(ec, key, version, check(ec, key, version, marked))
    assert done.rebuilt == [] and "could not rebuild fragment(s) 0, 1, 2" in done.failed[0]
    assert not (tmp_path / "node0").exists() or not any((tmp_path / "node0").rglob("*~*"))


def test_a_big_object_streams_in_bounded_memory(tmp_path: Path) -> None:
    import io
    import tracemalloc

    ec = ECStorage(folders(tmp_path, 6), 4, 2)
    blob = os.urandom(48 * MiB)
    tracemalloc.start()
    ec.put("big", io.BytesIO(blob))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 40 * MiB  # a stripe (4 MiB), its parity and sealed copies, one 8 MiB chunk read: not the object
    assert b"".join(ec.iter_read("big", 0, len(blob))) == blob


def test_a_forked_child_reads_with_threads_of_its_own(tmp_path: Path) -> None:
    """A Celery prefork child inherits the storage its parent built; the parent's threads stay behind."""
    ec = ec_over(tmp_path)
    blob = os.urandom(300_000)
    ec.put("c.des", blob)
    assert ec.read("c.des", 0, len(blob)) == blob  # the parent's pools exist now
    child = os.fork()
    if child == 0:
        import signal

        signal.alarm(30)
        os._exit(0 if ec.read("c.des", 0, len(blob)) == blob else 1)
    assert os.waitpid(child, 0)[1] == 0


def test_fsck_identifies_a_fragment_from_its_own_bytes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from desq.cli import run

    ec = ec_over(tmp_path)
    ec.put("20251120/FE.des", os.urandom(70_000))
    path = fragment_file(tmp_path, 5, ec, "20251120/FE.des")
    assert run(["fsck", str(path)]) == 0
    out = capsys.readouterr().out
    assert "fragment 5 of 4+2 (parity) of version" in out and "object of 70,000 bytes" in out and out.endswith(f"ok  {path}\n")
    flip(path, 3000)
    assert run(["fsck", str(path)]) == 1
    captured = capsys.readouterr()
    assert f"BAD {path}: block 2 fails its checksum" in captured.out and "damaged fragment: 1 problem(s)" in captured.err
    path.write_bytes(path.read_bytes()[:-200] + path.read_bytes()[-128:])
    assert run(["fsck", str(path)]) == 1 and "expected" in capsys.readouterr().out


def test_a_publish_killed_midway_is_finished_by_recover(tmp_path: Path) -> None:
    """Killed after renaming 5 of 6 fragments, before any marker: the version is committed (K+1
    stored) and its last fragment is still under the staging key; recover renames and marks it."""
    ec = ec_over(tmp_path)
    ec.put("c.des", b"old" * 1000)
    new = os.urandom(90_000)
    with ec.open_upload("c.des.staging-1", staged=True) as upload:
        upload.write(new)
        version = Version.from_etag(upload.commit().etag)
    for node in ec.nodes[:5]:
        node.publish(fragment_key("c.des.staging-1", version.id), fragment_key("c.des", version.id))
    fresh = ec_over(tmp_path)  # the packer died: what it remembered is gone
    assert fresh.read("c.des", 0, 3) == b"old"
    fresh.abort_stale_uploads(0)
    assert fresh.read("c.des", 0, len(new)) == new and list(fresh.leftovers()) == [] and [i.key for i in fresh.list()] == ["c.des"]
    assert [p.line() for key, current, marked in objects(fresh) for p in check(fresh, key, current, marked)] == []
