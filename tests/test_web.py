"""The Flask app factory: liveness and the contract's JSON error shape."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from desq.settings import load_settings
from web import create_app


@pytest.fixture
def client() -> FlaskClient:
    return create_app(load_settings(env={})).test_client()


def test_healthz(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json == {"status": "ok"}


@pytest.mark.parametrize("path", ["/nope", "/%00", "/healthz/extra", "/files"])
def test_unknown_paths_are_json_404(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404 and response.is_json
    assert response.json["error"] == "not_found" and response.json["message"]


def test_a_malformed_file_name_is_json_400(client: FlaskClient) -> None:
    response = client.get("/files/../../etc/passwd")
    assert response.status_code == 400 and response.json["error"] == "bad_request"


def test_wrong_method_is_json_405(client: FlaskClient) -> None:
    response = client.post("/healthz")
    assert response.status_code == 405 and response.json["error"] == "method_not_allowed"
    assert "GET" in response.headers["Allow"]


def test_settings_are_loaded_when_not_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DESQ_SHARD_BITS", "10")
    assert create_app().extensions["desq.settings"].shard_bits == 10
