"""The oracle of the chaos suite: what really happened, read from outside the board.

Three sources, none of them trusting the board's own word alone:

* the task log every process appends to (``chaos_flows.oracle_line``): each
  task's start and end with the job, the task, the fencing token, the pid and
  the host's monotonic time;
* the conductors' JSON logs (``conductor run --log-format json``): every
  ``job_consumed`` line;
* the board's final word on each posted job: its state, its token, its result
  and its saved progress records (each carries the token it was saved under).

Evidence that a task's success was saved under token ``t``: the task and then
the next one of the line ran under ``t`` (the engine saves a task before it
starts the next one), the job was consumed under ``t`` (for the last task), or the board
holds that task's record saved under ``t``.

Verdicts, per job:

* **lost**: not on the board any more, or finished otherwise than complete;
* **stuck**: still waiting or claimed when the run's time was up;
* **double consumed**: more than one ``job_consumed`` line for it;
* **saved-task re-run**: a task started again although its success was saved
  before: under a later token than the save (the resuming owner must skip
  it), or under an earlier token at a time after the next task had started
  under the saving token (a stale owner starting work it should know lost);
* **stale write accepted**: the job was consumed under a token lower than one
  that ran its tasks, a task's saved record is older than a save the oracle
  saw succeed, or the result and the saved progress disagree on who did a task;
* **token reused**: two processes ran the same task of a job under one token;
* **in-flight re-run** (allowed, counted): a task started again after its
  earlier run was cut off before its save.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jobboard
from jobboard import JobState
from tests.chaos.chaos_flows import TASKS


@dataclass(frozen=True)
class TaskEvent:
    """One line of the task log."""

    ev: str
    job: str
    task: str
    token: int
    pid: int
    m: float


@dataclass
class Verdict:
    """The oracle's findings over one run; ``examples`` names a few jobs per finding."""

    jobs: int = 0
    lost: int = 0
    stuck: int = 0
    double_consumed: int = 0
    saved_task_reruns: int = 0
    stale_writes_accepted: int = 0
    token_reused: int = 0
    in_flight_reruns: int = 0
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def note(self, kind: str, detail: str) -> None:
        if len(self.examples[kind]) < 5:
            self.examples[kind].append(detail)

    @property
    def violations(self) -> int:
        return (
            self.lost
            + self.stuck
            + self.double_consumed
            + self.saved_task_reruns
            + self.stale_writes_accepted
            + self.token_reused
        )


def read_task_log(folder: Path) -> list[TaskEvent]:
    """Every whole line of every process's task log (a killed process may leave half a line)."""
    events = []
    for path in sorted(folder.glob("oracle-*.jsonl")):
        for line in path.read_text(errors="replace").splitlines():
            try:
                row = json.loads(line)
                events.append(
                    TaskEvent(
                        row["ev"], row["job"], row["task"], int(row["token"]), row["pid"], row["m"]
                    )
                )
            except (ValueError, KeyError, TypeError):
                continue
    return events


def count_consumed(log_paths: Iterable[Path]) -> Counter[str]:
    """How many ``job_consumed`` lines each job has in the conductors' JSON logs."""
    counts: Counter[str] = Counter()
    for path in log_paths:
        for line in path.read_text(errors="replace").splitlines():
            if '"job_consumed"' not in line:
                continue
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if row.get("event") == "job_consumed" and row.get("job_id"):
                counts[row["job_id"]] += 1
    return counts


@dataclass
class FinalJob:
    """The board's final word on one posted job (``state`` None when it is gone)."""

    id: str
    state: JobState | None
    token: int = 0
    result: Any = None
    last_error: str | None = None
    progress: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


def read_final(board: jobboard.JobBoard, job_ids: Iterable[str]) -> dict[str, FinalJob]:
    """Read each job and its progress once the run is over."""
    out = {}
    for job_id in job_ids:
        try:
            job = board.get(job_id)
        except jobboard.JobNotFound:
            out[job_id] = FinalJob(job_id, None)
            continue
        out[job_id] = FinalJob(
            job_id, job.state, job.token, job.result, job.last_error, board.load_progress(job_id)
        )
    return out


def judge(
    final: Mapping[str, FinalJob], events: list[TaskEvent], consumed: Mapping[str, int]
) -> Verdict:
    """Apply every check of the module docstring to one run."""
    verdict = Verdict(jobs=len(final))
    by_job: dict[str, list[TaskEvent]] = defaultdict(list)
    for event in events:
        by_job[event.job].append(event)
    for job_id, job in final.items():
        _judge_outcome(verdict, job, consumed.get(job_id, 0))
        _judge_tasks(verdict, job, sorted(by_job.get(job_id, []), key=lambda e: e.m))
    return verdict


def _judge_outcome(verdict: Verdict, job: FinalJob, consumed: int) -> None:
    if job.state is None:
        verdict.lost += 1
        verdict.note("lost", f"{job.id}: gone from the board")
    elif job.state in (JobState.WAITING, JobState.CLAIMED):
        verdict.stuck += 1
        verdict.note("stuck", f"{job.id}: still {job.state.value} (token {job.token})")
    elif job.state is not JobState.COMPLETE:
        verdict.lost += 1
        verdict.note("lost", f"{job.id}: ended {job.state.value}: {job.last_error}")
    if consumed > 1:
        verdict.double_consumed += 1
        verdict.note("double_consumed", f"{job.id}: {consumed} job_consumed lines")


def _saves(job: FinalJob, starts: Mapping[str, list[TaskEvent]]) -> dict[str, dict[int, float]]:
    """Per task: tokens its success is known saved under -> latest time the save was done by."""
    saves: dict[str, dict[int, float]] = {name: {} for name in TASKS}
    for i, name in enumerate(TASKS[:-1]):
        ran = {(e.token, e.pid) for e in starts[name]}
        for event in starts[TASKS[i + 1]]:
            if (event.token, event.pid) not in ran:
                continue  # the task was resumed from an earlier owner's record
            known = saves[name].get(event.token, math.inf)
            saves[name][event.token] = min(known, event.m)
    last = TASKS[-1]
    if job.state is JobState.COMPLETE and any(e.token == job.token for e in starts[last]):
        saves[last].setdefault(job.token, math.inf)
    for name, record in job.progress.items():
        token = (record.get("metadata") or {}).get("token")
        if name in saves and record.get("state") == "SUCCESS" and isinstance(token, int):
            saves[name].setdefault(token, math.inf)
    return saves


def _judge_tasks(verdict: Verdict, job: FinalJob, events: list[TaskEvent]) -> None:
    starts: dict[str, list[TaskEvent]] = {name: [] for name in TASKS}
    for event in events:
        if event.ev == "start" and event.task in starts:
            starts[event.task].append(event)
    saves = _saves(job, starts)
    top = max((e.token for e in events), default=0)
    if job.state is JobState.COMPLETE and top > job.token:
        verdict.stale_writes_accepted += 1
        verdict.note(
            "stale_writes_accepted", f"{job.id}: consumed under {job.token}, token {top} ran"
        )
    for name in TASKS:
        _judge_task(verdict, job, name, starts[name], saves[name])


def _judge_task(
    verdict: Verdict,
    job: FinalJob,
    name: str,
    starts: list[TaskEvent],
    saves: Mapping[int, float],
) -> None:
    pids_by_token: dict[int, set[int]] = defaultdict(set)
    for event in starts:
        pids_by_token[event.token].add(event.pid)
    for token, pids in pids_by_token.items():
        if len(pids) > 1:
            verdict.token_reused += 1
            verdict.note("token_reused", f"{job.id}/{name}: token {token} ran in pids {pids}")
    reruns = 0
    for event in starts:
        after_save = [
            t
            for t, done_by in saves.items()
            if t < event.token or (t > event.token and event.m > done_by)
        ]
        if after_save:
            reruns += 1
            verdict.note(
                "saved_task_reruns",
                f"{job.id}/{name}: started under {event.token} (pid {event.pid}) after its "
                f"save under {sorted(after_save)}",
            )
    verdict.saved_task_reruns += reruns
    verdict.in_flight_reruns += max(0, len(starts) - 1 - reruns)
    record = job.progress.get(name) or {}
    saved_token = (record.get("metadata") or {}).get("token")
    if isinstance(saved_token, int) and saves and max(saves) > saved_token:
        verdict.stale_writes_accepted += 1
        verdict.note(
            "stale_writes_accepted",
            f"{job.id}/{name}: saved record under {saved_token}, a save under {max(saves)} was seen",
        )
    out = (job.result or {}).get(f"{name}_out") if isinstance(job.result, dict) else None
    if (
        job.state is JobState.COMPLETE
        and isinstance(out, dict)
        and isinstance(saved_token, int)
        and out.get("token") != saved_token
    ):
        verdict.stale_writes_accepted += 1
        verdict.note(
            "stale_writes_accepted",
            f"{job.id}/{name}: result says token {out.get('token')}, progress says {saved_token}",
        )
