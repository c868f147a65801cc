"""The real services that tests/services.sh starts answer as the integration tests expect.

Later suites (source databases, S3 storage, the pipeline on Redis) stand on these; when one fails
here, the fault is in the environment, not in desq.
"""

from __future__ import annotations

import uuid

import boto3
import pytest
import redis
import sqlalchemy as sa

pytestmark = pytest.mark.integration


def test_redis(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    key = f"desq-test-{uuid.uuid4().hex}"
    client.set(key, b"\x00\xff", ex=10)
    assert client.get(key) == b"\x00\xff"


@pytest.mark.parametrize("url_fixture", ["pg_url", "mysql_url"])
def test_databases_round_trip_unicode(url_fixture: str, request: pytest.FixtureRequest) -> None:
    engine = sa.create_engine(request.getfixturevalue(url_fixture))
    table = sa.Table(f"t_{uuid.uuid4().hex[:12]}", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.String(255)))
    try:
        with engine.begin() as conn:
            table.create(conn)
            conn.execute(table.insert(), [{"id": 1, "name": "zażółć_20251120_1"}])
            assert conn.execute(sa.select(table.c.name)).scalar_one() == "zażółć_20251120_1"
    finally:
        with engine.begin() as conn:
            table.drop(conn, checkfirst=True)
        engine.dispose()


def test_s3_server(s3_endpoint: str) -> None:
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
    bucket = f"desq-test-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="20251120/FE.des", Body=b"0123456789")
    assert s3.get_object(Bucket=bucket, Key="20251120/FE.des", Range="bytes=2-4")["Body"].read() == b"234"


def test_a_missing_service_fails_rather_than_skips() -> None:
    from conftest import require_port

    with pytest.raises(pytest.fail.Exception, match="is not up on 127.0.0.1:1"):
        require_port("nothing", 1)
