"""Errors raised by job boards.

One root, a shallow tree::

    BoardError
    ├── BoardUnavailable        the backend cannot be reached (after retries)
    │   └── BoardRegressed      the server lost data the board had: it refuses to work
    ├── InvalidJob              bad input to ``post`` or a malformed stored record
    │   └── CorruptJob          a stored job record that cannot be read
    ├── JobNotFound             no job with that id (or it was purged)
    ├── ClaimError              a claim-related request was refused
    │   ├── UnclaimableJob      the job is claimed by someone else or finished
    │   ├── NotOwner            the caller does not own the job's claim
    │   └── StaleToken          the fencing token is older than the job's current one
    ├── InvalidState            the job is in the wrong state for the operation
    ├── WaitTimeout             ``wait_for`` gave up before the job finished
    ├── VersionConflict         a compare-and-set write named a version that is not current
    └── BadURL                  a board URL that cannot be opened

Backends translate their client library's exceptions at the boundary with
``raise ... from err`` so callers only ever handle these.
"""

from __future__ import annotations

from typing import Any

#: Most characters of a caller's input an error message (or a repr) echoes.
ECHO_LIMIT = 80


def capped(text: str, limit: int = ECHO_LIMIT) -> str:
    """``text`` cut to ``limit`` characters, saying how long it was: a 1 MB name
    gives a short message, not a 1 MB one."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…({len(text)} chars)"


def shown(value: object, limit: int = ECHO_LIMIT) -> str:
    """How an error message echoes a caller's input: its ``repr`` (control
    characters escaped), capped by :func:`capped`."""
    return capped(repr(value), limit)


class BoardError(Exception):
    """Raised when a job board operation fails; the root of every board error."""


class BoardUnavailable(BoardError):
    """Raised when the backend cannot be reached, after the retry deadline."""


class BoardRegressed(BoardUnavailable):
    """Raised when the board's data set went backwards (a server restart or failover
    that lost recent writes, eviction, a flush): fencing tokens and finished jobs may
    have been lost, so the board refuses to work until an operator resets it."""


class InvalidJob(BoardError, ValueError):
    """Raised when a job's fields are invalid; the message names the field and the job."""

    def __init__(self, message: str, *, field: str | None = None, job: str | None = None):
        super().__init__(message)
        self.field = field
        self.job = job


class CorruptJob(InvalidJob):
    """Raised when reading a stored job record that cannot be decoded (a store that
    is not JSON, an unknown state, a priority out of range); the message names the
    field and the job. Listings show such a job marked unreadable instead, and the
    first claim that meets it trashes it with this reason."""


class JobNotFound(BoardError, LookupError):
    """Raised when no job with the given id exists on the board."""


class ClaimError(BoardError):
    """Raised when a claim-related request is refused; nothing was changed."""


class UnclaimableJob(ClaimError):
    """Raised when claiming a job that is already claimed or already finished."""


class NotOwner(ClaimError):
    """Raised when consuming, abandoning, trashing or saving progress of a job one does not own."""


class StaleToken(NotOwner):
    """Raised when a fenced write carries a token older than the job's current claim."""


class InvalidState(BoardError):
    """Raised when a job is in the wrong state for the requested operation."""


class WaitTimeout(BoardError, TimeoutError):
    """Raised when ``wait_for`` times out; ``job`` is the job as last read (unfinished)."""

    def __init__(self, message: str, *, job: Any = None):
        super().__init__(message)
        self.job = job


class VersionConflict(BoardError):
    """Raised when a compare-and-set write names a version that is no longer current;
    nothing was changed."""


class BadURL(BoardError, ValueError):
    """Raised when a board URL names an unknown scheme or has invalid options."""
