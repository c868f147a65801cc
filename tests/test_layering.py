"""The library stays a library: only its command line and demo reach the apps' frameworks."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APP_FRAMEWORKS = {"celery", "kombu", "flask", "werkzeug", "gunicorn"}
MAY_IMPORT_APPS = {"desq/cli.py", "desq/demo.py"}


def imported_roots(path: Path) -> set[str]:
    """The top-level packages a module imports, wherever in it (functions included)."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_nothing_in_the_library_imports_celery_or_the_web_stack() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_roots(path) & APP_FRAMEWORKS)
        for path in sorted(ROOT.joinpath("desq").rglob("*.py"))
        if str(path.relative_to(ROOT)) not in MAY_IMPORT_APPS
    }
    assert {name: found for name, found in offenders.items() if found} == {}
