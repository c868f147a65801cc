"""The source conformance suite on SQLite, PostgreSQL 15 and MariaDB (the last two started by make test)."""

from __future__ import annotations

from pathlib import Path

import pytest

from desq.source.table import SourceError, SourceTable, masked
from desq.settings import load_settings
from source_conformance import SourceConformance


class TestSQLite(SourceConformance):
    @pytest.fixture
    def db_url(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path / 'business.db'}"


@pytest.mark.integration
class TestPostgreSQL(SourceConformance):
    @pytest.fixture
    def db_url(self, pg_url: str) -> str:
        return pg_url


@pytest.mark.integration
class TestMariaDB(SourceConformance):
    @pytest.fixture
    def db_url(self, mysql_url: str) -> str:
        return mysql_url


def test_an_unreachable_database_is_one_line_without_its_password() -> None:
    settings = load_settings(env={"DESQ_SOURCE_DB_URL": "postgresql+psycopg2://app:s3cret-pw@127.0.0.1:1/erp"})
    with pytest.raises(SourceError) as info:
        SourceTable.connect(settings)
    assert "s3cret-pw" not in str(info.value) and "\n" not in str(info.value) and "app:***@" in str(info.value)


def test_masked_urls() -> None:
    assert masked("postgresql://u:p@h/db") == "postgresql://u:***@h/db"
    assert masked("not a url") == "<database>"
