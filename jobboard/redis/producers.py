"""What the Redis board adds for producers: children and the schedules' record store.

The rest lives in the scripts (layout in ``lua/_lib.lua``): ``post.lua``
honours a dedupe key (``key:<key>``, expiring with its finished job, deleted
by purge) and puts a job posted for later in the ``scheduled`` sorted set
(scored by due time); ``claim_next.lua`` promotes due jobs in bounded batches
before it claims, and every script that reads a job promotes it when due.
``wait_for`` follows the board's published events (the contract's default),
so it is woken by the pub/sub message of the job's ending.
"""

from __future__ import annotations

from typing import Any

from jobboard.model import Job, JobState
from jobboard.redis.claims import RedisClaims
from jobboard.redis.decoding import decode_job, server_time, text
from jobboard.redis.session import log

__all__ = ["RedisProducers"]


class RedisProducers(RedisClaims):
    """Children (one sorted set per parent) and the compare-and-set record store."""

    def _children(
        self, parent_id: str, wanted: frozenset[JobState], flow: str | None
    ) -> list[Job]:
        kids = f"{self._prefix}children:{parent_id}"

        def read() -> list[Job]:
            pipe = self._pipeline()
            pipe.time()
            pipe.zrange(kids, 0, -1)
            now_reply, members = pipe.execute()
            ids = [text(m) for m in members]
            pipe = self._pipeline()
            for job_id in ids:
                pipe.hgetall(self._job_key(job_id))
            now = server_time(now_reply)
            jobs = []
            for job_id, raw in zip(ids, pipe.execute(), strict=True):
                if raw:  # a child past its retention is gone
                    jobs.append(decode_job(job_id, raw, now))
            return jobs

        found = self._call("children", parent_id, read, safe=True)
        jobs = [j for j in found if j.state in wanted and (flow is None or j.flow == flow)]
        return sorted(jobs, key=lambda j: (j.priority.rank, j.seq))

    # -- the record store ---------------------------------------------------------

    def _put_schedule(self, name: str, encoded: str, expect_version: int | None) -> int:
        expected = "" if expect_version is None else str(expect_version)
        written, version = self._call(
            "put_schedule",
            None,
            lambda: self._script(
                "put_schedule", f"{self._prefix}schedules", name, encoded, expected
            ),
            safe=False,  # a resent write would meet its own new version
        )
        if not written:
            raise self._conflict(name, expect_version, None if version < 0 else int(version))
        return int(version)

    def _get_schedules(self) -> dict[str, tuple[str, int]]:
        def read() -> list[Any]:
            pipe = self._pipeline()
            pipe.hgetall(f"{self._prefix}schedules")
            pipe.hgetall(f"{self._prefix}schedule_versions")
            return pipe.execute()

        records, versions = self._call("get_schedules", None, read, safe=True)
        known = {text(k): text(v) for k, v in versions.items()}
        out = {}
        for raw_name, record in records.items():
            name = text(raw_name)
            try:
                out[name] = (text(record), int(known[name]))
            except (KeyError, ValueError):
                log.warning("redis board %r: schedule %r has no version", self.namespace, name)
        return out

    def _remove_schedule(self, name: str, expect_version: int | None) -> bool:
        expected = "" if expect_version is None else str(expect_version)
        done, value = self._call(
            "remove_schedule",
            None,
            lambda: self._script("remove_schedule", f"{self._prefix}schedules", name, expected),
            safe=expect_version is None,  # an unconditional delete may be resent
        )
        if not done:
            raise self._conflict(name, expect_version, None if value < 0 else int(value))
        return bool(value)
