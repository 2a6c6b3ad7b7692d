"""Cancelling a job on a ZooKeeper board.

A layer of :class:`jobboard.zookeeper.ZookeeperBoard`. A waiting (or
scheduled) job ends cancelled at once, fenced like any finish; a claimed job
gets a ``cancel/<id>`` node, created in one transaction with a check of its
claim node's version, so that the flag lands on the claim it was meant for.
"""

from __future__ import annotations

import time
from dataclasses import replace

from jobboard import errors
from jobboard.changes import Ending
from jobboard.model import BoardEvent, Job, JobRef, JobState
from jobboard.zookeeper.nodes import dump, finish_record
from jobboard.zookeeper.session import Refused
from jobboard.zookeeper.writes import ZkWrites

__all__ = ["ZkCancel"]


class ZkCancel(ZkWrites):
    """``cancel`` (see the module docstring)."""

    def cancel(self, job: JobRef) -> Job:
        job_id = self._require_id(job)

        def attempt(uncertain: bool) -> Job:
            for _ in range(self.MAX_ROUNDS):
                snap = self._snapshot(job_id)
                current = self._job(snap)
                if current.state.finished:
                    if uncertain and current.state is JobState.CANCELLED:
                        return current
                    raise errors.InvalidState(
                        f"job {job_id!r} is already {current.state.value}; nothing to cancel"
                    )
                if current.state is JobState.CLAIMED:
                    if snap.cancel:
                        return current
                    assert snap.claim_stat is not None
                    try:
                        self._transact(
                            [
                                ("check", self._path("claims", job_id), snap.claim_stat.version),
                                (
                                    "create",
                                    self._path("cancel", job_id),
                                    dump({"at": time.time()}),
                                    False,
                                ),
                            ]
                        )
                    except Refused:
                        continue
                    self._local("cancel", job_id, True)
                    if job_id in self._held:
                        self._mark_cancel(job_id)
                    self._emit(BoardEvent("cancel_requested", job_id, {"token": current.token}))
                    return replace(current, cancel_requested=True)
                fence = self._fence_of(snap)
                reason = "cancelled before it started"
                end = Ending(job_id, "cancel", None, JobState.CANCELLED, False, None, reason, "")
                done = finish_record(current, end)
                done_job = self._commit_finish(job_id, fence, done, snap.cancel)
                if done_job is not None:
                    self._emit(BoardEvent("cancelled", job_id, {"token": current.token}))
                    return done_job
            raise errors.BoardUnavailable(f"job {job_id!r}: cancel kept racing other writers")

        return self._retrying(f"cancel {job_id}", attempt)
