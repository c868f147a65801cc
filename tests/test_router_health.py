"""The router's circuit breaker per backend, and the /healthz probe that feeds it."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import urllib3

from web.backend_health import Health, probe


class Answers:
    """A stand-in pool: each URL answers with its status, or raises if it has none."""

    def __init__(self, statuses: dict[str, int]) -> None:
        self.statuses = statuses
        self.asked: list[str] = []

    def request(self, method: str, url: str, **_: Any) -> SimpleNamespace:
        self.asked.append(f"{method} {url}")
        if url not in self.statuses:
            raise urllib3.exceptions.NewConnectionError(None, "refused")  # type: ignore[arg-type]
        return SimpleNamespace(status=self.statuses[url])


def test_the_breaker_opens_after_two_failures_in_a_row_and_closes_on_an_answer() -> None:
    health = Health()
    health.failed()
    assert health.healthy and health.failures == 1
    health.failed()
    assert not health.healthy and health.failures == 2
    health.ok()
    assert health.healthy and health.failures == 0


def test_a_probe_counts_a_refused_connection_and_a_non_200_as_failures() -> None:
    health = {"http://up": Health(), "http://sick": Health(), "http://gone": Health()}
    pool = Answers({"http://up/healthz": 200, "http://sick/healthz": 503})
    for _ in range(2):
        probe(pool, health)  # type: ignore[arg-type]
    assert {b: h.healthy for b, h in health.items()} == {"http://up": True, "http://sick": False, "http://gone": False}
    assert pool.asked[:3] == ["GET http://up/healthz", "GET http://sick/healthz", "GET http://gone/healthz"]
