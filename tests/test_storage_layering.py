"""Storage sits below the container code: it must not import it, and its errors keep their place."""

from __future__ import annotations

import ast
from pathlib import Path

import desq.storage
from desq.container import ContainerError, CorruptContainer
from desq.storage import RangeError, StorageError

STORAGE = Path(desq.storage.__file__).parent


def _imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_storage_does_not_import_the_container_code() -> None:
    offenders = {
        f"{path.name}: {name}"
        for path in STORAGE.glob("*.py")
        for name in _imported(path)
        if name == "desq.container" or name.startswith("desq.container.")
    }
    assert not offenders


def test_a_range_past_the_end_is_still_a_corrupt_container() -> None:
    """``except CorruptContainer`` and ``except ContainerError`` catch storage's RangeError."""
    assert issubclass(RangeError, CorruptContainer) and issubclass(RangeError, ContainerError)
    assert issubclass(RangeError, StorageError)
