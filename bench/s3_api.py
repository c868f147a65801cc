"""The s3 role's GetObject against the files API's GET of the same members, both under gunicorn.

    python bench/s3_api.py [--quick]

Both servers run ``deploy/gunicorn.conf.py`` with the same workers over the same local archive;
wrk fetches a random member per request (``/desq/<YYYYMMDD>/<name>`` and ``/files/<name>``), the
two sides alternating. The s3 role runs without credentials: wrk cannot sign SigV4, so the figure
is the role's own cost (decision, XML-free GetObject path) without verifying a signature.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.web_load import LUA, BenchError, Phases, Server, _build_archive, _check, _common, _figure, _load, _lua, _members, _settings, _summary, start_all  # noqa: E402


def _paths_lua(paths: list[str], target: Path) -> Path:
    target.write_text(LUA.replace('"/files/" .. ', "") % ", ".join(json.dumps(p) for p in paths))
    return target


def _check_s3(server: Server, members: dict[str, bytes], names: list[str]) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        for name in names:
            conn.request("GET", f"/desq/{name[:8]}/{name}")
            answer = conn.getresponse()
            body = answer.read()
            if answer.status != 200 or body != members[name]:
                raise BenchError(f"s3: GET /desq/{name[:8]}/{name} gave {answer.status} with {len(body)} bytes\n{server.log_tail(problems_only=True)}")
    finally:
        conn.close()
    return len(names)


def s3_vs_files(quick: bool, **_: Any) -> dict[str, Any]:
    """Warm GetObject of 1-64 KiB members vs the files API's GET of the same members."""
    params = _settings(quick)
    phases = Phases()
    work = Path(tempfile.mkdtemp(prefix="desq-bench-s3-api-"))
    try:
        members = _members(params["members"])
        containers = _build_archive(members, work / "archive")
        scripts = {"files": _lua(list(members), work / "files.lua"), "s3": _paths_lua([f"/desq/{n[:8]}/{n}" for n in members], work / "s3.lua")}
        phases.mark("build")
        env = {"DESQ_ARCHIVE_URL": str(work / "archive")}
        with ExitStack() as stack:
            s3 = Server("s3", "web:create_app(role='s3')", env, work / "s3.log")
            files = Server("files", "web:create_app()", env, work / "files.log")
            start_all(stack, s3, files)
            phases.mark("start")
            checked = _check_s3(s3, members, list(members))
            _check(files, members, list(members)[:100])
            phases.mark("check")
            sides = [s3, files]
            for server in sides:
                _load(server, scripts[server.label], params["warmup_s"], [server])
            runs: dict[str, list[dict[str, Any]]] = {s.label: [] for s in sides}
            for i in range(params["repeats"]):
                for server in sides if i % 2 == 0 else sides[::-1]:
                    runs[server.label].append(_load(server, scripts[server.label], params["duration_s"], [server]))
            result = {label: _summary(r, params["duration_s"]) for label, r in runs.items()}
            phases.mark("load")
        ratio = result["s3"]["requests_per_s"]["median"] / result["files"]["requests_per_s"]["median"]
        details = _common(members, containers, params, sides) | {
            "desq": result["s3"],
            "anchor": result["files"],
            "sides": {"desq": "GET /desq/<YYYYMMDD>/<name> (web:create_app(role='s3'), no credentials)", "anchor": "GET /files/<name> (web:create_app())"},
            "checked_members_byte_for_byte": checked,
            "phases_s": phases.report(),
        }
        return {"figure": f"S3 GetObject: {_figure(result['s3'])}", "anchor": f"files API GET: {_figure(result['files'])}", "ratio": ratio, "goal": "reported: what the S3 API costs over the files API", "met": True, "details": details}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    print(json.dumps(s3_vs_files(args.quick), indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
