"""Private service instances for fault tests: killed, restarted and filled without touching the shared ones.

``PrivateRedis`` is a redis-server of one test's own (own port, own folder, append-only file with
``appendfsync always``, so a ``kill -9`` and a restart keep every acknowledged write).
``PrivatePostgres`` is a PostgreSQL cluster made with initdb in a folder of its own, on its own
port and socket directory. ``tmpfs`` mounts a small tmpfs (root only). Each cleans up in ``close``
(or on leaving its ``with`` block), also after a failure.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

PG_BIN = Path("/usr/lib/postgresql/15/bin")


class DbUrl(str):
    """A database URL whose repr (in pytest's failure reports) hides the password."""

    def __repr__(self) -> str:
        from sqlalchemy.engine import make_url

        return repr(make_url(str(self)).render_as_string(hide_password=True))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(what: str, ready: Callable[[], bool], seconds: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-2000:] if log is not None and log.exists() else ""
    raise RuntimeError(f"{what} did not come up within {seconds} s\n{tail}")


def _listens(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


class PrivateRedis:
    """A redis-server on its own port and folder; ``kill`` (SIGKILL) or ``shutdown``, then ``start`` again."""

    def __init__(self, root: Path, *, appendonly: bool = True) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.appendonly = appendonly
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def cli(self, *args: str) -> str:
        """Run redis-cli against this server; its output."""
        done = subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True, timeout=30)
        return done.stdout.strip()

    def ping(self) -> bool:
        try:
            return self.cli("ping") == "PONG"
        except subprocess.TimeoutExpired:
            return False

    def start(self) -> PrivateRedis:
        assert self.process is None or self.process.poll() is not None, "already running"
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.appendonly else ["--appendonly", "no"]
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", *persistence,
             "--dir", str(self.root), "--logfile", str(self.root / "redis.log"), "--daemonize", "no"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.starts += 1
        _wait(f"private redis on {self.port}", self.ping, 30, self.root / "redis.log")
        return self

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def shutdown(self) -> None:
        """A plain stop (SHUTDOWN: the append-only file is flushed first)."""
        assert self.process is not None
        self.cli("shutdown")
        self.process.wait(timeout=30)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def __enter__(self) -> PrivateRedis:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()


StopMode = Literal["smart", "fast", "immediate"]


class PrivatePostgres:
    """A PostgreSQL 15 cluster of its own (initdb), on its own port and socket folder.

    The folder is made with ``tempfile`` outside pytest's (the postgres user cannot enter that)
    and removed by ``close``.
    """

    def __init__(self) -> None:
        if not (PG_BIN / "initdb").exists():
            raise RuntimeError(f"no PostgreSQL 15 in {PG_BIN}: install postgresql-15 (tests/services.sh does)")
        self.root = Path(tempfile.mkdtemp(prefix="desq-pg-"))
        shutil.chown(self.root, "postgres", "postgres")
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = free_port()
        self.restarts = 0

    def _as_postgres(self, *command: str, timeout: float = 120) -> str:
        done = subprocess.run(["runuser", "-u", "postgres", "--", *command], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise RuntimeError(f"{command[0]} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

    def _pg_ctl(self, *args: str) -> None:
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "120", *args)

    def start(self) -> PrivatePostgres:
        if not self.data.exists():
            self._as_postgres(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync")
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=200"
        self._pg_ctl("-o", options, "start")
        _wait(f"private PostgreSQL on {self.port}", lambda: _listens(self.port), 60, self.log)
        return self

    def stop(self, mode: StopMode = "fast") -> None:
        self._pg_ctl("-m", mode, "stop")

    def restart(self, mode: StopMode, *, down_seconds: float = 0.0, until: Callable[[], bool] | None = None) -> None:
        """Stop in ``mode`` (fast: sessions are terminated; immediate: no shutdown checkpoint, crash
        recovery on start), stay down ``down_seconds`` and then until ``until()`` holds (at most
        60 s more), start again."""
        self.stop(mode)
        time.sleep(down_seconds)
        deadline = time.monotonic() + 60
        while until is not None and not until() and time.monotonic() < deadline:
            time.sleep(0.2)
        self.start()
        self.restarts += 1

    def psql(self, sql: str, database: str = "postgres") -> str:
        return self._as_postgres(str(PG_BIN / "psql"), "-h", str(self.root), "-p", str(self.port), "-d", database, "-v", "ON_ERROR_STOP=1", "-qtA", "-c", sql)

    def create_database(self, user: str = "desq_faults", password: str = "desq-faults-test-password") -> str:
        """A role and a database of its own; its SQLAlchemy URL (over TCP, with the password)."""
        name = f"faults_{uuid.uuid4().hex[:8]}"
        if self.psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{user}'").strip() != "1":
            self.psql(f"CREATE ROLE {user} LOGIN PASSWORD '{password}'")
        self.psql(f"CREATE DATABASE {name} OWNER {user}")
        return DbUrl(f"postgresql+psycopg2://{user}:{password}@127.0.0.1:{self.port}/{name}")

    def close(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PrivatePostgres:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *_: object) -> None:
        self.close()


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` (e.g. "2m") on ``path``; always unmounted on the way out."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "desq-test-tmpfs", str(path)], check=True, capture_output=True, timeout=30)
    try:
        yield path
    finally:
        done = subprocess.run(["umount", str(path)], capture_output=True, timeout=30)
        if done.returncode != 0:  # still busy (an open file): detach now, freed when closed
            subprocess.run(["umount", "-l", str(path)], check=True, capture_output=True, timeout=30)


def fresh_pg_database(admin_url: str) -> tuple[DbUrl, Callable[[], None]]:
    """A new database on the server of ``admin_url`` (its user needs CREATEDB); (its URL, drop)."""
    import sqlalchemy as sa

    name = f"desq_faults_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return DbUrl(admin_url.rsplit("/", 1)[0] + f"/{name}"), drop

