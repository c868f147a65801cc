"""``desq serve``'s request log: no query strings."""

from __future__ import annotations

import pytest

from web.dev_server import without_query


@pytest.mark.parametrize(("line", "logged"), [
    ("GET /desq/k?X-Amz-Signature=abc&X-Amz-Credential=K HTTP/1.1", "GET /desq/k HTTP/1.1"),
    ("GET /files/7?created_at=2025-11-20 HTTP/1.1", "GET /files/7 HTTP/1.1"),
    ("GET /files/7 HTTP/1.1", "GET /files/7 HTTP/1.1"),
    ("GET /?a?b HTTP/1.0", "GET / HTTP/1.0"),
    ("BAD?secret", "BAD"),
    ("", ""),
])
def test_the_request_line_loses_its_query(line: str, logged: str) -> None:
    assert without_query(line) == logged
