"""The load soak, short, through ``desq soak``: 64 connections against the files API under gunicorn,
then through the router; 0 errors, no worker restarted, worker RSS growth under 10% after warm-up.

A correctness check, not a timing one: latency and throughput are printed, never asserted.
The soak's one defect so far has its own regression test here: the router answered 503 when the
backend closed a pooled keep-alive connection just as the router reused it.
CI runs 12 s per target after 4 s of warm-up. The 60 s soak by hand (its table is the figure):

    desq soak --seconds 60                      # or: python bench/soak.py --seconds 60
    SOAK_SECONDS=60 pytest -s tests/test_soak.py
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

from desq.settings import load_settings
from web import create_app

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SECONDS = float(os.environ.get("SOAK_SECONDS", "12"))
WARMUP = float(os.environ.get("SOAK_WARMUP", "4" if SECONDS < 30 else "10"))
MEMBERS = 1000


def test_soak(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    command = [str(BIN / "desq"), "soak", "--seconds", f"{SECONDS:g}", "--warmup", f"{WARMUP:g}", "--members", str(MEMBERS), "--json", str(out)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESQ_")}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=2 * (SECONDS + WARMUP) + 300)
    print(done.stdout)
    assert done.returncode == 0, f"desq soak exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    report = json.loads(out.read_text())
    assert report["passed"] and report["checked_byte_for_byte"] == {"direct": MEMBERS, "router": MEMBERS}
    assert [p["target"] for p in report["phases"]] == ["direct", "router"]
    for p in report["phases"]:
        assert p["requests"] > 0 and p["connections"] == 64
        assert p["errors"] == 0 and p["non_2xx"] == 0 and not any(p["socket_errors"].values()), p
        assert p["worker_changes"] == 0, p
        watched = {w["server"] for w in p["workers"]}
        assert watched == ({"files"} if p["target"] == "direct" else {"files", "router"})
        for w in p["workers"]:
            assert w["alive"] and w["growth"] < 0.10, f"{p['target']}: {w['server']} worker {w['pid']} RSS grew {100 * w['growth']:.1f}%"
    assert not any(report["tracebacks_in_logs"].values())


class ClosingBackend:
    """A files-API stand-in that answers the first request of each connection, keeps it alive, and
    closes it without an answer when the next request arrives: what a backend whose keep-alive
    timeout fires just as the router reuses the pooled connection does (the soak's one 503)."""

    BODY = b"hello"

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.answered = 0
        self.dropped = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _read_request(conn: socket.socket) -> bool:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                return False
            data += chunk
        return True

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            if not self._read_request(conn):
                return
            self.answered += 1  # before the answer, so a client that has it sees it counted
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 5\r\nETag: \"e\"\r\n\r\n" + self.BODY)
            if self._read_request(conn):
                self.dropped += 1  # closed with the request unanswered

    def close(self) -> None:
        self.sock.close()


def test_the_router_retries_a_keepalive_connection_the_backend_closed() -> None:
    backend = ClosingBackend()
    app = create_app(load_settings(env={"DESQ_WEB_BACKENDS": backend.url}), role="router")
    try:
        client = app.test_client()
        answers = [client.get("/files/20251120_1") for _ in range(5)]
        assert [(a.status_code, a.data) for a in answers] == [(200, ClosingBackend.BODY)] * 5, [a.data[:200] for a in answers]
        assert backend.dropped >= 4 and backend.answered == 5  # every reuse of a kept-alive connection was dropped
    finally:
        app.extensions["desq.backends"].close()
        backend.close()
