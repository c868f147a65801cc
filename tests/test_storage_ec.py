"""The erasure-coded backend passes the storage conformance suite over folders and S3 nodes,
and reads survive what the code is for: lost, damaged and unreachable nodes."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from desq.storage import NotFound, Storage, StorageError, StorageUnavailable
from desq.storage.ec import ECStorage
from desq.storage.ec_format import FOOTER_SIZE, Geometry, Version, fragment_key
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
