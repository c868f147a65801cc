"""Property-based HTTP testing of the whole documented surface (schemathesis against /openapi.json).

Every generated request, valid or not, must get an answer the document allows, with no 5xx.
"""

from __future__ import annotations

import io
import tempfile

import schemathesis
from hypothesis import HealthCheck, settings

from desq.container import ContainerWriter
from desq.settings import load_settings
from desq.storage.local import LocalStorage
from web import create_app


def _app():  # noqa: ANN202
    root = tempfile.mkdtemp(prefix="desq-openapi-")
    out = io.BytesIO()
    with ContainerWriter(out) as w:
        w.add("20251120_1", b"hello, archive\n", content_type="text/plain")
    LocalStorage(root).put("20251120/FE.des", out.getvalue())
    return create_app(load_settings(env={"DESQ_ARCHIVE_URL": root}))


schema = schemathesis.openapi.from_wsgi("/openapi.json", _app())
# Valid and invalid requests both: names that break the pattern, NUL bytes, wrong types.
schema.config.generation.update(modes=list(schemathesis.GenerationMode), allow_x00=True)


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_documented_surface(case: schemathesis.Case) -> None:
    # A name's YYYYMMDD must be a calendar day, which no pattern can say: such requests are
    # refused with 400, rightly, so "schema-valid data must be accepted" cannot hold here.
    case.call_and_validate(excluded_checks=[schemathesis.checks.positive_data_acceptance])
