"""Checks at the door: every argument a board receives, validated once for all backends.

Errors name the field and the job (``InvalidJob``), or say why a fenced write
is refused (``NotOwner``, ``StaleToken``, ``InvalidState``). Payloads must be
JSON and stay under the board's ``max_payload``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Mapping
from dataclasses import replace
from typing import Any

from jobboard import errors
from jobboard.changes import NewJob
from jobboard.errors import shown
from jobboard.model import ACTIVE_STATES, JobPriority, JobRef, JobState, job_id_of
from jobboard.urls import MAX_LEASE

__all__ = ["BoardChecks"]

_FLOW_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:\-]{0,127}$")
#: What a flow name must match.
FLOW_RE = _FLOW_RE
_ATOM_RE = re.compile(r"^[^\x00-\x1f]{1,200}$")


#: One encoder for every payload (``json.dumps`` with options builds a new one per call).
#: Its output is ASCII (``ensure_ascii``), so its length is its size in bytes.
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def _json_dumps(value: Any) -> str:
    return _ENCODER.encode(value)



class BoardChecks:
    """The argument checks and the fencing rule, shared by every board."""

    lease: float
    max_payload: int
    max_attempts: int

    _job_id = staticmethod(job_id_of)

    def _lease_for(self, lease: float | None) -> float:
        value = self.lease if lease is None else float(lease)
        if not 0 < value <= MAX_LEASE:
            raise errors.InvalidJob(
                f"field 'lease' must be a number of seconds above 0 and at most {MAX_LEASE:g}, "
                f"got {shown(lease)}",
                field="lease",
            )
        return value

    def _claim_args(self, job_id: str, who: str, lease: float | None) -> float:
        """Check a claim's ``who`` and ``lease`` (``job_id`` is "?" for ``claim_next``);
        return the lease length in seconds."""
        self._check_owner_args(job_id, who, 0, False)
        return self._lease_for(lease)

    def _check_owner_args(self, job_id: str, who: str, token: int | None, force: bool) -> None:
        if not isinstance(who, str) or not who:
            raise errors.InvalidJob(
                f"job {shown(job_id)}: field 'who' must be a non-empty string", field="who", job=job_id
            )
        if not force and (token is None or isinstance(token, bool) or not isinstance(token, int)):
            raise errors.NotOwner(
                f"job {shown(job_id)}: a fenced operation needs the claim's integer token (got {shown(token)})"
            )

    @staticmethod
    def _check_fence(
        job_id: str,
        state: JobState,
        current: int,
        owner: str | None,
        who: str,
        token: int | None,
        force: bool,
    ) -> None:
        """Raise the contract's error when ``who``/``token`` may not write to a job.

        ``state``, ``current`` (token) and ``owner`` are the job's as stored,
        with an expired lease already reported as waiting. Backends call this
        inside their atomic check-and-write.
        """
        if state.finished:
            if not force and token is not None and token < current:
                raise errors.StaleToken(
                    f"job {shown(job_id)}: token {token} is stale; the job is {state.value}"
                )
            raise errors.InvalidState(f"job {shown(job_id)} is already {state.value}")
        if force:
            return
        assert token is not None
        if state is not JobState.CLAIMED:
            if token < current:
                raise errors.StaleToken(
                    f"job {shown(job_id)}: token {token} is stale (current {current}); not claimed now"
                )
            raise errors.NotOwner(f"job {shown(job_id)} is not claimed (its claim has ended)")
        if token != current:
            cls = errors.StaleToken if token < current else errors.NotOwner
            raise cls(f"job {shown(job_id)}: token {token} does not match the current claim ({current})")
        if owner != who:
            raise errors.NotOwner(f"job {shown(job_id)} is owned by {shown(owner)}, not {shown(who)}")

    def _encode(self, value: Any, field_name: str, job: str | None) -> str:
        """JSON-encode a payload, enforcing JSON-only content and the size limit."""
        try:
            text = _json_dumps(value)
        except (TypeError, ValueError) as err:
            raise errors.InvalidJob(
                f"job {shown(job)}: field {shown(field_name)} is not JSON-serialisable: {err}",
                field=field_name,
                job=job,
            ) from err
        if len(text) > self.max_payload:
            raise errors.InvalidJob(
                f"job {shown(job)}: field {shown(field_name)} is {len(text)} bytes encoded, "
                f"over the limit of {self.max_payload}",
                field=field_name,
                job=job,
            )
        return text

    def _validate_post(
        self,
        name: str,
        flow: str,
        store: Mapping[str, Any] | None,
        priority: JobPriority | str,
        max_attempts: int | None,
        details: Mapping[str, Any] | None,
    ) -> NewJob:
        """Check ``post``'s arguments; returns the job to post with its payloads encoded."""
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise errors.InvalidJob(
                f"field 'name' must be a non-empty string of at most 200 characters, got {shown(name)}",
                field="name",
                job=name if isinstance(name, str) else None,
            )
        if not isinstance(flow, str) or not _FLOW_RE.match(flow):
            raise errors.InvalidJob(
                f"job {shown(name)}: field 'flow' must match {_FLOW_RE.pattern}, got {shown(flow)}",
                field="flow",
                job=name,
            )
        prio = JobPriority.convert(priority, job=name)
        attempts = self.max_attempts if max_attempts is None else max_attempts
        if isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts <= 1000:
            raise errors.InvalidJob(
                f"job {shown(name)}: field 'max_attempts' must be an integer from 1 to 1000, "
                f"got {shown(max_attempts)}",
                field="max_attempts",
                job=name,
            )
        for field_name, value in (("store", store), ("details", details)):
            if value is not None and not isinstance(value, Mapping):
                raise errors.InvalidJob(
                    f"job {shown(name)}: field {shown(field_name)} must be a JSON object, "
                    f"got {type(value).__name__}",
                    field=field_name,
                    job=name,
                )
            for key in value or ():
                if not isinstance(key, str):
                    raise errors.InvalidJob(
                        f"job {shown(name)}: field {shown(field_name)} has a non-string key {shown(key)}",
                        field=field_name,
                        job=name,
                    )
        store_json = self._encode(dict(store or {}), "store", name)
        details_json = self._encode(dict(details or {}), "details", name)
        return NewJob(name, flow, prio, attempts, store_json, details_json)

    def _validate_producing(
        self,
        new: NewJob,
        key: str | None,
        delay: float | None,
        not_before: float | None,
        parent: JobRef | None,
    ) -> NewJob:
        """Check ``post``'s producer options (dedupe key, due time, parent); add them to ``new``."""
        name = new.name
        if key is not None:
            self._check_text(key, "key", name)
        if delay is not None and not_before is not None:
            raise errors.InvalidJob(
                f"job {name!r}: give field 'delay' or field 'not_before', not both",
                field="delay",
                job=name,
            )
        for field_name, value in (("delay", delay), ("not_before", not_before)):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise errors.InvalidJob(
                    f"job {name!r}: field {field_name!r} must be a number of seconds, "
                    f"got {value!r}",
                    field=field_name,
                    job=name,
                )
            if not math.isfinite(value) or value < 0:
                raise errors.InvalidJob(
                    f"job {name!r}: field {field_name!r} must be a finite number >= 0, "
                    f"got {value!r}",
                    field=field_name,
                    job=name,
                )
        parent_id = None
        if parent is not None:
            try:
                parent_id = job_id_of(parent)
            except errors.InvalidJob:
                parent_id = None
            if parent_id is None or not _ATOM_RE.match(parent_id):
                raise errors.InvalidJob(
                    f"job {name!r}: field 'parent' must be a job or a job id, got {parent!r}",
                    field="parent",
                    job=name,
                )
        return replace(
            new,
            key=key,
            delay=None if delay is None else float(delay),
            not_before=None if not_before is None else float(not_before),
            parent=parent_id,
        )

    @staticmethod
    def _check_text(value: Any, field_name: str, job: str | None) -> str:
        """A short printable string (1-200 characters, no control characters)."""
        if not isinstance(value, str) or not _ATOM_RE.match(value):
            raise errors.InvalidJob(
                f"job {job!r}: field {field_name!r} must be a string of 1-200 characters "
                f"without control characters, got {value!r}",
                field=field_name,
                job=job,
            )
        return value

    @staticmethod
    def _wait_limit(timeout: float | None, job_id: str) -> float | None:
        """A ``wait_for`` timeout checked: None, or a finite number of seconds (>= 0)."""
        if timeout is None:
            return None
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise errors.InvalidJob(
                f"job {job_id!r}: field 'timeout' must be a number of seconds, got {timeout!r}",
                field="timeout",
                job=job_id,
            )
        if math.isnan(timeout):
            raise errors.InvalidJob(
                f"job {job_id!r}: field 'timeout' must not be nan", field="timeout", job=job_id
            )
        return max(0.0, float(timeout))

    @staticmethod
    def _check_version(expect_version: int | None, name: str) -> None:
        if expect_version is not None and (
            isinstance(expect_version, bool)
            or not isinstance(expect_version, int)
            or expect_version < 1
        ):
            raise errors.InvalidJob(
                f"schedule {name!r}: field 'expect_version' must be None or an integer >= 1, "
                f"got {expect_version!r}",
                field="expect_version",
                job=name,
            )

    def _validate_atom(self, job_id: str, atom_name: str, record: Mapping[str, Any]) -> str:
        if not isinstance(atom_name, str) or not _ATOM_RE.match(atom_name):
            raise errors.InvalidJob(
                f"job {shown(job_id)}: field 'atom_name' must be a printable string of 1-200 "
                f"characters, got {shown(atom_name)}",
                field="atom_name",
                job=job_id,
            )
        if not isinstance(record, Mapping):
            raise errors.InvalidJob(
                f"job {shown(job_id)}: field 'record' must be a JSON object", field="record", job=job_id
            )
        return self._encode(record if type(record) is dict else dict(record), "record", job_id)

    def _validate_error(self, job_id: str, error: Any, field_name: str = "error") -> str:
        if not isinstance(error, str):
            raise errors.InvalidJob(
                f"job {shown(job_id)}: field {shown(field_name)} must be a string",
                field=field_name,
                job=job_id,
            )
        limit = max(1024, self.max_payload // 4)
        return error if len(error) <= limit else error[: limit - 3] + "..."

    @staticmethod
    def _normalise_states(
        states: Collection[JobState | str] | None, only_unclaimed: bool
    ) -> frozenset[JobState]:
        if only_unclaimed:
            return frozenset({JobState.WAITING})
        if states is None:
            return ACTIVE_STATES
        out = set()
        for state in states:
            try:
                out.add(JobState(state))
            except ValueError as err:
                raise errors.InvalidJob(
                    f"field 'states' has an unknown state {shown(state)}", field="states"
                ) from err
        return frozenset(out)

    @staticmethod
    def _poison_reason(attempts: int, max_attempts: int) -> str:
        return (
            f"poison job: claimed {attempts} times without finishing (max_attempts={max_attempts})"
        )

