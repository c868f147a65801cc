"""A pytest plugin: the run fails when a test secret shows up in anything the suite logged.

What is searched, at the end of the session:
- every test report, whatever its outcome: the test id, the captured stdout, stderr and log sections
  and the failure report; and every warning;
- every text file under pytest's basetemp (the logs of the Celery workers, gunicorn, Flower and the
  services the tests start live there);
- the logs of the test services (``$DESQ_TEST_LOGS``, by default /tmp/desq-test-services).

The secrets (``SECRETS``) are what opens the test services and APIs: the database password of
tests/services.env, the Flower password, the bearer tokens and the S3 secret access keys the tests configure. Any line that holds
one fails the run (exit status 1) and is reported with its file or test, its line number, and the
secret replaced by its label. Binary files (a NUL byte in their first 8 KiB: containers, databases)
and inputs (``INPUT_SUFFIXES``: the config files a test writes for desq hold secrets by design) are
not searched. A test that wants to show such an input prints ``masked(text)``.
"""

from __future__ import annotations

import mmap
import os
import stat
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

HERE = Path(__file__).parent
SERVICE_LOGS = "/tmp/desq-test-services"
"""Where tests/services.sh writes the services' logs (``$DESQ_TEST_LOGS`` overrides it)."""

FLOWER_PASSWORD = "flower-test-pw"
"""The password of Flower's basic auth in the Celery tests."""

API_TOKENS = (
    "tok-0123456789abcdef",  # tests/test_files_api.py, tests/test_settings.py
    "other-token-xxxxxxx",  # tests/test_files_api.py
    "sec-token-alpha-0000000001",  # tests/test_security.py
    "sec-token-bravo-0000000002",  # tests/test_security.py
    "sec-token-charlie-00000003",  # tests/test_security.py
)
"""Every bearer token a test configures in web.api_tokens: a test that adds one registers it here."""

S3_SECRET_KEYS = (
    "s3-test-secret-Hq7/x+Z0aw9Lr2mT",  # tests/s3_fixtures.py SECRET_KEY
    "s3-test-secret-other-Pz4kQ8vN",  # tests/s3_fixtures.py OTHER_SECRET
    "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",  # tests/test_settings.py
)
"""Every secret access key a test configures in s3.credentials: a test that adds one registers it here."""

INPUT_SUFFIXES = frozenset({".toml", ".env", ".ini", ".cfg", ".conf", ".py"})
"""Files under basetemp that are inputs given to desq, not logs of it."""

_BINARY_PROBE = 8192
_LINE_SHOWN = 240
_PER_PLACE = 5
_SHOWN = 100


def _db_password() -> str:
    """TEST_DB_PASSWORD as tests/conftest.py reads it: services.env, overridden by the environment."""
    for line in (HERE / "services.env").read_text().splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key == "TEST_DB_PASSWORD":
            return os.environ.get(key, value)
    raise RuntimeError("tests/services.env has no TEST_DB_PASSWORD")


SECRETS: dict[str, str] = {
    "TEST_DB_PASSWORD": _db_password(),
    "FLOWER_PASSWORD": FLOWER_PASSWORD,
    **{f"API_TOKEN_{i}": token for i, token in enumerate(API_TOKENS, 1)},
    **{f"S3_SECRET_KEY_{i}": secret for i, secret in enumerate(S3_SECRET_KEYS, 1)},
}
"""Label -> secret: what no log of the test suite may contain."""


def needles(secrets: Mapping[str, str]) -> dict[bytes, str]:
    """The byte strings to look for, each secret as written and URL-encoded, with its label."""
    found: dict[bytes, str] = {}
    for label, secret in secrets.items():
        if len(secret) < 6:
            raise ValueError(f"secret {label} is too short to search logs for")
        for form in (secret, quote(secret, safe="")):
            found.setdefault(form.encode("utf-8"), label)
    return found


def _mask(line: str, wanted: Mapping[bytes, str]) -> str:
    for needle, label in wanted.items():
        line = line.replace(needle.decode("utf-8"), f"<{label}>")
    return line


def masked(text: str) -> str:
    """``text`` with every test secret replaced by its label, for a test that must print one."""
    return _mask(text, needles(SECRETS))


@dataclass(frozen=True, slots=True)
class Finding:
    """One line of a log that holds a secret (shown masked)."""

    place: str
    line: int
    label: str
    text: str

    def __str__(self) -> str:
        return f"{self.place}:{self.line}: {self.label} in: {self.text}"


def _shown(line: str, wanted: Mapping[bytes, str]) -> str:
    text = _mask(line.rstrip("\r\n"), wanted)
    return text if len(text) <= _LINE_SHOWN else text[:_LINE_SHOWN] + "..."


def scan_text(text: str, place: str, wanted: Mapping[bytes, str]) -> list[Finding]:
    """The lines of ``text`` that hold a secret (line numbers from 1)."""
    hits = [(needle.decode("utf-8"), label) for needle, label in wanted.items() if needle.decode("utf-8") in text]
    if not hits:
        return []
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for secret, label in hits:
            if secret in line:
                found.append(Finding(place, number, label, _shown(line, wanted)))
                break
        if len(found) >= _PER_PLACE:
            break
    return found


def is_log_file(path: Path) -> bool:
    """A regular, non-empty file (not a link) that is not an input to desq."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_size > 0 and path.suffix.lower() not in INPUT_SUFFIXES


def scan_file(path: Path, wanted: Mapping[bytes, str]) -> list[Finding]:
    """The lines of a text file that hold a secret; nothing for a binary file."""
    try:
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            if b"\0" in data[:_BINARY_PROBE]:
                return []
            found: list[Finding] = []
            for needle, label in wanted.items():
                at = data.find(needle)
                while at >= 0 and len(found) < _PER_PLACE:
                    start = data.rfind(b"\n", 0, at) + 1
                    end = data.find(b"\n", at)
                    end = len(data) if end < 0 else end
                    number = data[:start].count(b"\n") + 1
                    found.append(Finding(str(path), number, label, _shown(data[start:end].decode("utf-8", "replace"), wanted)))
                    at = data.find(needle, end)
            return sorted(set(found), key=lambda f: f.line)
    except (OSError, ValueError):
        return []  # gone since it was listed, or not mappable (a special file)


def scan_tree(root: Path, wanted: Mapping[bytes, str]) -> list[Finding]:
    """Every finding in the text files under ``root`` (links are not followed)."""
    found: list[Finding] = []
    for folder, _, files in os.walk(root):
        for name in sorted(files):
            path = Path(folder, name)
            if is_log_file(path):
                found.extend(scan_file(path, wanted))
    return found


# --- the plugin ---------------------------------------------------------------------------------


class SecretScanner:
    """Collects findings during the session and reports them at its end."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        extra = {f"--log-secret {i}": value for i, value in enumerate(config.getoption("log_secret") or [], 1)}
        self.wanted = needles(SECRETS | extra)
        self.services = Path(config.getoption("log_secrets_services") or os.environ.get("DESQ_TEST_LOGS") or SERVICE_LOGS)
        self.findings: list[Finding] = []

    def scan(self, texts: Iterable[tuple[str, str]]) -> None:
        for place, text in texts:
            if text:
                self.findings.extend(scan_text(text, place, self.wanted))

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        where = f"{report.nodeid} ({report.when})"
        self.scan([(f"test id of {report.nodeid}", report.nodeid), (f"{where} failure report", report.longreprtext)])
        self.scan((f"{where} [{title}]", content) for title, content in report.sections)

    @pytest.hookimpl
    def pytest_warning_recorded(self, warning_message: object, nodeid: str) -> None:
        self.scan([(f"warning in {nodeid or 'the session'}", str(getattr(warning_message, "message", warning_message)))])

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        factory = getattr(self.config, "_tmp_path_factory", None)
        if factory is not None:
            self.findings.extend(scan_tree(factory.getbasetemp(), self.wanted))
        if self.services.is_dir():
            self.findings.extend(scan_tree(self.services, self.wanted))
        if not self.findings:
            return
        if session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if self.config.pluginmanager.get_plugin("terminalreporter") is None:
            print("\n".join(self.report()), file=sys.stderr)

    def report(self) -> list[str]:
        lines = [f"{len(self.findings)} line(s) of the test logs hold a test secret (shown masked):"]
        lines += [f"  {finding}" for finding in self.findings[:_SHOWN]]
        if len(self.findings) > _SHOWN:
            lines.append(f"  ... and {len(self.findings) - _SHOWN} more")
        return lines

    @pytest.hookimpl
    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.findings:
            terminalreporter.write_sep("=", "test secrets in logs", red=True, bold=True)
            for line in self.report():
                terminalreporter.write_line(line, red=True)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("log_secrets", "test secrets in logs")
    group.addoption("--log-secret", action="append", dest="log_secret", default=[], metavar="VALUE", help="one more secret no log may contain")
    group.addoption("--log-secrets-services", dest="log_secrets_services", metavar="DIR", help=f"the service logs to search (default: $DESQ_TEST_LOGS, else {SERVICE_LOGS})")


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(SecretScanner(config), "log_secrets_scanner")
