"""uid mode's cutoff: the planner of the days after it, and the controller that moves it.

Every file created on or before the cutoff is in its container; reads of later files go to the
original. The cutoff is kept in desq's state (``desq/state.py``) and published beside the
containers (``desq/published.py``), so the files API needs no database. It only moves forward,
over days whose every source row is found in its container's index.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import date
from typing import TYPE_CHECKING

from desq.archive import Archive
from desq.days import next_day, shifted, target_day
from desq.layout import container_key
from desq.pipeline.present import Presence, Unreadable
from desq.published import AdvanceReport, publish
from desq.storage import Storage
from desq.source.marker import future_rows
from desq.source.plan import Plan, UidReadReport, plan_uids, uid_rows
from desq.source.table import SourceTable
from desq.state import StateStore

if TYPE_CHECKING:
    from desq.spool import SpoolWriter


def plan_after_cutoff(source: SourceTable, state: StateStore, storage: Storage, today: date, spool: SpoolWriter | None = None) -> Plan:
    """uid mode: the (date, shard)s of the days after the cutoff whose containers lack some of
    their rows (a night run again plans nothing); their rows into ``spool``, else in ``Plan.rows``."""
    cutoff = state.cutoff()
    last = target_day(today, source.settings.archive.after_days)
    first = next_day(cutoff) if cutoff else None
    if cutoff is not None and (first is None or first > last):
        return Plan(rows=None if spool is not None else {}, night=spool.night if spool is not None else None)
    plan = plan_uids(source, first, last, spool)
    for uid, created in future_rows(source, today):
        plan.future += 1
        if len(plan.future_examples) < 5:
            plan.future_examples.append(f"uid {uid}: created_at {created!s} is in the future")
    presence = Presence(Archive(storage, cache_bytes=0), source.layout.shard_bits)
    kept = []
    for work in plan.work:
        if spool is not None:
            names: Iterable[str] = spool.names(work.date, work.shard)
        else:
            assert plan.rows is not None
            names = (r.name for r in plan.rows[(work.date, work.shard)])
        try:
            lacking = presence.missing(work.date, work.shard, names)
        except Unreadable:
            lacking = ["?"]  # the packer reports what is wrong with it
        if lacking:
            kept.append(work)
            continue
        if spool is not None:
            spool.drop(work.date, work.shard)
        else:
            assert plan.rows is not None
            del plan.rows[(work.date, work.shard)]
        plan.skipped += 1
    plan.work = kept
    return plan


def _examples(report: AdvanceReport, items: Iterable[str]) -> None:
    for item in items:
        if len(report.examples) >= 5:
            return
        report.examples.append(item)


def advance(source: SourceTable, state: StateStore, archive: Archive, *, today: date, move: bool = True) -> AdvanceReport:
    """Move the cutoff forward over every day whose rows are all in their containers, then publish.

    The rows after the cutoff are read once; a day with no rows holds nothing back, so a created_at
    in the year 1 costs one day's check, not two thousand years of them. With ``move=False`` it only
    says how far the cutoff could move and what blocks it."""
    before = state.cutoff()
    target = target_day(today, source.settings.archive.after_days)
    report = AdvanceReport(before=before, after=before, target=target, moved=move)
    if before is None or before < target:
        _check(source, archive, report, None if before is None else next_day(before))
    if move:
        if report.after is not None and report.after != before:
            state.set_cutoff(report.after)
        publish(archive.storage, report.after, report)
    return report


def _check(source: SourceTable, archive: Archive, report: AdvanceReport, first: date | None) -> None:
    unread = UidReadReport()
    by_day: dict[date, dict[int, list[str]]] = defaultdict(lambda: defaultdict(list))
    for row in uid_rows(source, first, report.target, unread):
        by_day[row.date][row.shard].append(row.name)
        report.checked_rows += 1
    report.checked_rows += unread.unplanned
    report.unplaced, report.unplaced_examples = unread.unplaced_rows, unread.unplaced_examples
    days = sorted(set(by_day) | set(unread.by_day))
    if not days and report.before is None:
        return  # nothing to archive yet: no cutoff to claim
    presence = Presence(archive, source.layout.shard_bits)
    bits = source.layout.shard_bits
    complete: date | None = None
    for day in days:
        report.checked_days += 1
        missing = unread.by_day[day]
        _examples(report, unread.day_problems.get(day, []))
        for shard, names in sorted(by_day[day].items()):
            key = container_key(day, shard, bits)
            try:
                absent = presence.missing(day, shard, names)
            except Unreadable as exc:
                absent = names
                _examples(report, [str(exc)])
            missing += len(absent)
            _examples(report, (f"{n} (looked in {key})" for n in absent))
        if missing:
            report.blocked_day, report.missing = day, missing
            previous = shifted(day, -1)
            if previous is not None and (complete is not None or (report.before is not None and previous > report.before)):
                report.after = previous
            return
        complete = day
    report.after = report.target
