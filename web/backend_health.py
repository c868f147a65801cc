"""The router's view of its backends' health: a circuit breaker each, fed by ``/healthz`` probes
in the background and by the answers to forwarded requests."""

from __future__ import annotations

from dataclasses import dataclass

import urllib3


@dataclass
class Health:
    """A backend's circuit breaker: open (down) after ``threshold`` failures in a row, until it answers."""

    healthy: bool = True
    failures: int = 0
    threshold: int = 2

    def ok(self) -> None:
        self.healthy, self.failures = True, 0

    def failed(self) -> None:
        self.failures += 1
        if self.failures >= self.threshold:
            self.healthy = False


def probe(pool: urllib3.PoolManager, health: dict[str, Health]) -> None:
    """Ask each backend's ``/healthz`` once (2 s at most): a 200 closes its breaker, anything else is a failure."""
    for backend, breaker in health.items():
        try:
            answer = pool.request("GET", f"{backend}/healthz", timeout=urllib3.Timeout(total=2.0))
            breaker.ok() if answer.status == 200 else breaker.failed()
        except urllib3.exceptions.HTTPError:
            breaker.failed()
