"""The size of every task message sent through a Redis broker, seen by Redis itself (MONITOR).

Kombu's Redis transport sends a message as one ``LPUSH queue payload``; ``BrokerTap`` watches the
broker's database with MONITOR from its own thread and keeps, per task name, how many messages went
through and the largest payload in bytes. It needs no hook in the processes that send.
"""

from __future__ import annotations

import codecs
import json
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

_ARG = re.compile(r'"((?:[^"\\]|\\.)*)"')


def monitored_args(command: str) -> list[bytes]:
    """The arguments of one MONITOR line's command, unescaped to the bytes the client sent."""
    return [codecs.escape_decode(arg.encode("latin-1", "backslashreplace"))[0] for arg in _ARG.findall(command)]


def _command(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def _lines(sock: socket.socket, stopping: threading.Event) -> Iterator[bytes]:
    """The lines Redis sends, until ``stopping`` is set or it closes the connection."""
    pending = b""
    while not stopping.is_set():
        try:
            chunk = sock.recv(1 << 20)
        except TimeoutError:
            continue
        if not chunk:
            return
        pending += chunk
        *complete, pending = pending.split(b"\r\n")
        yield from complete


def task_of(payload: bytes) -> str:
    """The task a kombu message is for (its ``task`` header), else "?"."""
    try:
        return str(json.loads(payload)["headers"].get("task", "?"))
    except (ValueError, KeyError, TypeError, AttributeError):
        return "?"


@dataclass
class BrokerTap:
    """MONITOR a Redis database; ``largest`` and ``counts`` by task name once ``stop`` returns."""

    url: str
    largest: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    _thread: threading.Thread | None = None
    _stopping: threading.Event = field(default_factory=threading.Event)
    _ready: threading.Event = field(default_factory=threading.Event)
    _error: BaseException | None = None

    def start(self) -> BrokerTap:
        self._thread = threading.Thread(target=self._watch, name="broker-tap", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"MONITOR on {self.url} did not start")
        return self

    def _watch(self) -> None:
        parts = urlsplit(self.url)
        db = int(parts.path.strip("/") or 0)
        try:
            with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout=10) as sock:
                if parts.password:
                    sock.sendall(_command(b"AUTH", *([unquote(parts.username).encode()] if parts.username else []), unquote(parts.password).encode()))
                sock.sendall(_command(b"MONITOR"))
                sock.settimeout(0.5)
                lines = _lines(sock, self._stopping)
                if not next(lines, b"").startswith(b"+OK"):
                    raise RuntimeError("Redis refused MONITOR")
                self._ready.set()
                for line in lines:
                    self._seen(line, db)
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self._error = exc
        finally:
            self._ready.set()

    def _seen(self, line: bytes, db: int) -> None:
        """One MONITOR line: ``+1700000000.123456 [0 127.0.0.1:5000] "LPUSH" "queue" "payload"``."""
        head, _, command = line.partition(b"] ")
        if not head.startswith(b"+") or b" [" not in head or int(head.split(b" [", 1)[1].split()[0]) != db:
            return
        args = monitored_args(command.decode("latin-1"))
        if len(args) == 3 and args[0].upper() == b"LPUSH" and args[2][:1] == b"{":
            task = task_of(args[2])
            self.counts[task] = self.counts.get(task, 0) + 1
            self.largest[task] = max(self.largest.get(task, 0), len(args[2]))

    def stop(self) -> dict[str, Any]:
        """Stop watching; what was seen: {"largest": {task: bytes}, "counts": {task: messages}}."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(10)
        if self._error is not None:
            raise RuntimeError(f"watching {self.url}: {self._error!r}")
        return {"largest": dict(self.largest), "counts": dict(self.counts)}

    def __enter__(self) -> BrokerTap:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
