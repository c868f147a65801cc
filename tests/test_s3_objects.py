"""The S3 clients desq makes share one boto3 session per process (and ``AWS_*`` environment)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from desq.storage.s3_objects import FINISH_READ_TIMEOUT, S3Objects, s3_client

MAKE_CLIENTS = textwrap.dedent(
    """
    import logging, os, sys
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s %(message)s")
    from desq.storage.s3 import S3Storage
    from desq.source.fetch import Fetcher
    for n in range(5):
        S3Storage(f"s3://bucket-{n}/desq", endpoint_url="http://127.0.0.1:1")
    for n in range(3):
        with Fetcher(root="", big_file_bytes=1 << 20, s3_endpoint_url="http://127.0.0.1:1", threads=2) as fetcher:
            fetcher._connect_s3()
    if os.fork() == 0:
        S3Storage("s3://child/desq", endpoint_url="http://127.0.0.1:1")
        os._exit(0)
    os.wait()
    """
)


def test_making_many_s3_clients_logs_where_the_credentials_are_found_once_per_process() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | {
        "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    out = subprocess.run([sys.executable, "-c", MAKE_CLIENTS], env=env, capture_output=True, text=True, timeout=60, check=True).stdout
    found = [line for line in out.splitlines() if line.startswith("botocore.credentials") and "Found credentials" in line]
    assert len(found) == 2, out  # the parent's, once for its eight clients, and the forked child's own


def test_a_changed_aws_environment_gets_its_credentials_anew(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "first")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    assert s3_client("http://127.0.0.1:1")._request_signer._credentials.access_key == "first"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "second")
    assert s3_client("http://127.0.0.1:1")._request_signer._credentials.access_key == "second"


def test_completing_an_upload_waits_minutes_for_its_answer_other_requests_do_not() -> None:
    objects = S3Objects("http://127.0.0.1:1", read_timeout=7.0)
    assert objects.client.meta.config.read_timeout == 7.0
    assert objects.patient_client.meta.config.read_timeout == FINISH_READ_TIMEOUT >= 300
    given = s3_client("http://127.0.0.1:1")
    assert S3Objects(client=given).patient_client is given  # a client passed in is used for everything
    objects.close()
