"""The S3 authentication edge over real HTTP (werkzeug's server and gunicorn): requests signed by
botocore, boto3's own client and boto3's presigned URLs verify; the environ gives the path as sent."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit

import boto3
import botocore.auth
import botocore.awsrequest
import botocore.credentials
import flask
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError
from werkzeug.serving import make_server

from desq.s3.sigv4 import STATUS, AuthError
from web.s3_auth import authenticate, raw_path, signed_request

ROOT = Path(__file__).resolve().parents[1]
AKID, SECRET = "AKIDHTTPTEST", "s3cr3t/with+odd=chars"
SECRETS = {AKID: SECRET}
REGION = "eu-west-3"
KEYS = ["20251120/plain", "20251120/with space", "20251120/a+b", "20251120/literal%2Fslash", "20251120/ünï-日本-😀", "20251120/~tilde", "20251120/!*'()=&@$,;:"]


def echo_app() -> flask.Flask:
    """One catch-all route: authenticate, then echo what the app saw (JSON; the key id in X-Akid)."""
    app = flask.Flask(__name__)

    @app.route("/", defaults={"path": ""}, methods=["GET", "HEAD", "PUT", "POST", "DELETE"])
    @app.route("/<path:path>", methods=["GET", "HEAD", "PUT", "POST", "DELETE"])
    def _any(path: str) -> flask.Response:
        try:
            akid = authenticate(flask.request, SECRETS, REGION)
        except AuthError as exc:
            response = flask.jsonify(code=exc.code, message=exc.message)
            response.status_code = STATUS[exc.code]
            return response
        response = flask.jsonify(akid=akid, path=flask.request.path, args=flask.request.args.to_dict(flat=False))
        response.headers["X-Akid"] = str(akid)
        return response

    return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module", params=["werkzeug", "gunicorn"])
def base_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if request.param == "werkzeug":
        server = make_server("127.0.0.1", 0, echo_app(), threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{server.server_port}"
        server.shutdown()
        thread.join(10)
        return
    tmp = tmp_path_factory.mktemp("gunicorn")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DESQ_", "GUNICORN"))} | {"PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}
    log = open(tmp / "gunicorn.log", "wb")
    argv = [str(Path(sys.executable).parent / "gunicorn"), "-b", f"127.0.0.1:{port}", "-w", "1", "--control-socket", str(tmp / "ctl.sock"), "test_s3_auth:echo_app()"]
    process = subprocess.Popen(argv, cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.get(f"http://127.0.0.1:{port}/", timeout=5)
            break
        except requests.ConnectionError:
            assert process.poll() is None and time.monotonic() < deadline, (tmp / "gunicorn.log").read_text()
            time.sleep(0.2)
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=30)
    log.close()


def botocore_signed(method: str, url: str, *, secret: str = SECRET, body: bytes = b"") -> dict[str, str]:
    """The headers botocore's S3 signer adds to ``method url`` now."""
    aws = botocore.awsrequest.AWSRequest(method=method, url=url, data=body)
    botocore.auth.S3SigV4Auth(botocore.credentials.Credentials(AKID, secret), "s3", REGION).add_auth(aws)
    return dict(aws.headers.items())


def client(base_url: str, secret: str = SECRET):  # type: ignore[no-untyped-def]
    config = Config(signature_version="s3v4", s3={"addressing_style": "path"}, retries={"max_attempts": 1})
    return boto3.client("s3", endpoint_url=base_url, region_name=REGION, aws_access_key_id=AKID, aws_secret_access_key=secret, config=config)


def send_raw(base_url: str, method: str, target: str, headers: dict[str, str]) -> tuple[int, dict[str, object]]:
    """Send ``target`` byte for byte, as no HTTP library would re-encode it."""
    url = urlsplit(base_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
    for name, value in headers.items():
        conn.putheader(name, value)
    conn.endheaders()
    response = conn.getresponse()
    answer = json.loads(response.read() or b"{}")
    conn.close()
    return response.status, answer


@pytest.mark.parametrize("key", KEYS)
def test_botocore_header_signed_requests_over_http(base_url: str, key: str) -> None:
    url = f"{base_url}/desq/{quote(key, safe='/~')}?list-type=2&prefix={quote(key, safe='-_.~')}"
    response = requests.get(url, headers=botocore_signed("GET", url), timeout=30)
    assert response.status_code == 200, response.text
    assert response.json() == {"akid": AKID, "path": f"/desq/{key}", "args": {"list-type": ["2"], "prefix": [key]}}
    wrong = requests.get(url, headers=botocore_signed("GET", url, secret="not-it"), timeout=30)
    assert (wrong.status_code, wrong.json()["code"]) == (403, "SignatureDoesNotMatch")


@pytest.mark.parametrize("key", KEYS)
def test_boto3_presigned_urls_over_http(base_url: str, key: str) -> None:
    url = client(base_url).generate_presigned_url("get_object", Params={"Bucket": "desq", "Key": key}, ExpiresIn=300)
    response = requests.get(url, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["path"] == f"/desq/{key}"
    tampered = url.replace("X-Amz-Expires=300", "X-Amz-Expires=301")
    assert requests.get(tampered, timeout=30).json()["code"] == "SignatureDoesNotMatch"


def test_a_presigned_listing_with_a_continuation_token(base_url: str) -> None:
    params = {"Bucket": "desq", "Prefix": "20251120/a b+c", "Delimiter": "/", "ContinuationToken": "MjAy/NTEx+MjA==", "StartAfter": "20251120/~"}
    url = client(base_url).generate_presigned_url("list_objects_v2", Params=params, ExpiresIn=60)
    response = requests.get(url, timeout=30)
    assert response.status_code == 200, response.text
    args = response.json()["args"]
    assert (args["prefix"], args["continuation-token"], args["start-after"]) == (["20251120/a b+c"], ["MjAy/NTEx+MjA=="], ["20251120/~"])


@pytest.mark.parametrize("key", KEYS)
def test_boto3_clients_own_requests_verify(base_url: str, key: str) -> None:
    s3 = client(base_url)
    assert s3.head_object(Bucket="desq", Key=key)["ResponseMetadata"]["HTTPHeaders"]["x-akid"] == AKID
    body = json.loads(s3.get_object(Bucket="desq", Key=key, Range="bytes=0-9")["Body"].read())
    assert (body["akid"], body["path"]) == (AKID, f"/desq/{key}")
    with pytest.raises(ClientError) as info:
        client(base_url, secret="wrong").head_object(Bucket="desq", Key=key)
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_a_path_sent_less_encoded_than_signed_still_verifies(base_url: str) -> None:
    signed = f"{base_url}/desq/a%21b%2A%27%28%29%7E"
    host = urlsplit(base_url).netloc
    headers = {"Host": host, **botocore_signed("GET", signed.replace("%7E", "~"))}
    assert send_raw(base_url, "GET", "/desq/a!b*'()%7e", headers) == (200, {"akid": AKID, "path": "/desq/a!b*'()~", "args": {}})
    assert send_raw(base_url, "GET", "/desq/a!b*'()%7e?x", headers)[1]["code"] == "SignatureDoesNotMatch"
    slash = f"{base_url}/desq/20251120%2Fk"
    assert send_raw(base_url, "GET", "/desq/20251120%2Fk", {"Host": host, **botocore_signed("GET", slash)})[0] == 200


def test_the_body_is_hashed_and_anonymous_requests_refused(base_url: str) -> None:
    url = f"{base_url}/desq/20251120/k"
    body = b"<Delete/>" * 10
    assert requests.put(url, data=body, headers=botocore_signed("PUT", url, body=body), timeout=30).status_code == 200
    response = requests.put(url, data=body + b"!", headers=botocore_signed("PUT", url, body=body), timeout=30)
    assert (response.status_code, response.json()["code"]) == (400, "XAmzContentSHA256Mismatch")
    response = requests.get(url, timeout=30)
    assert (response.status_code, response.json()["code"]) == (403, "AccessDenied")


# --- the environ, without a server --------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "path"),
    [
        ({"RAW_URI": "/desq/a%21b!?x=1&y", "PATH_INFO": "/ignored"}, "/desq/a%21b!"),
        ({"REQUEST_URI": "/desq/a%20b?prefix=a%2Fb", "PATH_INFO": "/ignored"}, "/desq/a%20b"),
        ({"RAW_URI": "/gunicorn", "REQUEST_URI": "/werkzeug"}, "/gunicorn"),
        ({"RAW_URI": "http://host:9/desq/k%2F?q"}, "/desq/k%2F"),
        ({"RAW_URI": "/desq/\u00c3\u00bc raw"}, "/desq/%C3%BC%20raw"),
        ({"RAW_URI": "?only=query", "PATH_INFO": "/x"}, "/"),
        ({"SCRIPT_NAME": "/s3", "PATH_INFO": "/desq/a b+\u00c3\u00bc%"}, "/s3/desq/a%20b%2B%C3%BC%25"),
        ({"PATH_INFO": ""}, "/"),
    ],
)
def test_raw_path_from_the_environ(environ: dict[str, str], path: str) -> None:
    assert raw_path(environ) == path


def test_signed_request_reads_the_wire_form() -> None:
    app = flask.Flask(__name__)
    overrides = {"RAW_URI": "/desq/%C3%BC+x?b=2&a=%2F", "HTTP_X_AMZ_META_NOTE": "caf\u00c3\u00a9"}
    with app.test_request_context("/desq/\u00fc+x?b=2&a=%2F", method="HEAD", headers={"X-Amz-Date": "d"}, environ_overrides=overrides):
        request = signed_request(flask.request)
    assert (request.method, request.raw_path, request.raw_query) == ("HEAD", "/desq/%C3%BC+x", "b=2&a=%2F")
    assert request.headers["x-amz-date"] == "d" and request.headers["x-amz-meta-note"] == "café"


def test_no_credentials_means_anonymous_and_credentials_mean_a_signature() -> None:
    app = flask.Flask(__name__)
    with app.test_request_context("/desq/k", headers={"Authorization": "garbage"}):
        assert authenticate(flask.request, {}, REGION) is None
        with pytest.raises(AuthError) as info:
            authenticate(flask.request, SECRETS, REGION)
    assert info.value.code == "AccessDenied"
