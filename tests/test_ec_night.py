"""A night on ``ec://4+2``, read back by CLI and HTTP with nodes lost, damaged or unreachable.

Over six folders (a folder moved away is a lost disk) and over six buckets of the S3 test server,
each behind a fault proxy of its own (a node whose proxy resets every connection is a site down).
In each case: every file reads byte-exact with any two nodes gone, and with one gone and another's
fragments bit-flipped; with three gone a read fails with a clear error and no bytes; ``desq verify
--all`` names each missing fragment and exits 1 while every file still reads; ``desq repair --all``
rebuilds them, after which verify exits 0 and the rebuilt fragments carry the data.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from itertools import combinations
from pathlib import Path

import pytest

from desq.archive import Archive
from desq.layout import container_key, shard_of_name
from desq.settings import Settings, load_settings
from desq.storage import storage_for
from desq.storage.ec import ECStorage
from desq.storage.ec_format import FOOTER_SIZE, parse_fragment_key
from faultproxy import Fault, FaultProxy
from nights import TODAY, Night
from web import create_app

BIG = 70_000
"""archive.big_file_bytes here: the big originals below are stored (and coded) beside their container."""


class Folders:
    """Six folders; losing one moves it away."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.urls = [str(root / f"node{i}") for i in range(6)]

    def lose(self, i: int) -> None:
        shutil.move(self.urls[i], f"{self.urls[i]}.away")

    def restore(self, i: int) -> None:
        shutil.move(f"{self.urls[i]}.away", self.urls[i])

    def wipe(self, i: int) -> None:
        shutil.rmtree(self.urls[i])

    def flip(self, i: int) -> int:
        """Flip a bit every 4 KiB in every fragment of node ``i``; how many fragments."""
        count = 0
        for path in Path(self.urls[i]).rglob("*"):
            if path.is_file() and parse_fragment_key(path.name):
                raw = bytearray(path.read_bytes())
                for at in range(0, len(raw) - FOOTER_SIZE, 4096):
                    raw[at] ^= 0x10
                path.write_bytes(bytes(raw))
                count += 1
        return count

    def close(self) -> None:
        pass


class Buckets:
    """Six buckets of the S3 test server, each node reached through its own fault proxy; losing
    one makes its proxy reset every connection (a site down)."""

    def __init__(self, endpoint: str) -> None:
        import uuid

        import boto3

        self.client = boto3.client("s3", endpoint_url=endpoint)
        self.buckets = [f"desq-ec-{uuid.uuid4().hex[:10]}-{i}" for i in range(6)]
        self.proxies = [FaultProxy(endpoint).start() for _ in range(6)]
        for bucket in self.buckets:
            self.client.create_bucket(Bucket=bucket)
        self.urls = [f"s3://{b}/node?endpoint={p.url}" for b, p in zip(self.buckets, self.proxies)]

    def lose(self, i: int) -> None:
        self.proxies[i].always = Fault.reset()

    def restore(self, i: int) -> None:
        self.proxies[i].always = None

    def _keys(self, i: int) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.buckets[i])
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def wipe(self, i: int) -> None:
        for key in self._keys(i):
            self.client.delete_object(Bucket=self.buckets[i], Key=key)

    def flip(self, i: int) -> int:
        count = 0
        for key in self._keys(i):
            if parse_fragment_key(key.rpartition("/")[2]):
                raw = bytearray(self.client.get_object(Bucket=self.buckets[i], Key=key)["Body"].read())
                for at in range(0, len(raw) - FOOTER_SIZE, 4096):
                    raw[at] ^= 0x10
                self.client.put_object(Bucket=self.buckets[i], Key=key, Body=bytes(raw))
                count += 1
        return count

    def close(self) -> None:
        for proxy in self.proxies:
            proxy.stop()


@pytest.fixture(params=["folders", pytest.param("buckets", marks=pytest.mark.integration)])
def nodes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Folders | Buckets]:
    if request.param == "buckets":
        request.getfixturevalue("aws_env")
    made = Folders(tmp_path) if request.param == "folders" else Buckets(request.getfixturevalue("s3_endpoint"))
    yield made
    made.close()


def ec_night(root: Path, nodes: Folders | Buckets) -> tuple[Night, Settings]:
    night = Night(root, f"sqlite:///{root / 'source.db'}", {
        "DESQ_ARCHIVE_URL": "ec://4+2", "DESQ_ARCHIVE_NODES": json.dumps(nodes.urls), "DESQ_ARCHIVE_BIG_FILE_BYTES": str(BIG),
        "DESQ_SHARD_BITS": "2", "DESQ_QUEUE_COUNT": "1", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
    })
    night.add(240, 3)
    for i, size in ((1001, BIG), (1002, 5 * BIG + 123)):  # big files, coded beside their container
        data = bytes((i * 7 + n * 13) % 251 for n in range(size))
        (root / "originals" / f"{i}.txt").write_bytes(data)
        night.contents[i] = (night.contents[1][0], data)
        with night.engine.begin() as conn:
            from sqlalchemy import text

            conn.execute(text(f"INSERT INTO {night.table} (id, created_at, path) SELECT {i}, created_at, '{i}.txt' FROM {night.table} WHERE id = 1"))
    result = night.desq("nightly", "--sync", "--today", TODAY)
    assert result.returncode == 0, result.stderr
    return night, load_settings(env={k: v for k, v in night.env.items() if k.startswith("DESQ_")})


def names(night: Night, settings: Settings) -> dict[str, tuple[str, bytes]]:
    """name -> (container key, bytes) of every file of the night."""
    out = {}
    for i, (day, data) in night.contents.items():
        name = f"{day:%Y%m%d}_{i}"
        out[name] = (container_key(day, shard_of_name(name, settings.shard_bits), settings.shard_bits), data)
    return out


def read_everything(settings: Settings, files: dict[str, tuple[str, bytes]]) -> ECStorage:
    """Every file through a fresh Archive and over HTTP, byte-exact; the storage the app used."""
    archive = Archive(storage_for(settings))
    for name, (key, data) in files.items():
        assert archive.read(key, name) == data, name
    app = create_app(settings)
    client = app.test_client()
    for name, (_, data) in files.items():
        answer = client.get(f"/files/{name}")
        assert answer.status_code == 200 and answer.data == data, (name, answer.status_code)
    storage = app.extensions["desq.files"].archive.storage.inner
    assert isinstance(storage, ECStorage)
    return storage


def cli_get(night: Night, name: str) -> tuple[int, bytes, str]:
    import subprocess

    from nights import BIN

    done = subprocess.run([str(BIN / "desq"), "get", name], cwd=night.root, env=night.env, capture_output=True, timeout=120)
    return done.returncode, done.stdout, done.stderr.decode()


def test_a_night_on_ec_4_2_survives_two_lost_nodes_and_repairs(tmp_path: Path, nodes: Folders | Buckets) -> None:
    night, settings = ec_night(tmp_path, nodes)
    files = names(night, settings)
    night.check_files(Archive(storage_for(settings)))
    sample = [min(files), max(files), f"{night.contents[1002][0]:%Y%m%d}_1002"]
    read_everything(settings, files)

    for pair in ([0, 1], [2, 5], [4, 5]) if isinstance(nodes, Buckets) else combinations(range(6), 2):
        for i in pair:
            nodes.lose(i)
        storage = read_everything(settings, files)
        assert (storage.events.total("degraded_read") > 0) == (min(pair) < 4), pair  # losing only parity costs a read nothing
        if list(pair) in ([0, 1], [2, 5], [4, 5]):
            for name in sample:
                code, out, err = cli_get(night, name)
                assert (code, out) == (0, files[name][1]), (pair, name, err)
            ready = create_app(settings).test_client().get("/readyz")
            assert ready.status_code == 200 and len(ready.get_json()["nodes_down"]) == 2, ready.get_json()
            s3 = create_app(settings, role="s3").test_client()  # the S3 API reads through the same coded storage
            day = sample[0][:8]
            listed = s3.get(f"/desq?list-type=2&prefix={day}/&max-keys=1000")
            assert listed.status_code == 200 and listed.data.count(b"<Key>") == sum(n.startswith(day) for n in files), listed.data[:300]
            assert s3.get(f"/desq/{day}/{sample[0]}").data == files[sample[0]][1]
        for i in pair:
            nodes.restore(i)

    nodes.lose(3)
    flipped = nodes.flip(1)
    assert flipped > 0
    read_everything(settings, files)
    for name in sample:
        code, out, err = cli_get(night, name)
        assert (code, out) == (0, files[name][1]), (name, err)
    nodes.restore(3)
    verified = night.desq("verify", "--all")
    damaged = [line for line in verified.stdout.splitlines() if line.startswith("BAD ") and ": fragment 1 on " in line and ": damaged: " in line]
    assert verified.returncode == 1 and len(damaged) == flipped, verified.stdout + verified.stderr
    assert night.desq("repair", "--all").returncode == 0
    assert night.desq("verify", "--all").returncode == 0

    for i in (0, 2, 4):
        nodes.lose(i)
    code, out, err = cli_get(night, sample[0])
    # Folders gone hold no fragments (unreadable); sites down do not answer at all (no lookup).
    clear = ("fragments unreadable, 4 needed" in err) if isinstance(nodes, Folders) else ("more than M=2 nodes do not answer" in err)
    assert code == 1 and out == b"" and clear and err.count("\n") == 1 and "Traceback" not in err, err
    client = create_app(settings).test_client()
    answer = client.get(f"/files/{sample[0]}")
    assert answer.status_code == 503 and answer.get_json()["error"] == "unavailable", answer.data[:300]
    assert client.get("/readyz").status_code == 503
    for i in (0, 2, 4):
        nodes.restore(i)

    # Two disks die for good: verify names every fragment they held, repair rebuilds them.
    nodes.wipe(0)
    nodes.wipe(5)
    verified = night.desq("verify", "--all")
    assert verified.returncode == 1, verified.stdout + verified.stderr
    bad = [line for line in verified.stdout.splitlines() if line.startswith("BAD ")]
    containers = {key for key, _ in files.values()}
    for key in containers:
        assert f"BAD {key}: fragment 0 on {node_url(settings, 0)}: missing" in bad, key
        assert f"BAD {key}: fragment 5 on {node_url(settings, 5)}: missing" in bad, key
    assert not [line for line in verified.stdout.splitlines() if line.startswith("BAD ") and ": fragment " not in line and ": commit marker " not in line]
    read_everything(settings, files)  # every file still reads meanwhile
    repaired = night.desq("repair", "--all")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert sum(line.startswith("rebuilt ") for line in repaired.stdout.splitlines()) >= 2 * len(containers)
    again = night.desq("verify", "--all")
    assert again.returncode == 0, again.stdout + again.stderr
    for i in (1, 2):  # the rebuilt fragments 0 and 5 now stand in for two others
        nodes.lose(i)
    read_everything(settings, files)
    night.close()


def node_url(settings: Settings, i: int) -> str:
    storage = storage_for(settings)
    assert isinstance(storage, ECStorage)
    return storage.nodes[i].url
