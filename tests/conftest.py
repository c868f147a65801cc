"""Shared fixtures: clean settings environments and the real services of tests/services.sh.

Service fixtures fail, never skip, when their service does not answer: CI must not pass by
testing less. Start them with ``make services`` (``make test`` does it).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).parent
pytest_plugins = ["log_secrets"]  # fails the run when a test secret shows up in any log


def _service_env() -> dict[str, str]:
    values = {}
    for line in (HERE / "services.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = os.environ.get(key, value)
    return values


SERVICES = _service_env()
_DB_AUTH = f"{SERVICES['TEST_DB_USER']}:{SERVICES['TEST_DB_PASSWORD']}@127.0.0.1"
REDIS_URL = f"redis://127.0.0.1:{SERVICES['TEST_REDIS_PORT']}/0"
PG_URL = f"postgresql+psycopg2://{_DB_AUTH}:{SERVICES['TEST_PG_PORT']}/{SERVICES['TEST_DB_NAME']}"
MYSQL_URL = f"mysql+pymysql://{_DB_AUTH}:{SERVICES['TEST_MYSQL_PORT']}/{SERVICES['TEST_DB_NAME']}?charset=utf8mb4"
S3_ENDPOINT = f"http://127.0.0.1:{SERVICES['TEST_S3_PORT']}"


def require_port(name: str, port: int | str) -> None:
    """Fail the test (not skip) when nothing listens on 127.0.0.1:port."""
    try:
        socket.create_connection(("127.0.0.1", int(port)), timeout=2).close()
    except OSError as exc:
        pytest.fail(f"{name} is not up on 127.0.0.1:{port} ({exc}); start it with `make services`", pytrace=False)


@pytest.fixture(autouse=True)
def clean_desq_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's own DESQ_* variables."""
    for name in list(os.environ):
        if name.startswith("DESQ_"):
            monkeypatch.delenv(name)


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Run the test in an empty working directory (the embedded default writes ./desq-data)."""
    monkeypatch.chdir(tmp_path)
    yield tmp_path


@pytest.fixture(scope="session")
def redis_url() -> str:
    require_port("Redis", SERVICES["TEST_REDIS_PORT"])
    return REDIS_URL


@pytest.fixture(scope="session")
def pg_url() -> str:
    require_port("PostgreSQL", SERVICES["TEST_PG_PORT"])
    return PG_URL


@pytest.fixture(scope="session")
def mysql_url() -> str:
    require_port("MariaDB", SERVICES["TEST_MYSQL_PORT"])
    return MYSQL_URL


@pytest.fixture(scope="session")
def s3_endpoint() -> str:
    require_port("the S3 test server", SERVICES["TEST_S3_PORT"])
    return S3_ENDPOINT


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials and region for boto3 talking to the S3 test server."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture
def s3_bucket(s3_endpoint: str, aws_env: None) -> str:
    """A new, empty bucket on the S3 test server."""
    import uuid

    import boto3

    name = f"desq-{uuid.uuid4().hex[:16]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name
