"""Property-based HTTP testing of the whole documented surface (schemathesis against /openapi.json),
on the files API and on the router in front of a real files-API gunicorn.

Every generated request, valid or not, must get an answer the document allows, with no 5xx.
CI generates ``OPENAPI_EXAMPLES=500`` examples per operation and mode on each app (about 30 s); by hand, more:
``OPENAPI_EXAMPLES=5000 pytest tests/test_openapi_fuzz.py``.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Iterator

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings

from desq.container import ContainerWriter
from desq.settings import load_settings
from desq.storage.local import LocalStorage
from test_router import Gunicorn
from web import create_app

EXAMPLES = int(os.environ.get("OPENAPI_EXAMPLES", "500"))
# A name's YYYYMMDD must be a calendar day, which no pattern can say: such requests are
# refused with 400, rightly, so "schema-valid data must be accepted" cannot hold here.
EXCLUDED = [schemathesis.checks.positive_data_acceptance]


def _archive() -> str:
    root = tempfile.mkdtemp(prefix="desq-openapi-")
    out = io.BytesIO()
    with ContainerWriter(out) as w:
        w.add("20251120_1", b"hello, archive\n", content_type="text/plain")
    LocalStorage(root).put("20251120/FE.des", out.getvalue())
    return root


def _configure(schema: schemathesis.BaseSchema) -> schemathesis.BaseSchema:
    # Valid and invalid requests both: names that break the pattern, NUL bytes, wrong types.
    schema.config.generation.update(modes=list(schemathesis.GenerationMode), allow_x00=True)
    return schema


schema = _configure(schemathesis.openapi.from_wsgi("/openapi.json", create_app(load_settings(env={"DESQ_ARCHIVE_URL": _archive()}))))
SEEN: list[int] = []


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    print(f"\nfiles API: {len(SEEN)} generated requests, statuses {sorted(set(SEEN))}")


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_documented_surface(case: schemathesis.Case) -> None:
    SEEN.append(case.call_and_validate(excluded_checks=EXCLUDED).status_code)


@pytest.fixture(scope="module")
def router_and_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Flask, Flask]]:
    """A router app in front of a files API under gunicorn, and a files app on the same archive."""
    root, logs = _archive(), tmp_path_factory.mktemp("openapi-router")
    backend = Gunicorn({"DESQ_ARCHIVE_URL": root}, logs / "files.log")
    router = create_app(load_settings(env={"DESQ_WEB_BACKENDS": backend.url}), role="router")
    try:
        yield router, create_app(load_settings(env={"DESQ_ARCHIVE_URL": root}))
    finally:
        router.extensions["desq.backends"].close()
        backend.stop()
    log = (logs / "files.log").read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]


def test_the_documented_surface_through_the_router(router_and_files: tuple[Flask, Flask]) -> None:
    """The router's own /openapi.json, every operation in both modes; each answer as the files API's."""
    router, files = router_and_files
    schema = _configure(schemathesis.openapi.from_wsgi("/openapi.json", router))
    seen = []

    for result in schema.get_all_operations():
        operation = result.ok()
        has_parameters = any(True for _ in operation.iter_parameters())
        for mode in schemathesis.GenerationMode if has_parameters else [schemathesis.GenerationMode.POSITIVE]:

            @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            @given(case=operation.as_strategy(generation_mode=mode))
            def through_the_router(case: schemathesis.Case) -> None:
                routed = case.call_and_validate(excluded_checks=EXCLUDED)
                direct = case.call(app=files)
                assert routed.status_code == direct.status_code, f"{case.method} {case.formatted_path}: router {routed.status_code}, files API {direct.status_code}"
                seen.append(routed.status_code)

            through_the_router()
    print(f"\nthrough the router: {len(seen)} generated requests, statuses {sorted(set(seen))}")
    assert seen and max(seen) < 500
