"""Fenced writes of a ZooKeeper board: progress, finishing and abandoning a job.

A layer of :class:`jobboard.zookeeper.ZookeeperBoard` (which sets up the state
declared here). Every fenced write is one multi-op transaction that checks the
versions our claim left on ``state/<id>`` (nobody claimed since) and
``claims/<id>`` (our session still holds it) together with the write. Our own
claims are checked locally first; a refused transaction is explained by
reading the job, exactly as :class:`~jobboard.memory.MemoryBoard` would raise.
After a connection loss a retried write recognises its own earlier success.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from jobboard import errors
from jobboard.changes import Ending, Release
from jobboard.model import Job, JobState
from jobboard.zookeeper.nodes import (
    FINISH_EVENTS,
    RAW,
    VIEW_KINDS,
    Fence,
    Snapshot,
    active_job,
    dump,
    expiry,
    finish_record,
    is_live,
    load,
    read_state,
)
from jobboard.zookeeper.progress import ZkProgress
from jobboard.zookeeper.session import Refused, log


class ZkWrites(ZkProgress):
    """Fences, and the writes they guard."""

    _fences: dict[str, Fence]

    # -- fences -----------------------------------------------------------------

    def _fence_of(self, snap: Snapshot) -> Fence:
        """The versions a write must check, from a snapshot of an active job."""
        assert snap.static is not None
        state = snap.state or {}
        return Fence(
            snap.claim.get("owner") if snap.claim else None,
            state.get("token", 0),
            snap.state_version,
            snap.claim_stat.version if snap.claim_stat else None,
            snap.static,
            state,
            snap.claim.get("lease") if snap.claim else None,
            expiry(snap.claim, snap.claim_stat),
        )

    def _fence(
        self, job_id: str, who: str, token: int | None, force: bool
    ) -> tuple[Fence, Snapshot | None]:
        """Check ``who``/``token`` own the job (or ``force``) and return what to fence on.

        Our own claims are checked locally (the transaction re-checks them on
        the server) while their lease surely runs, by our clock and by the
        server's; anything else is read and checked like MemoryBoard does, a
        lease counting as lapsed as soon as the server's time may have passed
        its end (no transaction can read the server's clock).
        """
        fence = None if force else self._own_fence(job_id, who, token)
        if fence is not None:
            return fence, None
        snap = self._snapshot(job_id)
        self._check(snap, who, token, force)
        return self._fence_of(snap), snap

    def _own_fence(self, job_id: str, who: str, token: int | None) -> Fence | None:
        """The fence of our own claim on the job when ``token`` is its token and its
        lease surely runs (no read needed); None when it must be read."""
        fence = self._fences.get(job_id)
        held = self._held.get(job_id)
        if fence is not None and held is not None and fence.token == token:
            if fence.owner != who:
                raise errors.NotOwner(f"job {job_id!r} is owned by {fence.owner!r}, not {who!r}")
            if self._local_clock() < held.deadline and self._lease_runs(fence):
                return fence
        return None

    def _lease_runs(self, fence: Fence) -> bool:
        """Whether our claim's lease (if any) surely still runs by the server's time."""
        if fence.lease is None:
            return True
        return fence.lease_end is not None and self._time.latest() < fence.lease_end

    def _check(self, snap: Snapshot, who: str, token: int | None, force: bool) -> None:
        """Raise as MemoryBoard would when ``who``/``token`` may not write to the job
        (a lease counts as lapsed once the server's time may have passed its end)."""
        job = self._job(snap, self._time.latest())
        self._check_fence(snap.job_id, job.state, job.token, job.owner, who, token, force)

    def _checks(self, job_id: str, fence: Fence) -> list[tuple[Any, ...]]:
        """The checks that make a write fenced: the job exists (it may have been
        deleted out of band), nobody claimed since, our claim still stands."""
        return [
            ("check", self._path("jobs", job_id), -1),
            ("check", self._path("state", job_id), fence.state_version),
            ("check", self._path("claims", job_id), fence.claim_version),
        ]

    def _stale(self, job_id: str, who: str, token: int | None) -> None:
        """A fenced transaction failed its checks: raise why, or refresh the fence
        (the job is still ours, e.g. a concurrent renew moved the claim's version)."""
        with self._lock:
            self._fences.pop(job_id, None)
        snap = self._snapshot(job_id)
        if snap.static is None and snap.done is None:
            self._drop_vanished(job_id)
        self._check(snap, who, token, False)
        if job_id in self._held:
            with self._lock:
                self._fences[job_id] = self._fence_of(snap)

    def _drop_vanished(self, job_id: str) -> None:
        """A job's node was deleted out of band: delete what is left of it (claim,
        state, progress, cancel flag) and forget our claim. Best effort: one
        transaction, refused (and left alone) if the job turns out finished."""
        claim, state, atoms, cancel = self._gather(
            [
                ("exists", self._path("claims", job_id)),
                ("exists", self._path("state", job_id)),
                ("get_children", self._path("progress", job_id)),
                ("exists", self._path("cancel", job_id)),
            ]
        )
        done = self._path("done", job_id)
        ops: list[tuple[Any, ...]] = [("create", done, b"", False), ("delete", done, -1)]
        for folder, found in (("claims", claim), ("state", state), ("cancel", cancel)):
            if found is not None:
                ops.append(("delete", self._path(folder, job_id), -1))
        ops += [("delete", self._path("progress", job_id, a), -1) for a in atoms or []]
        if atoms is not None:
            ops.append(("delete", self._path("progress", job_id), -1))
        try:
            self._transact(ops)
        except Refused as refused:
            log.info("%s: leftovers of deleted job %s kept: %s", self, job_id, refused)
        with self._lock:
            self._forget_caches(job_id)
        for kind in VIEW_KINDS:
            self._local(kind, job_id, False)
        self._forget_claim(job_id)

    def _drop_own_claim(self, job_id: str, ops: list[tuple[Any, ...]]) -> list[Any]:
        """Commit a transaction that deletes our claim node: the deletion's watch event
        (sent before the answer) is then ours, not a loss, and costs no read; the
        mark stays until the claim is forgotten, as the event may be handled after
        the answer. If the transaction is refused, the claim is read again (with a
        watch): someone else's deletion may have been taken for ours."""
        self._dropping.add(job_id)
        try:
            return self._transact(ops)
        except BaseException as err:
            self._dropping.discard(job_id)
            if isinstance(err, Refused):
                self._verify_claim(job_id)
            raise

    # -- progress ---------------------------------------------------------------

    def _store_progress(
        self, job_id: str, who: str, token: int, atom_name: str, encoded: str
    ) -> None:
        data = encoded.encode()
        node = "a" + quote(atom_name, safe="")
        folder = self._path("progress", job_id)
        path = f"{folder}/{node}"

        def attempt(_uncertain: bool) -> None:
            for _ in range(self.MAX_ROUNDS):
                fence, _snap = self._fence(job_id, who, token, False)
                with self._lock:
                    known = self._progress.get(job_id)
                    has_dir = self._progress_dir.get(job_id, True)
                ops = self._checks(job_id, fence)
                if not has_dir:
                    ops.append(("create", folder, b"", False))
                if known is not None and node in known:
                    ops.append(("set", path, data, -1))
                else:
                    ops.append(("create", path, data, False))
                try:
                    self._transact(ops)
                except Refused as refused:
                    op = ops[refused.index]
                    if op[0] == "check":
                        self._stale(job_id, who, token)  # raises unless still ours
                    else:
                        self._learn_progress(job_id, op, node, refused.error)
                    continue
                with self._lock:
                    self._progress_dir[job_id] = True
                    atoms = self._progress.get(job_id)
                    if atoms is not None:
                        atoms.add(node)
                return
            raise errors.BoardUnavailable(f"job {job_id!r}: progress kept racing other writers")

        self._retrying(f"save progress of {job_id}", attempt)

    # -- finishing and abandoning -------------------------------------------------

    def _commit_finish(
        self,
        job_id: str,
        fence: Fence,
        done: dict[str, Any],
        cancel: bool,
        poison: bool = False,
        progress: Mapping[str, str] | None = None,
    ) -> Job | None:
        """Move an active job to ``done/`` in one transaction (with the last progress
        records, if any); None if it was refused."""
        ops, done = self._finish_ops(job_id, fence, done, cancel, poison, progress)
        try:
            if fence.owner is not None and job_id in self._held:
                self._drop_own_claim(job_id, ops)
            else:
                self._transact(ops)
        except Refused as refused:
            self._finish_refused(job_id, ops[refused.index], refused)
            return None
        return self._finished(job_id, done)

    def _finish_ops(
        self,
        job_id: str,
        fence: Fence,
        done: dict[str, Any],
        cancel: bool,
        poison: bool = False,
        progress: Mapping[str, str] | None = None,
    ) -> tuple[list[tuple[Any, ...]], dict[str, Any]]:
        """The operations that move an active job to ``done/`` under ``fence`` (counted,
        with the last progress records), and the done record they write."""
        ops: list[tuple[Any, ...]] = self._progress_ops(job_id, progress) if progress else []
        claim_path = self._path("claims", job_id)
        if fence.claim_version is not None:
            ops.append(("delete", claim_path, fence.claim_version))
        else:  # nobody may hold a claim meanwhile: take and drop it in the same transaction
            ops += [("create", claim_path, b"", True), ("delete", claim_path, -1)]
        if fence.state_version is not None:
            ops.append(("delete", self._path("state", job_id), fence.state_version))
        ops.append(("delete", self._path("jobs", job_id), -1))
        if cancel:
            ops.append(("delete", self._path("cancel", job_id), -1))
        if fence.static.get(RAW) is not None:  # an unreadable job record: keep its bytes
            done = {**done, "corrupt_record": fence.static[RAW]}
        ops.append(("create", self._path("done", job_id), dump(done), False))
        ops += self._counted(FINISH_EVENTS[JobState(done["state"])])
        if poison:
            ops += self._counted("poison")
        return ops, done

    def _finish_refused(self, job_id: str, op: tuple[Any, ...], refused: Refused) -> None:
        """What a refused finishing transaction tells (``op`` failed) about the job."""
        if op[1] == self._path("cancel", job_id):
            self._local("cancel", job_id, False)
        elif op[1].startswith(self._path("progress", job_id)):
            self._learn_progress(job_id, op, op[1].rpartition("/")[2], refused.error)

    def _finished(self, job_id: str, done: dict[str, Any]) -> Job:
        """A finishing transaction went through: the job is gone from the view (our own
        write: no read) and our claim on it forgotten."""
        with self._lock:
            self._forget_caches(job_id)
        for kind in VIEW_KINDS:
            self._local(kind, job_id, False)
        self._forget_claim(job_id)
        return Job.from_dict(done)

    def _forget_claim(self, job_id: str) -> None:
        """Drop what we kept about our claim on a job that is no longer ours."""
        with self._lock:
            self._fences.pop(job_id, None)
            self._progress.pop(job_id, None)
            self._progress_dir.pop(job_id, None)
        self._untrack(job_id)
        self._dropping.discard(job_id)

    def _finish_with_progress(self, end: Ending, progress: Mapping[str, str]) -> Job:
        return self._finish(end, progress)

    def _finish(self, end: Ending, progress: Mapping[str, str] | None = None) -> Job:
        job_id, who, token, force = end.job_id, end.who, end.token, end.force

        def attempt(uncertain: bool) -> Job:
            for _ in range(self.MAX_ROUNDS):
                try:
                    fence, snap = self._fence(job_id, who, token, force)
                except errors.InvalidState:
                    adopted = (
                        self._finished_by_us(job_id, who, token, end.state) if uncertain else None
                    )
                    if adopted is None:
                        raise
                    return adopted
                with self._lock:
                    cancel = (
                        snap.cancel if snap is not None else job_id in self._view.members["cancel"]
                    )
                current = (
                    self._job(snap)
                    if snap is not None
                    else active_job(job_id, fence.static, fence.state, {"owner": who}, None, cancel)
                )
                done = finish_record(current, end)
                finished = self._commit_finish(job_id, fence, done, cancel, progress=progress)
                if finished is not None:
                    self._emit(end.published(fence.token, current.flow))
                    return finished
                if not force:
                    self._stale(job_id, who, token)
            raise errors.BoardUnavailable(f"job {job_id!r}: finishing kept racing other writers")

        return self._retrying(f"{end.event} {job_id}", attempt)

    def _finished_by_us(
        self, job_id: str, who: str, token: int | None, state: JobState
    ) -> Job | None:
        found = self._gather([("get", self._path("done", job_id))])[0]
        try:
            done = load(found[0], job_id) if found else None
        except errors.InvalidJob:
            return None
        if (
            done
            and done.get("finished_by") == who
            and done.get("token") == token
            and done.get("state") == state.value
        ):
            self._forget_claim(job_id)
            return Job.from_dict(done)
        return None

    def _release_claim(self, release: Release) -> Job:
        job_id, who, token, force = release.job_id, release.who, release.token, release.force

        def attempt(uncertain: bool) -> Job:
            for _ in range(self.MAX_ROUNDS):
                try:
                    fence, snap = self._fence(job_id, who, token, force)
                except errors.NotOwner:
                    if uncertain and self._released_by_us(job_id, who, token):
                        return self.get(job_id)
                    raise
                if fence.claim_version is None or (
                    snap is not None
                    and not is_live(snap.claim, snap.claim_stat, self._time.latest())
                ):
                    raise errors.InvalidState(f"job {job_id!r} is not claimed; nothing to abandon")
                now = time.time()
                state = {
                    **fence.state,
                    "owner": None,
                    "updated_at": now,
                    "released_by": who,
                    "forced": force,
                }
                if release.reason is not None:
                    state["last_error"] = release.reason
                state["attempts"] = release.attempts(int(state.get("attempts", 0)))
                ops = self._checks(job_id, fence)[:1] + [
                    ("delete", self._path("claims", job_id), fence.claim_version),
                    ("set", self._path("state", job_id), dump(state), fence.state_version),
                ]
                state_op = len(ops) - 1
                try:
                    results = (
                        self._drop_own_claim(job_id, ops + self._counted("abandoned"))
                        if job_id in self._held
                        else self._transact(ops + self._counted("abandoned"))
                    )
                except Refused:
                    if not force:
                        self._stale(job_id, who, token)
                    continue
                with self._lock:
                    self._states[job_id] = (state, results[state_op].version)
                    self._claims.pop(job_id, None)
                    cancel = job_id in self._view.members["cancel"]
                self._local("claims", job_id, False)
                self._forget_claim(job_id)
                self._emit(release.published(fence.token, fence.static.get("flow")))
                return active_job(job_id, fence.static, state, None, None, cancel)
            raise errors.BoardUnavailable(f"job {job_id!r}: abandon kept racing other writers")

        return self._retrying(f"abandon {job_id}", attempt)

    def _released_by_us(self, job_id: str, who: str, token: int | None) -> bool:
        found = self._gather([("get", self._path("state", job_id))])[0]
        state = read_state(found[0], job_id) if found else None
        return bool(state and state.get("released_by") == who and state.get("token") == token)
