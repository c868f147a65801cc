"""Finding a test's processes through /proc (children of a pid, members of a session)."""

from __future__ import annotations

from pathlib import Path


def _stats() -> list[tuple[int, list[str]]]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            found.append((int(stat.parent.name), stat.read_text().rsplit(")", 1)[1].split()))
        except (OSError, ValueError):
            continue
    return found


def children(pid: int) -> list[int]:
    """Live processes whose parent is ``pid``."""
    return [p for p, fields in _stats() if int(fields[1]) == pid and fields[0] != "Z"]


def session_members(sid: int) -> list[int]:
    """Live processes of session ``sid``."""
    return [p for p, fields in _stats() if int(fields[3]) == sid and fields[0] != "Z"]
