"""REDbot, the HTTP linter, on a file URL of a real gunicorn files API, directly and through a real
router: no caching, validation, range or connection problem (CONTRACT section 6, issue 20)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from archives import pack
from des_v1_writer import V1Member, write_v1
from desq.settings import load_settings
from desq.storage.local import LocalStorage
from test_files_gunicorn import get
from test_router import Gunicorn

BIN = Path(sys.executable).parent
CHECKED = {"CACHING", "VALIDATION", "RANGE", "CONNECTION"}
PROBLEMS = {"BAD", "WARN"}
FILES = {
    "20251120_1": (b"hello, archive\n" * 700, "text/plain", datetime(2025, 11, 20, 8, 30, tzinfo=timezone.utc)),
    "20251120_7": (bytes(range(256)) * 40, "application/pdf", datetime(2025, 11, 20, 9, 0, tzinfo=timezone.utc)),
}
V1_NAME = "20251121_5"


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    root = tmp_path_factory.mktemp("redbot")
    storage = LocalStorage(root / "archive")
    pack(storage, FILES)
    storage.put(load_settings(env={}).layout.locate_name(V1_NAME).container, write_v1([V1Member(V1_NAME, b"from a DES v1 container" * 40, mime="text/plain")]))
    backend = Gunicorn({"DESQ_ARCHIVE_URL": str(root / "archive")}, root / "files.log")
    router = Gunicorn({"DESQ_WEB_BACKENDS": backend.url, "DESQ_WEB_HEALTH_INTERVAL": "1"}, root / "router.log", role="router")
    try:
        yield {"direct": backend.url, "router": router.url}
    finally:
        router.stop()
        backend.stop()


def redbot(url: str) -> list[dict[str, Any]]:
    """REDbot's notes on ``url`` (its own request and its range, If-None-Match and If-Modified-Since probes)."""
    done = subprocess.run([str(BIN / "redbot"), "-o", "har", url], capture_output=True, text=True, timeout=120, check=True)
    entries = json.loads(done.stdout)["log"]["entries"]
    assert entries and entries[0]["response"]["status"] == 200, done.stdout

    def flat(notes: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for note in notes:
            yield note
            yield from flat(note.get("subnotes", []))

    return [note for entry in entries for note in flat(entry["_red_messages"])]


@pytest.mark.parametrize("via", ["direct", "router"])
@pytest.mark.parametrize("name", [*FILES, V1_NAME])
def test_redbot_finds_no_caching_validation_range_or_connection_problem(servers: dict[str, str], via: str, name: str) -> None:
    notes = redbot(f"{servers[via]}/files/{name}")
    for note in notes:
        print(f"{via} {name}: {note['level']:5} {note['category']:10} {note['note_id']}: {note['summary']}")
    problems = [note for note in notes if note["level"] in PROBLEMS and note["category"] in CHECKED]
    assert problems == []
    found = {note["note_id"] for note in notes}
    assert {"FRESHNESS_FRESH", "RANGE_CORRECT", "INM_304"} <= found  # the checks really ran and passed
    if name != V1_NAME:
        assert "IMS_304" in found and "LM_PRESENT" in found


@pytest.mark.parametrize("via", ["direct", "router"])
def test_every_conditional_header_reaches_the_files_api(servers: dict[str, str], via: str) -> None:
    port = int(servers[via].rsplit(":", 1)[1])
    path = "/files/20251120_1"
    status, headers, _ = get(port, path)
    assert (status, headers["cache-control"], headers["last-modified"]) == (200, "max-age=86400", "Thu, 20 Nov 2025 08:30:00 GMT")
    assert get(port, path, If_Match='"other"', Range="bytes=0-4")[0] == 412
    assert get(port, path, If_Unmodified_Since="Thu, 20 Nov 2025 08:29:59 GMT")[0] == 412
    status, not_modified, _ = get(port, path, If_None_Match=headers["etag"], Range="bytes=-0")
    assert (status, not_modified["etag"], not_modified["cache-control"]) == (304, headers["etag"], "max-age=86400")
    assert get(port, path, If_Modified_Since=headers["last-modified"])[0] == 304
    assert get(port, path, Range="bytes=-0")[0] == 416
