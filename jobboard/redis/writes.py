"""Fenced writes of the Redis board: progress, finishing, abandoning, cancelling.

Each is one Lua script that checks owner, token and lease inside the server,
atomically with the write, and publishes its event. None is retried blindly:
a connection error says the outcome is unknown.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jobboard import errors
from jobboard.changes import Ending, Release
from jobboard.model import Job, JobRef, JobState
from jobboard.redis.decoding import pairs, readable_job
from jobboard.redis.reads import RedisReads

__all__ = ["RedisWrites"]

#: The operation named in errors about finishing writes, by the event they publish.
_OP_OF_EVENT = {"consumed": "consume", "failed": "fail", "cancelled": "fail", "trashed": "trash"}


class RedisWrites(RedisReads):
    """The writes a claim fences, and cancel."""

    def _store_progress(
        self, job_id: str, who: str, token: int, atom_name: str, encoded: str
    ) -> None:
        # The board's own client sends this script without a marker check (see
        # _UNREAD_OK in session.py) unless it knows the board halted (it may have
        # been reset since); a halt learnt while connecting for it is told here.
        halted = self._halted is not None
        try:
            self._call(
                "save_progress",
                job_id,
                lambda: self._script(
                    "save_progress",
                    self._job_key(job_id),
                    job_id,
                    who,
                    token,
                    0,
                    atom_name,
                    encoded,
                    read_marker=halted,
                ),
                safe=False,
            )
        except errors.BoardError:
            if not halted and self._halted is not None:
                self._halt(self._halted)
            raise

    def _finish(self, end: Ending, progress: Mapping[str, str] | None = None) -> Job:
        job_id = end.job_id
        raw = self._call(
            _OP_OF_EVENT[end.event],
            job_id,
            lambda: self._script("finish", self._job_key(job_id), *self._finish_args(end, progress)),
            safe=False,
        )
        self._ended_own(end)
        return readable_job(job_id, pairs(raw))

    def _ended_own(self, end: Ending) -> None:
        """Our finishing write went through: forget the claim. An owner's own
        finish publishes no event to its channel (``emit`` in ``lua/_lib.lua``), so
        what the event would have told the idle knowledge is told here."""
        self._untrack(end.job_id)
        if not end.force:
            self._idle.ended(end.job_id)

    def _finish_args(self, end: Ending, progress: Mapping[str, str] | None) -> list[Any]:
        """The finish script's arguments but the prefix (see ``finish.lua``)."""
        records = [item for pair in (progress or {}).items() for item in pair]
        return [
            end.job_id,
            end.who,
            "" if end.token is None else end.token,
            int(end.force),
            end.state.value,
            end.event,
            repr(self.retention),
            int(end.result_json is not None),
            end.result_json or "",
            # A complete job keeps no earlier error: an empty one clears it.
            int(end.error is not None or end.state is JobState.COMPLETE),
            end.last_error("") or "",
            *records,
        ]

    def _finish_with_progress(self, end: Ending, progress: Mapping[str, str]) -> Job:
        """The last progress records go in the finishing script itself: one call,
        one fence check, instead of a save_progress per record and a finish."""
        return self._finish(end, progress)

    def _release_claim(self, release: Release) -> Job:
        job_id = release.job_id
        raw = self._call(
            "abandon",
            job_id,
            lambda: self._script(
                "abandon",
                self._job_key(job_id),
                job_id,
                release.who,
                "" if release.token is None else release.token,
                int(release.force),
                int(release.reason is not None),
                release.reason or "",
                int(release.refund),
            ),
            safe=False,
        )
        self._untrack(job_id)
        return readable_job(job_id, pairs(raw))

    def cancel(self, job: JobRef) -> Job:
        job_id = self._job_id(job)
        raw = self._call(
            "cancel",
            job_id,
            lambda: self._script("cancel", self._job_key(job_id), job_id, repr(self.retention)),
            safe=False,
        )
        return readable_job(job_id, pairs(raw))
