"""Who the router's backends are: the static ``web.backends`` plus the files-API instances that
announce themselves in a Redis registry, on a consistent-hash ring, each with its health."""

from __future__ import annotations

import threading

import urllib3

from desq.ownership import Ring
from desq.settings import Settings
from web.backend_health import Health, probe
from web.upstream import Pool

REGISTRY_PREFIX = "desq:backend:"


def registered(url: str) -> list[str]:
    """Backends announced in the registry and not yet expired."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
    try:
        return sorted(k.decode()[len(REGISTRY_PREFIX) :] for k in client.scan_iter(match=REGISTRY_PREFIX + "*", count=1000))
    finally:
        client.close()


def announce(registry_url: str, advertise_url: str, interval: float, stop: threading.Event) -> threading.Thread:
    """A files-API instance's heartbeat: its URL in the registry, expiring after 3 missed beats."""
    import redis

    def beat() -> None:
        client = redis.Redis.from_url(registry_url, socket_timeout=1.0, socket_connect_timeout=1.0)
        while True:
            try:
                client.set(REGISTRY_PREFIX + advertise_url, "1", ex=max(3, int(interval * 3)))
            except redis.RedisError:
                pass  # the registry is down: routers keep their last view, and static backends
            if stop.wait(interval):
                client.delete(REGISTRY_PREFIX + advertise_url)
                return

    thread = threading.Thread(target=beat, name="registry-heartbeat", daemon=True)
    thread.start()
    return thread


class Backends:
    """The ring over the static and registered backends, with their health (checked in the background)."""

    def __init__(self, settings: Settings, *, interval: float = 5.0, timeout: float = 30.0) -> None:
        self.settings = settings
        self.bits = settings.shard_bits
        self.health: dict[str, Health] = {}
        self.ring = Ring([])
        self._routes = (self.ring, {})
        self._set_members(list(settings.web.backends))
        self.pool = urllib3.PoolManager(num_pools=16, maxsize=4, retries=False, timeout=urllib3.Timeout(connect=2.0, read=timeout))  # the health probes
        self.upstream = Pool(connect_timeout=2.0, read_timeout=timeout)  # forwarded requests
        self.batches = urllib3.PoolManager(num_pools=16, maxsize=16, retries=False, timeout=urllib3.Timeout(connect=2.0, read=timeout))  # POST /batch
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._check_loop, name="router-health", daemon=True)
        self.refresh()
        self._thread.start()

    def _set_members(self, members: list[str]) -> None:
        if sorted(set(members)) != self.ring.backends:
            ring = Ring(members)
            self.health = {b: self.health.get(b, Health()) for b in ring.backends}
            self.ring = ring
            self._routes: tuple[Ring, dict[int, list[str]]] = (ring, {})

    def refresh(self) -> None:
        """Static backends plus live registrations (a backend that stops beating leaves the ring)."""
        members = list(self.settings.web.backends)
        if self.settings.web.registry_url:
            try:
                members += registered(self.settings.web.registry_url)
            except Exception:  # noqa: BLE001 - the registry is down: keep the current ring
                return
        self._set_members(members)

    def _check_loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.refresh()
            self.check_all()

    def check_all(self) -> None:
        """Probe every backend's ``/healthz`` once."""
        probe(self.pool, self.health)

    def order(self, shard: int) -> list[str]:
        """Where to send a request for ``shard``: healthy choices first, in ring order (the ring's
        choices are worked out once per shard and ring; the caller must not change the list)."""
        ring, known = self._routes
        choices = known.get(shard)
        if choices is None:
            choices = known[shard] = ring.choices(shard, self.bits, count=len(ring.backends))
        health = self.health
        down = [b for b in choices if b in health and not health[b].healthy]
        if not down:
            return choices
        return [b for b in choices if b not in down] + down

    def close(self) -> None:
        self._stop.set()
        self.upstream.close()
        self.batches.clear()
