"""web.worker's refusals: gunicorn's own 4xx/5xx answers in the contract's JSON shape."""

from __future__ import annotations

import json

import pytest

from web.worker import REFUSALS, refusal


def parse(answer: bytes) -> tuple[str, dict[str, str], dict[str, str]]:
    head, body = answer.split(b"\r\n\r\n", 1)
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    assert int(headers["Content-Length"]) == len(body)
    return status, headers, json.loads(body)


@pytest.mark.parametrize(("status", "code"), sorted(REFUSALS.items()))
def test_each_refusal_is_json_and_closes(status: int, code: str) -> None:
    line, headers, body = parse(refusal(status, "Reason", "some detail"))
    assert line == f"HTTP/1.1 {status} Reason"
    assert headers["Content-Type"] == "application/json" and headers["Connection"] == "close"
    assert body["error"] == code


def test_the_message_says_what_gunicorn_found() -> None:
    assert parse(refusal(414, "URI Too Long", "Request Line is too large (9011 > 8190)"))[2]["message"] == "URI Too Long: Request Line is too large (9011 > 8190)"
    assert parse(refusal(400, "Bad Request", ""))[2]["message"] == "Bad Request"


def test_an_internal_failure_keeps_its_detail_to_the_log() -> None:
    assert parse(refusal(500, "Internal Server Error", "Traceback: secret path"))[2] == {"error": "internal_error", "message": "Internal Server Error"}


def test_a_status_without_its_own_code_and_a_long_hostile_detail() -> None:
    line, _, body = parse(refusal(418, "Teapot", "\u2603" + "x" * 10_000 + "\r\n\r\nInjected: yes"))
    assert line == "HTTP/1.1 418 Teapot" and body["error"] == "http_error" and len(body["message"]) == 200
