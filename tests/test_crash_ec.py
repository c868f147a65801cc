"""Crash test of the erasure-coded archive: the packer SIGKILLed in a coded write and publish.

The archive is ``ec://4+2`` over six folders; the source and desq's tables are in a PostgreSQL
schema of the test's own (``test_crash.private_schema``), with ``archive.delete_originals`` on.
The packer is ``desq nightly --sync`` (mark, plan, pack each (date, shard) in turn, finish), run
again after each kill. Every run gets the whole plan: ``CRASH_EC_KILLS`` entries drawn from
``CRASH_SEED`` over the ``ec.*`` failpoints (each point in turn, shuffled, at a random hit), with
two ``pack.*`` entries among them, each ``point=hit:stop`` and fired once across processes
(``DESQ_FAILPOINTS_DIR``). A run's hits count from its start, so an entry fires in the first
(date, shard) the run writes: ``ec.fragment_stored`` and ``ec.marked`` hits 1..6 in its staging
write, ``ec.fragment_moved`` and ``ec.marked`` hits 7..12 in its publish (a run that writes
nothing reaches the finish's coded write of ``_desq/night.json``).

The run stops itself there (SIGSTOP, in an ECStorage worker thread), the test checks the state,
then SIGKILLs it. At each stop, besides ``test_crash.Checker.frozen`` (containers verify and hold
only their own files byte-exact, no row PACKED unless its file reads back, no original deleted
before that):

- every visible object but a staging one has its current version stored on at least K+1 nodes and
  reads whole, its CRC32C the one its fragments' footers carry;
- an object is at the content it had at the last stop or at a newer version, never an older one,
  and a container never loses a member it held (nothing lost).

A killed packer's lease (5 s) stays held until it expires; a run meanwhile finds that (date,
shard) busy and packs the others. After the kills: the leases expire, ``desq recover``, then
``recover`` with an age of 0 (``desq recover`` keeps unmarked fragments younger than 6 hours: they
could be a live write's), and one more night converges: every row PACKED, every file byte-exact
through the Archive and ``desq get``, ``ECStorage.leftovers()`` empty and the fragment check
(``ec_repair.check``) clean on every object. Long run, by hand::

    CRASH_EC_KILLS=60 CRASH_SEED=7 .venv/bin/pytest -s tests/test_crash_ec.py
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from crc32c import crc32c

from desq.archive import Archive
from desq.cli import run
from desq.deployment import Deployment
from desq.pipeline.lease import Leases
from desq.pipeline.night import recover
from desq.settings import Settings, load_settings
from desq.storage.ec import ECStorage
from desq.storage.ec_format import Version, fragment_key
from desq.storage.ec_repair import check, objects
from desq.storage.local import LocalStorage
from nights import BIN, TODAY, Night
from test_crash import BITS, PACK_POINTS, STAGING, Checker, pack_plan, private_schema, process_state, wait_until

SEED = int(os.environ.get("CRASH_SEED", "20251203"))
KILLS = int(os.environ.get("CRASH_EC_KILLS", "15"))
EC_POINTS = {  # failpoint: the highest hit a plan entry asks for
    "ec.fragment_stored": 6,
    "ec.marked": 12,
    "ec.fragment_moved": 6,
}
PACK_KILLS = 2
K, M = 4, 2


def ec_plan(rng: random.Random, kills: int) -> list[tuple[str, int]]:
    """``kills`` ec.* entries as ``pack_plan`` draws them, and ``PACK_KILLS`` pack.* entries at
    random places among them."""
    plan = pack_plan(rng, kills, EC_POINTS)
    for point in rng.sample(sorted(PACK_POINTS), PACK_KILLS):
        plan.insert(rng.randint(0, len(plan)), (point, rng.randint(1, PACK_POINTS[point])))
    return plan


@dataclass(frozen=True)
class Seen:
    """An object's current version at a stop, the digest of its bytes and its members."""

    version: Version
    digest: str
    members: frozenset[str]


class ECChecker(Checker):
    """``Checker`` over the erasure-coded archive, with what only its fragments can tell."""

    def __init__(self, night: Night, settings: Settings) -> None:
        super().__init__(night, settings)
        assert isinstance(self.storage, ECStorage)
        self.ec: ECStorage = self.storage
        self.seen: dict[str, Seen] = {}

    def frozen(self, where: str) -> Counter[str]:
        states = super().frozen(where)
        containers, _, _ = self.objects(where)
        marked, fragments = self.ec._versions("")  # noqa: SLF001 - every version and fragment, in one listing
        for key, versions in marked.items():
            if STAGING.fullmatch(key):  # a publish moves the fragments away before it unmarks them
                continue
            current = max(versions)
            held = fragments.get(key, {}).get(current.id, set())
            assert len(held) >= K + 1, f"{where}: {key} is visible at {current.etag} with fragments on nodes {sorted(held)} only"
            data = self.ec.read(key, 0, current.length, if_match=current.etag)
            assert crc32c(data) == self.ec.footer(min(held), key, current).object_crc, f"{where}: {key} reads other bytes than it stored"
            now = Seen(current, hashlib.sha256(data).hexdigest(), frozenset(containers.get(key, {})))
            before = self.seen.get(key)
            if before is not None:
                if now.version == before.version:
                    assert now.digest == before.digest, f"{where}: {key} at {current.etag} changed its bytes"
                else:
                    assert now.version.id > before.version.id, f"{where}: {key} went back from {before.version.etag} to {current.etag}"
                assert now.members >= before.members, f"{where}: {key} lost {sorted(before.members - now.members)}"
            self.seen[key] = now
        gone = set(self.seen) - set(marked)
        assert not gone, f"{where}: {sorted(gone)} are no longer visible"
        return states


@pytest.mark.integration
def test_packer_killed_in_coded_writes_and_publishes_loses_nothing(tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    rng = random.Random(SEED)
    plan = ec_plan(rng, KILLS)
    days = max(3, math.ceil(3 * len(plan) / (1 << BITS)))
    claims = tmp_path / "claims"
    claims.mkdir()
    failpoints = {"DESQ_FAILPOINTS": ",".join(f"{p}={h}:stop" for p, h in plan), "DESQ_FAILPOINTS_DIR": str(claims)}
    nodes = [tmp_path / f"node{i}" for i in range(K + M)]
    with private_schema(pg_url) as db_url:
        night = Night(tmp_path, db_url, {
            "DESQ_ARCHIVE_URL": f"ec://{K}+{M}", "DESQ_ARCHIVE_NODES": ",".join(map(str, nodes)),
            "DESQ_ARCHIVE_DELETE_ORIGINALS": "true", "DESQ_SHARD_BITS": str(BITS), "DESQ_SOURCE_BATCH_SIZE": "2",
        })
        running: subprocess.Popen[bytes] | None = None
        try:
            settings = load_settings(env={k: v for k, v in night.env.items() if k.startswith("DESQ_")})
            night.add(3 * days * (1 << BITS), days)
            checker = ECChecker(night, settings)
            log = tmp_path / "nightly.log"

            def logs() -> str:
                return log.read_text(errors="replace")[-6000:]

            by_point: Counter[str] = Counter()
            kills = runs = 0
            while kills < len(plan):
                claim = claims / str(kills)
                with open(log, "ab") as out:
                    running = proc = subprocess.Popen([str(BIN / "desq"), "nightly", "--sync", "--today", TODAY], cwd=tmp_path,
                                                      env=night.env | failpoints, stdout=out, stderr=subprocess.STDOUT)
                runs += 1
                wait_until(f"run {runs} to stop or end", lambda: claim.exists() or proc.poll() is not None, 120, logs)
                if not claim.exists():
                    assert proc.returncode == 0, f"run {runs} failed\n{logs()}"
                    assert night.packed() < len(night.contents), f"the night converged after {kills} of {len(plan)} kills"
                    continue
                pid_text, point, hit = claim.read_text().split()
                assert (int(pid_text), point, int(hit)) == (proc.pid, *plan[kills]), claim.read_text()
                where = f"kill {kills + 1} ({point}={hit}, run {runs})"
                wait_until(f"{where}: the run to stop", lambda: process_state(proc.pid) == "T", 30, logs)
                checker.frozen(where)
                proc.kill()
                proc.wait()
                kills += 1
                by_point[point] += 1
            running = None

            leases = Leases(night.engine)
            keys = {checker.key_of(row_id) for row_id in night.contents}
            wait_until("the killed packers' leases to expire", lambda: all(leases.holder(f"pack:{key}") is None for key in keys), 30)
            result = night.desq("recover")
            assert result.returncode == 0, result.stderr
            checker.frozen("after desq recover")
            recover(Deployment(settings), older_than=timedelta(0))
            checker.frozen("after recover with an age of 0")
            result = night.desq("nightly", "--sync", "--today", TODAY)
            assert result.returncode == 0, result.stdout + result.stderr

            left_over = checker.final()
            night.check_files(Archive(checker.ec, cache_bytes=0))
            for name, value in night.env.items():
                if name.startswith("DESQ_"):
                    monkeypatch.setenv(name, value)
            capsysbinary.readouterr()
            for row_id, (day, data) in night.contents.items():
                code = run(["get", f"{day:%Y%m%d}_{row_id}"])
                out, err = capsysbinary.readouterr()
                assert (code, out) == (0, data), f"desq get {day:%Y%m%d}_{row_id}: exit {code}, {err.decode(errors='replace')}"
            assert list(checker.ec.leftovers()) == []
            assert list(checker.ec.uploads()) == []
            problems = [p.line() for key, version, marked in objects(checker.ec) for p in check(checker.ec, key, version, marked)]
            assert problems == []
            print(
                f"\ncrash-ec: seed {SEED}, {kills} kills ({dict(sorted(by_point.items()))}) over {runs} runs, "
                f"{checker.checks} frozen checks, {len(night.contents)} files over {days} days, 0 lost; "
                f"{left_over} originals left over by kills between marking and deleting"
            )
        except BaseException:
            print(f"crash-ec: CRASH_SEED={SEED} CRASH_EC_KILLS={KILLS}, plan {plan}")
            raise
        finally:
            if running is not None and running.poll() is None:
                running.kill()
                running.wait()
            night.close()


def test_a_publish_killed_after_its_first_commit_marker_survives_losing_that_node(tmp_path: Path) -> None:
    """Found by the test above (its default seed's ec.marked=10 stops a publish after 4 of 6
    markers; CRASH_SEED=3 CRASH_EC_KILLS=30 leaves a container marked on one node). A publish killed after its first commit marker leaves the new version visible,
    so the rerun finds its files there, marks their rows PACKED and deletes their originals; but
    nothing stores the markers the kill left out. ``recover`` then deletes the old version as
    superseded; losing that one node (of the M the code is for) leaves no marker, and the next
    ``recover`` deletes the new version's intact fragments as a killed write's."""
    ec = ECStorage([LocalStorage(tmp_path / f"node{i}") for i in range(K + M)], K, M)
    ec.put("c.des", b"old" * 1000)
    staging = "c.des.staging-1"
    with ec.open_upload(staging, staged=True) as upload:
        upload.write(b"new" * 2000)
        version = Version.from_etag(upload.commit().etag)
    assert version is not None
    for node in ec.nodes:
        node.publish(fragment_key(staging, version.id), fragment_key("c.des", version.id))
    ec.nodes[1].put(version.marker("c.des"), b"")  # the process dies here
    assert ec.head("c.des").etag == version.etag
    ec.abort_stale_uploads(0)  # what `desq recover` runs
    assert [p.line() for key, current, marked in objects(ec, ["c.des"]) for p in check(ec, key, current, marked)] == []
    shutil.rmtree(tmp_path / "node1")
    ec.abort_stale_uploads(0)
    assert ec.read("c.des", 0, 6000) == b"new" * 2000
