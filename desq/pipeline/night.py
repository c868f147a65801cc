"""The nightly run: mark (name mode), plan, pack every (date, shard), finish with the cutoff step.

``run_sync`` does all of it in this process; the Celery tasks in ``tasks/`` call the same pieces,
with one ``pack_shard`` task per (date, shard) on the queue of its shard.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from desq.archive import Archive
from desq.deployment import Deployment
from desq.leftovers import SAFE_AGE, remove_big_files, safe_age
from desq.pipeline.lease import Leases
from desq.pipeline.pack import STAGING, PackReport
from desq.published import UNREPORTED, publish_night
from desq.settings import Settings
from desq.source.marker import MarkReport
from desq.source.plan import Plan
from desq.source.table import first_line

log = logging.getLogger(__name__)


def plan_night(deployment: Deployment, today: date) -> Plan:
    """What tonight packs (the mode decides; uid mode: ``cutoff.plan_after_cutoff``), each task's
    rows written to the night's spool (``Plan.night``)."""
    with deployment.spool.writer(today.isoformat()) as spool:
        return deployment.mode.plan(deployment.source, deployment.state, deployment.storage, today, spool)


def plan_notes(plan: Plan, marked: MarkReport | None = None) -> dict[str, Any]:
    """What the night's summary says of the plan: containers left as they were, and the rows left out
    (no day, in the future, unusable), with examples that each say why."""
    notes: dict[str, Any] = {"complete_containers": plan.skipped, "unplaced": plan.unplaced, "future": plan.future, "unplanned": plan.unplanned}
    notes["examples"] = (plan.unplaced_examples[:5] + plan.future_examples + plan.problems[:5])[:10]
    if marked is not None:
        notes |= {"unplaced": marked.unplaced, "future": marked.future_created_at, "examples": marked.examples[: 10 - len(plan.problems[:5])] + plan.problems[:5]}
    return notes


def gather_reports(kept: dict[tuple[str, str], dict[str, Any]], results: list[dict[str, Any]], tasks: int | None) -> list[dict[str, Any]]:
    """A night's pack reports: those kept in desq's state, then any other ``results`` carried; when
    fewer than the night's ``tasks``, one "unreported" entry for each missing."""
    reports = dict(kept)
    for result in results:
        reports.setdefault((result.get("date"), result.get("shard")), result)
    gathered = list(reports.values())
    missing = (tasks or 0) - len(gathered)
    for index in range(max(0, missing)):
        lost = ["a pack_shard task left no report (desq's database was down): the next night packs what it left READY"]
        gathered.append({"status": UNREPORTED, "failures": lost if index == 0 else []})
    return gathered


def finish(deployment: Deployment, today: date, packs: list[dict[str, Any]], notes: dict[str, Any] | None = None) -> dict[str, Any]:
    """After every shard of a night: the cutoff step (uid mode), then the night's summary, which is
    also published beside the containers (``_desq/night.json``) for the files API's metrics."""
    summary: dict[str, Any] = {
        "today": today.isoformat(),
        "tasks": len(packs),
        "rewritten": sum(1 for p in packs if p.get("rewrote")),
        "files": sum(p.get("files", 0) for p in packs),
        "present": sum(p.get("present", 0) for p in packs),
        "kept": sum(p.get("kept", 0) for p in packs),
        "bytes": sum(p.get("bytes", 0) for p in packs),
        "failed_rows": sum(p.get("failed_rows", 0) for p in packs),
        "by_status": {},
        "failures": [f for p in packs for f in p.get("failures", [])][:50],
    }
    for p in packs:
        summary["by_status"][p.get("status", "failed")] = summary["by_status"].get(p.get("status", "failed"), 0) + 1
    summary |= deployment.mode.finish(deployment.source, deployment.state, Archive(deployment.storage), today)
    summary["expired_leases_removed"] = remove_expired_leases(deployment)
    deployment.spool.clear(today.isoformat())
    summary |= notes or {}
    publish_night(deployment.storage, summary)
    return summary


def remove_expired_leases(deployment: Deployment) -> int:
    """Delete the leases released or expired more than one lease period ago (a night leaves one row
    per container it packed); how many. A database error is logged, never the night's failure."""
    grace = timedelta(seconds=deployment.settings.pipeline.lease_seconds)
    try:
        return deployment.leases.clear_expired(older_than=grace)
    except SQLAlchemyError as exc:
        log.warning("could not remove expired leases: %s", first_line(exc))
        return 0


@dataclass
class NightReport:
    """A whole night run in one process."""

    today: str
    marked: str = ""
    plan: list[tuple[str, int, int]] = field(default_factory=list)
    packs: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def run_sync(settings: Settings, today: date, *, worker: str | None = None) -> NightReport:
    """The whole night in this process, no broker: mark, plan, pack each (date, shard), finish."""
    started = time.monotonic()
    deployment = Deployment(settings)
    report = NightReport(today=today.isoformat())
    marked = deployment.mode.mark(deployment.source, today)
    report.marked = marked.summary() if marked else ""
    plan = plan_night(deployment, today)
    report.plan = [(w.date.isoformat(), w.shard, w.files) for w in plan.work]
    with deployment.packer(worker=worker) as packer:
        for work in plan.work:
            try:
                report.packs.append(packer.pack(work.date, work.shard, night=plan.night).as_dict())
            except Exception as exc:  # noqa: BLE001 - one shard's failure is reported, the night goes on
                report.packs.append(PackReport.failed(work.date, work.shard, settings.shard_bits, str(exc)).as_dict())
    report.summary = finish(deployment, today, report.packs, plan_notes(plan, marked))
    report.seconds = round(time.monotonic() - started, 2)
    return report


@dataclass
class RecoverReport:
    leases: int = 0
    uploads: int = 0
    staging: int = 0
    big_files: int = 0
    removed: list[str] = field(default_factory=list)
    """The keys of the staging objects and big files removed."""

    def summary(self) -> str:
        return (
            f"cleared {self.leases} expired lease(s), aborted {self.uploads} abandoned upload(s), removed {self.staging} stale staging object(s)"
            f" and {self.big_files} big file(s) no container references"
        )


def recover(deployment: Deployment, *, older_than: timedelta = SAFE_AGE) -> RecoverReport:
    """Clear what crashed packers left: expired leases, abandoned uploads, stale staging objects,
    big files no container references.

    Only ``<key>.staging-<token>`` objects are removed, never a container: a container is replaced
    only by publishing a verified staging object over it. A staging object is stale once its packer
    no longer holds the lease with that token (it can never publish it), or when it is older than
    ``older_than``. A big file goes only when neither its container nor a staging object of it
    references it, it is older than ``older_than`` and twice the lease time, and no packer holds
    the lease on its container (``leftovers.remove_big_files``).
    """
    storage = deployment.storage
    report = RecoverReport()
    leases = deployment.leases
    report.leases = leases.clear_expired()
    report.uploads = storage.abort_stale_uploads(older_than.total_seconds())
    cutoff = datetime.now(timezone.utc) - older_than
    for info in storage.list():
        if STAGING not in info.key.rpartition("/")[2]:
            continue
        if info.modified is None or info.modified < cutoff or not _staging_is_live(leases, info.key):
            storage.delete(info.key)
            report.staging += 1
            report.removed.append(info.key)
    big = remove_big_files(storage, leases, safe_age(deployment.settings.pipeline.lease_seconds, older_than))
    report.big_files = len(big)
    report.removed += big
    return report


def _staging_is_live(leases: Leases, staging: str) -> bool:
    """Whether the packer that writes ``<key>.staging-<token>`` still holds the lease of that token."""
    key, _, token = staging.rpartition(STAGING)
    try:
        return leases.live_token(f"pack:{key}") == int(token, 16)
    except ValueError:
        return True
