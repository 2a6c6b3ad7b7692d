"""Named periodic schedules stored on the board, and their promotion into jobs.

A schedule is a JSON record in the board's compare-and-set record store
(``put_schedule`` / ``get_schedules``): the flow, the store, the priority,
either ``every`` seconds or a 5-field ``cron`` expression (UTC), a ``paused``
flag and ``next_at``, the board time of its next tick.

Conductors call :func:`promote_due` from their heartbeat. A due tick is posted
with the dedupe key ``schedule:<name>:<tick>`` and then ``next_at`` is advanced
with compare-and-set, so however many conductors race on one tick it becomes
one job: the losers' posts return the winner's job and their writes conflict.
After an outage only the latest due tick is posted, never one job per missed
period.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from jobboard import errors
from jobboard.base import JobBoard
from jobboard.model import Job, JobPriority

__all__ = [
    "Cron",
    "Schedule",
    "add_schedule",
    "list_schedules",
    "promote_due",
    "set_paused",
]

log = logging.getLogger(__name__)

#: (name, lowest, highest) of the five cron fields, in order.
_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day-of-month", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 7),
)
#: How far ahead a cron expression is searched for its next time before it counts as never firing.
_SEARCH_DAYS = 366 * 5
#: Most ticks stepped over to find the latest due one within one look-back window.
_MAX_STEPS = 100_000
#: How far back (seconds) the latest due cron tick is looked for, nearest window first.
_LOOK_BACK = (3600.0, 8 * 86400.0, 400 * 86400.0, 5 * 366 * 86400.0, math.inf)


def _bad(expr: str, field: str, why: str) -> errors.InvalidJob:
    return errors.InvalidJob(f"cron expression {expr!r}: field {field}: {why}", field="cron")


def _parse_field(expr: str, text: str, field: str, low: int, high: int) -> frozenset[int]:
    """One cron field: ``*``, numbers, ``a-b`` ranges, ``/step`` steps, comma lists."""
    values: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise _bad(expr, field, f"step {step_text!r} is not a whole number > 0")
            step = int(step_text)
        if base == "*":
            first, last = low, high
        else:
            first_text, dash, last_text = base.partition("-")
            if not first_text.isdigit() or (dash and not last_text.isdigit()):
                raise _bad(expr, field, f"{part!r} is not *, N, N-M or a step of one")
            first = int(first_text)
            last = int(last_text) if dash else (high if step_text else first)
            if not low <= first <= last <= high:
                raise _bad(expr, field, f"{part!r} is outside {low}-{high} or reversed")
        values.update(range(first, last + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class Cron:
    """A parsed 5-field cron expression: minute hour day-of-month month day-of-week (UTC).

    Day-of-week runs 0-6 from Sunday (7 is Sunday too). As in classic cron,
    when both day fields are restricted a day matching either one fires.
    """

    expr: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    any_day: bool
    any_weekday: bool

    @classmethod
    def parse(cls, expr: str) -> Cron:
        """Parse ``expr``; raises ``InvalidJob`` naming the field that does not parse."""
        if not isinstance(expr, str):
            raise errors.InvalidJob("cron expression must be a string", field="cron")
        parts = expr.split()
        if len(parts) != 5:
            raise errors.InvalidJob(
                f"cron expression {expr!r}: needs 5 fields "
                f"(minute hour day-of-month month day-of-week), got {len(parts)}",
                field="cron",
            )
        sets = [_parse_field(expr, p, *f) for p, f in zip(parts, _FIELDS, strict=True)]
        weekdays = frozenset(d % 7 for d in sets[4])
        minutes, hours, days, months = sets[:4]
        cron = cls(expr, minutes, hours, days, months, weekdays, parts[2] == "*", parts[4] == "*")
        cron.next_after(time.time())  # refuses an expression that never fires (Feb 30)
        return cron

    def _day_matches(self, moment: datetime) -> bool:
        dom = moment.day in self.days
        dow = moment.isoweekday() % 7 in self.weekdays
        if self.any_day or self.any_weekday:
            return dom and dow
        return dom or dow

    def next_after(self, t: float) -> float:
        """The first time strictly after ``t`` (epoch seconds) that the expression names."""
        moment = datetime.fromtimestamp(math.floor(t / 60) * 60 + 60, UTC)
        limit = moment + timedelta(days=_SEARCH_DAYS)
        while moment < limit:
            if moment.month not in self.months or not self._day_matches(moment):
                moment = (moment + timedelta(days=1)).replace(hour=0, minute=0)
            elif moment.hour not in self.hours:
                moment = (moment + timedelta(hours=1)).replace(minute=0)
            elif moment.minute not in self.minutes:
                moment += timedelta(minutes=1)
            else:
                return moment.timestamp()
        raise errors.InvalidJob(
            f"cron expression {self.expr!r}: field day-of-month: never fires", field="cron"
        )


@dataclass(frozen=True)
class Schedule:
    """A schedule as stored, with its record version (for compare-and-set)."""

    name: str
    flow: str
    store: dict[str, Any]
    priority: str
    every: float | None
    cron: str | None
    paused: bool
    next_at: float
    version: int

    @classmethod
    def from_record(cls, name: str, record: Mapping[str, Any], version: int) -> Schedule:
        return cls(
            name,
            str(record["flow"]),
            dict(record.get("store") or {}),
            str(record.get("priority", "NORMAL")),
            None if record.get("every") is None else float(record["every"]),
            record.get("cron"),
            bool(record.get("paused", False)),
            float(record["next_at"]),
            version,
        )

    def record(self, **changes: Any) -> dict[str, Any]:
        """The JSON record to store, with ``changes`` applied."""
        out = {
            "flow": self.flow,
            "store": self.store,
            "priority": self.priority,
            "every": self.every,
            "cron": self.cron,
            "paused": self.paused,
            "next_at": self.next_at,
        }
        out.update(changes)
        return out

    def next_after(self, t: float) -> float:
        """The first tick strictly after ``t``."""
        if self.every is not None:
            steps = math.floor((t - self.next_at) / self.every) + 1
            return self.next_at + max(steps, 1) * self.every if t >= self.next_at else self.next_at
        assert self.cron is not None
        return Cron.parse(self.cron).next_after(t)

    def latest_due(self, now: float) -> float | None:
        """The latest tick at or before ``now`` (None when not due): missed ticks collapse."""
        if self.next_at > now:
            return None
        if self.every is not None:
            return self.next_at + math.floor((now - self.next_at) / self.every) * self.every
        cron = Cron.parse(self.cron or "")
        # Look back over growing windows so a long outage costs few steps.
        for window in _LOOK_BACK:
            start = max(self.next_at, now - window)
            tick = start if start == self.next_at else cron.next_after(start - 1)
            if tick > now:
                continue
            for _ in range(_MAX_STEPS):
                following = cron.next_after(tick)
                if following > now:
                    return tick
                tick = following
        return self.next_at


def _check_every(every: float) -> float:
    if isinstance(every, bool) or not isinstance(every, int | float):
        raise errors.InvalidJob("field 'every' must be a number of seconds", field="every")
    if not (0 < every < math.inf):
        raise errors.InvalidJob(f"field 'every' must be finite and > 0, got {every}", field="every")
    return float(every)


def add_schedule(
    board: JobBoard,
    name: str,
    flow: str,
    *,
    every: float | None = None,
    cron: str | None = None,
    store: Mapping[str, Any] | None = None,
    priority: JobPriority | str = JobPriority.NORMAL,
    paused: bool = False,
    now: float | None = None,
) -> Schedule:
    """Store a new schedule (``VersionConflict`` if the name exists); first tick after ``now``.

    Give exactly one of ``every`` (seconds) or ``cron`` (5 fields, UTC). The
    flow need not be served yet: :func:`list_schedules` says when none serves it.
    """
    if (every is None) == (cron is None):
        raise errors.InvalidJob(f"schedule {name!r}: give one of 'every' or 'cron'", field="every")
    if not isinstance(flow, str) or not flow:
        raise errors.InvalidJob(f"schedule {name!r}: field 'flow' must be a name", field="flow")
    start = time.time() if now is None else now
    if every is not None:
        next_at = start + _check_every(every)
    else:
        next_at = Cron.parse(str(cron)).next_after(start)
    rank = priority.name if isinstance(priority, JobPriority) else JobPriority[priority.upper()].name
    schedule = Schedule(
        name, flow, dict(store or {}), rank, every, cron, paused, next_at, 0
    )
    version = board.put_schedule(name, schedule.record())
    return Schedule.from_record(name, schedule.record(), version)


def list_schedules(board: JobBoard) -> list[Schedule]:
    """Every readable schedule, by name; a malformed record is logged and left out."""
    out = []
    for name, (record, version) in board.get_schedules().items():
        try:
            out.append(Schedule.from_record(name, record, version))
        except (KeyError, TypeError, ValueError) as err:
            log.warning("schedule %r is malformed (%s); skipped", name, err)
    return out


def set_paused(board: JobBoard, name: str, paused: bool) -> Schedule:
    """Pause or resume a schedule (compare-and-set; a resumed one's next tick is in the future)."""
    for _ in range(10):
        found = {s.name: s for s in list_schedules(board)}.get(name)
        if found is None:
            raise errors.JobNotFound(f"no schedule named {name!r}")
        changes: dict[str, Any] = {"paused": paused}
        now = time.time()
        if not paused and found.next_at <= now:
            changes["next_at"] = found.next_after(now)
        try:
            version = board.put_schedule(name, found.record(**changes), found.version)
        except errors.VersionConflict:
            continue
        return Schedule.from_record(name, found.record(**changes), version)
    raise errors.VersionConflict(f"schedule {name!r} kept changing; try again")


def tick_key(name: str, tick: float) -> str:
    """The dedupe key of one tick: equal for every conductor promoting it."""
    return f"schedule:{name}:{tick:.3f}"


def next_due(found: Iterable[Schedule], flows: Collection[str] | None, now: float) -> float:
    """When the next tick of an unpaused schedule of ``flows`` (all when None) among
    ``found`` falls due, once the ticks due at ``now`` are posted; inf when none.
    A conductor that knows the schedules did not change reads them again only then."""
    due = math.inf
    for schedule in found:
        if schedule.paused or (flows is not None and schedule.flow not in flows):
            continue
        upcoming = schedule.next_at if schedule.next_at > now else schedule.next_after(now)
        due = min(due, upcoming)
    return due


def promote_due(
    board: JobBoard,
    flows: Collection[str] | None = None,
    now: float | None = None,
    found: Iterable[Schedule] | None = None,
) -> list[Job]:
    """Post the due tick of every unpaused schedule of ``flows`` (all when None) and
    advance its ``next_at``; returns the jobs this call posted or found posted.
    ``found``: the schedules as just read (else they are read here)."""
    now = time.time() if now is None else now
    posted = []
    for schedule in list_schedules(board) if found is None else found:
        if schedule.paused or (flows is not None and schedule.flow not in flows):
            continue
        try:
            tick = schedule.latest_due(now)
            if tick is None:
                continue
            when = datetime.fromtimestamp(tick, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            job = board.post(
                f"{schedule.name}@{when}",
                schedule.flow,
                schedule.store,
                priority=schedule.priority,
                key=tick_key(schedule.name, tick),
                details={"schedule": schedule.name, "tick": tick},
            )
            posted.append(job)
            record = schedule.record(next_at=schedule.next_after(now))
            board.put_schedule(schedule.name, record, schedule.version)
        except errors.VersionConflict:
            continue  # another conductor advanced it: its tick has the same key
        except errors.InvalidJob as err:
            log.warning("schedule %r cannot be promoted: %s", schedule.name, err)
    return posted
