"""The source conformance suite on SQLite, PostgreSQL 15 and MariaDB (the last two started by make test)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from desq.source.table import SourceError, SourceTable, create_engine, masked, with_driver
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


# --- database URLs as users write them ----------------------------------------------------------

README = Path(__file__).resolve().parents[1] / "README.md"
integration = pytest.mark.integration


def test_every_database_url_the_readme_shows_loads_a_driver_desq_installs() -> None:
    """``postgresql://`` alone means psycopg 3 to SQLAlchemy, which desq does not install."""
    urls = set(re.findall(r"\b(?:postgres(?:ql)?|mysql|mariadb)(?:\+\w+)?://[^\s\"'`]+", README.read_text()))
    assert any(u.startswith("postgresql://") for u in urls)
    for url in sorted(urls):
        engine = create_engine(url)  # loads the dialect and its DBAPI module, connects to nothing
        assert engine.dialect.driver in ("psycopg2", "pymysql"), url
        engine.dispose()


@pytest.mark.parametrize(("url", "driver"), [
    ("postgresql://u:p@h/db", "postgresql+psycopg2"),
    ("postgres://u:p@h/db", "postgresql+psycopg2"),
    ("postgresql+psycopg2://u:p@h/db", "postgresql+psycopg2"),
    ("mysql://u:p@h/db?charset=utf8mb4", "mysql+pymysql"),
    ("mariadb://u:p@h/db", "mariadb+pymysql"),
    ("mysql+pymysql://u:p@h/db", "mysql+pymysql"),
    ("sqlite:///x.db", "sqlite"),
])
def test_a_url_without_a_driver_gets_the_installed_one(url: str, driver: str) -> None:
    parsed = with_driver(url)
    assert parsed.drivername == driver and parsed.password == ("p" if "@" in url else None)
    assert parsed.query == make_url(url).query


@integration
@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_plain_postgresql_urls_connect(pg_url: str, scheme: str) -> None:
    _select_one(pg_url.replace("postgresql+psycopg2://", f"{scheme}://"))


@integration
@pytest.mark.parametrize("scheme", ["mysql", "mariadb"])
def test_plain_mysql_and_mariadb_urls_connect(mysql_url: str, scheme: str) -> None:
    _select_one(mysql_url.replace("mysql+pymysql://", f"{scheme}://"))


def _select_one(url: str) -> None:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1
    finally:
        engine.dispose()
