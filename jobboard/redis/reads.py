"""Reads and listings of the Redis board, from the indexes, never a key scan.

Jobs are listed from the waiting sets, the leases and the finished index
(layout in ``lua/_lib.lua``) and read in pipelined batches; a claim whose
lease ran out by the server's clock reads as waiting. Reads retry connection
errors (see :mod:`jobboard.redis.session`).
"""

from __future__ import annotations

from typing import Any, ClassVar

from jobboard import errors
from jobboard.model import FINISHED_STATES, Job, JobRef, JobState
from jobboard.redis.decoding import (
    PROGRESS_FIELD,
    decode_job,
    json_object,
    readable_job,
    server_time,
    stored_field,
    text,
)
from jobboard.redis.events import RedisEvents
from jobboard.redis.session import log

__all__ = ["RedisReads"]


class RedisReads(RedisEvents):
    """Reading jobs, listings, progress and counters."""

    #: Jobs read per pipeline when listing.
    READ_BATCH: ClassVar[int] = 500

    def get(self, job: JobRef) -> Job:
        job_id = self._job_id(job)

        def read() -> tuple[dict[Any, Any], tuple[int, int]]:
            pipe = self._pipeline()
            pipe.hgetall(self._job_key(job_id))
            pipe.time()
            raw, now = pipe.execute()
            return raw, now

        raw, now = self._call("get", job_id, read, safe=True)
        if not raw:
            raise errors.JobNotFound(f"no job {errors.shown(job_id)} on board {self.name!r}")
        return decode_job(job_id, raw, server_time(now))

    def _list_jobs(self, wanted: frozenset[JobState], flow: str | None, fresh: bool) -> list[Job]:
        return self._call("iterjobs", None, lambda: self._list(wanted, flow), safe=True)

    def _list(self, wanted: frozenset[JobState], flow: str | None) -> list[Job]:
        """Jobs in ``wanted`` states from the indexes (never a key scan), in claim order."""
        p = self._prefix
        pipe = self._pipeline()
        pipe.time()
        pipe.zrange(f"{p}leases", 0, -1)
        pipe.zrange(f"{p}finished", 0, -1)
        pipe.smembers(f"{p}flows")
        pipe.zrange(f"{p}scheduled", 0, -1)
        now_reply, leased, finished, flow_names, scheduled = pipe.execute()
        now = server_time(now_reply)
        # Job id -> the state its index implies (None: finished, state unknown).
        ids: dict[str, JobState | None] = {}
        if JobState.WAITING in wanted:
            names = [flow] if flow is not None else sorted(text(f) for f in flow_names)
            pipe = self._pipeline()
            for name in names:
                pipe.zrange(f"{p}waiting:{name}", 0, -1)
            for members in pipe.execute():
                ids.update(dict.fromkeys((text(m) for m in members), JobState.WAITING))
        if wanted & {JobState.WAITING, JobState.CLAIMED}:
            ids.update(dict.fromkeys((text(m) for m in leased), JobState.CLAIMED))
        if wanted & {JobState.WAITING, JobState.SCHEDULED}:
            ids.update(dict.fromkeys((text(m) for m in scheduled), JobState.SCHEDULED))
        if wanted & FINISHED_STATES:
            ids.update(dict.fromkeys((text(m) for m in finished), None))
        jobs = []
        order = list(ids)
        for start in range(0, len(order), self.READ_BATCH):
            batch = order[start : start + self.READ_BATCH]
            pipe = self._pipeline()
            for job_id in batch:
                pipe.hgetall(self._job_key(job_id))
            for job_id, raw in zip(batch, pipe.execute(), strict=True):
                if not raw:
                    continue  # purged or expired meanwhile
                job = readable_job(job_id, raw, now, where=ids[job_id])
                if "unreadable" in job.details and not job.store:
                    log.warning(
                        "redis board %r: job %s has an unreadable record: %s",
                        self.namespace,
                        job_id,
                        job.details["unreadable"],
                    )
                if job.state in wanted and (flow is None or job.flow == flow):
                    jobs.append(job)
        jobs.sort(key=lambda j: (j.priority.rank, j.seq))
        return jobs

    @property
    def job_count(self) -> int:
        p = self._prefix

        def read() -> int:
            pipe = self._pipeline()
            pipe.smembers(f"{p}flows")
            pipe.zcard(f"{p}leases")
            pipe.zcard(f"{p}scheduled")
            flows, leased, scheduled = pipe.execute()
            pipe = self._pipeline()
            for name in flows:
                pipe.zcard(f"{p}waiting:{text(name)}")
            return int(leased) + int(scheduled) + sum(int(n) for n in pipe.execute())

        return self._call("job_count", None, read, safe=True)


    def load_progress(self, job: JobRef) -> dict[str, dict[str, Any]]:
        job_id = self._job_id(job)

        def read() -> tuple[dict[Any, Any], dict[Any, Any]]:
            pipe = self._pipeline()
            pipe.hgetall(self._job_key(job_id))
            # A job posted before the records moved into its hash may keep some here.
            pipe.hgetall(f"{self._prefix}progress:{job_id}")
            fields, older = pipe.execute()
            return fields, older

        fields, older = self._call("load_progress", job_id, read, safe=True)
        if not fields:
            raise errors.JobNotFound(f"no job {errors.shown(job_id)} on board {self.name!r}")
        records = {text(atom): text(record) for atom, record in older.items()}
        for name, record in fields.items():
            field = text(name)
            if field.startswith(PROGRESS_FIELD):
                records[field[len(PROGRESS_FIELD) :]] = text(record)
        return {
            name: stored_field({name: record}, job_id, name, json_object)
            for name, record in records.items()
        }

    def counters(self) -> dict[str, int]:
        """The ``count:`` fields of the board's marker, plus the counters hash that
        boards kept before (read, never written)."""

        def read() -> list[Any]:
            pipe = self._pipeline()
            pipe.hgetall(f"{self._prefix}board")
            pipe.hgetall(f"{self._prefix}counters")
            return pipe.execute()

        marker, older = self._call("counters", None, read, safe=True)
        out = {text(k): int(v) for k, v in older.items()}
        for key, value in marker.items():
            name = text(key)
            if name.startswith("count:") and int(value):
                out[name[6:]] = out.get(name[6:], 0) + int(value)
        return out
