"""The shape of the code: the library does not import the apps, the read side needs no database
layer, and no module grows past what one person reads at a sitting."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from desq.container import ContainerError, CorruptContainer
from desq.storage import RangeError, StorageError

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("desq", "web", "tasks")
APP_FRAMEWORKS = {"celery", "kombu", "flask", "werkzeug", "gunicorn"}
MAY_IMPORT_APPS = {"desq/cli/ops.py", "desq/cli/night.py", "desq/demo.py"}
"""The command line and the demo start the apps; the rest of desq/ is a library."""
MAX_LINES = 600


def modules(*packages: str) -> list[Path]:
    return sorted(p for package in packages for p in (ROOT / package).rglob("*.py"))


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of its code (functions included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def roots(path: Path) -> set[str]:
    return {name.split(".")[0] for name in imported(path)}


def test_the_library_imports_no_app_framework_and_no_app() -> None:
    offenders = {}
    for path in modules("desq"):
        rel = path.relative_to(ROOT).as_posix()
        if rel in MAY_IMPORT_APPS:
            continue
        bad = roots(path) & (APP_FRAMEWORKS | {"web", "tasks"})
        if bad:
            offenders[rel] = sorted(bad)
    assert offenders == {}


def test_the_checker_sees_imports_inside_functions(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from celery import chord\n    import flask.json\n")
    assert imported(sample) == {"celery", "flask.json"} and roots(sample) == {"celery", "flask"}


def test_storage_sits_below_the_containers() -> None:
    offenders = {f"{p.name}: {n}" for p in modules("desq/storage") for n in imported(p) if n == "desq.container" or n.startswith("desq.container.")}
    assert offenders == set()


def test_a_range_past_the_end_is_still_a_corrupt_container() -> None:
    """``except CorruptContainer`` and ``except ContainerError`` catch storage's RangeError."""
    assert issubclass(RangeError, CorruptContainer) and issubclass(RangeError, ContainerError) and issubclass(RangeError, StorageError)


@pytest.mark.parametrize("role", ["files", "router", "s3"])
@pytest.mark.parametrize("mode", ["name", "uid"])
def test_the_read_side_loads_no_database_layer(tmp_path: Path, mode: str, role: str) -> None:
    """Serving files (and the cutoff in uid mode), routing them, or serving and listing them as S3, loads nothing of desq's
    database side; of SQLAlchemy only what the settings use to parse URLs."""
    script = textwrap.dedent(
        f"""
        import json, sys, types
        from datetime import date
        from desq.container import ContainerWriter
        from desq.layout import container_key
        from desq.published import publish
        from desq.settings import load_settings
        from desq.storage.local import LocalStorage
        from web import create_app

        env = {{"DESQ_MODE": "{mode}", "DESQ_ARCHIVE_URL": r"{tmp_path / 'archive'}", "DESQ_SOURCE_DB_URL": r"sqlite:///{tmp_path / 'none.db'}"}}
        settings = load_settings(env=env)
        storage = LocalStorage(r"{tmp_path / 'archive'}")
        day = date(2025, 11, 14)
        name = "20251114_7.txt" if "{mode}" == "name" else "7"
        where = settings.layout.locate_name(name) if "{mode}" == "name" else settings.layout.locate_uid(name, "2025-11-14")
        with storage.open_upload(where.container) as upload:
            writer = ContainerWriter(upload)
            writer.add(where.name, b"hello")
            writer.close()
            upload.commit()
        publish(storage, day)
        client = create_app(settings, role="{role}").test_client()
        paths = {{"files": [f"/files/{{name}}?created_at=2025-11-14", "/readyz"], "router": [f"/files/{{name}}?created_at=2025-11-14", "/healthz"], "s3": [f"/desq/20251114/{{name}}", "/desq?list-type=2"]}}["{role}"]
        answers = [client.get(path).status_code for path in paths] + [client.get("/metrics").status_code]
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("desq", "web"))
        reaching = sorted(
            m for m in loaded
            if m != "desq.settings" and any(
                (isinstance(v, types.ModuleType) and v.__name__.startswith("sqlalchemy"))
                or getattr(v, "__module__", "").startswith("sqlalchemy")
                for v in vars(sys.modules[m]).values()
            )
        )
        print(json.dumps({{"answers": answers, "loaded": loaded, "reaching": reaching}}))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["answers"] == ([503, 200, 200] if role == "router" else [200, 200, 200])  # a router with no backends: 503
    assert result["reaching"] == []
    database_side = [m for m in result["loaded"] if m.startswith(("desq.source", "desq.pipeline", "desq.state", "desq.cutoff", "desq.deployment"))]
    assert database_side == []


def test_no_module_is_longer_than_a_sitting() -> None:
    long = {p.relative_to(ROOT).as_posix(): n for p in modules(*PACKAGES) if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_no_code_asks_which_mode_it_is_in() -> None:
    """What differs between the modes is asked of the mode object (``desq/mode.py``); only the
    layout validates the setting and the settings print it."""
    asks = re.compile(r"""\bmode\s*(?:==|!=|in|not in)\s*[("']""")
    found = [
        f"{p.relative_to(ROOT).as_posix()}:{n}: {line.strip()}"
        for p in modules(*PACKAGES) if p.relative_to(ROOT).as_posix() not in ("desq/layout.py", "desq/mode.py")
        for n, line in enumerate(p.read_text().splitlines(), 1) if asks.search(line)
    ]
    assert found == []
