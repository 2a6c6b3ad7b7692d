"""Flow and atom states, and the transitions allowed between them.

The engine moves every flow and atom through :func:`check_flow_transition` /
:func:`check_atom_transition`, so a transition missing from the tables below
cannot happen: it raises :class:`~conductor.exceptions.InvalidState` instead.

Flow (``RESUMING`` when a suspended engine runs again or saved progress was
loaded; ``FAILURE`` when reverting failed or progress could not be saved)::

    PENDING     -> RUNNING | RESUMING
    RESUMING    -> RUNNING
    RUNNING     -> SUCCESS | REVERTING | SUSPENDING | FAILURE
    SUSPENDING  -> SUSPENDED | SUCCESS | REVERTING | FAILURE
    SUSPENDED   -> RESUMING
    REVERTING   -> REVERTED | FAILURE

Atom (task or retry controller; ``RETRYING`` is a task waiting for its next
attempt under a retry policy, or a retry controller about to run its subflow
again; ``IGNORE`` an atom skipped by a graph-flow decider)::

    PENDING     -> RUNNING | IGNORE
    RUNNING     -> SUCCESS | FAILURE | RETRYING | PENDING
    RETRYING    -> RUNNING | REVERTING
    SUCCESS     -> REVERTING | RETRYING
    FAILURE     -> REVERTING
    REVERTING   -> REVERTED | REVERT_FAILURE
    REVERTED    -> PENDING          (its subflow is retried)
    IGNORE      -> PENDING          (its subflow is retried)

``RUNNING -> PENDING`` is a task that never ran or gave up: the engine was
stopping (claim lost, shutdown) when it was about to start, or it raised
:class:`~conductor.exceptions.TaskCancelled` on such a stop.  Nothing is saved
for it; it runs again when the flow resumes.
"""

from __future__ import annotations

from collections.abc import Mapping

# Flow states.
PENDING = "PENDING"
RUNNING = "RUNNING"
SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
REVERTING = "REVERTING"
REVERTED = "REVERTED"
SUSPENDING = "SUSPENDING"
SUSPENDED = "SUSPENDED"
RESUMING = "RESUMING"

# Atom-only states.
REVERT_FAILURE = "REVERT_FAILURE"
RETRYING = "RETRYING"
IGNORE = "IGNORE"

FLOW_STATES = frozenset(
    (PENDING, RUNNING, SUCCESS, FAILURE, REVERTING, REVERTED, SUSPENDING, SUSPENDED, RESUMING)
)
ATOM_STATES = frozenset(
    (PENDING, RUNNING, SUCCESS, FAILURE, REVERTING, REVERTED, REVERT_FAILURE, RETRYING, IGNORE)
)

#: Atom states after which the atom is saved to the progress backend.
SAVED_ATOM_STATES = frozenset((SUCCESS, FAILURE, REVERTED, REVERT_FAILURE, IGNORE))

#: Flow states in which ``run()`` has returned or raised for good.
FINISHED_FLOW_STATES = frozenset((SUCCESS, REVERTED, FAILURE))

_FLOW_NEXT: Mapping[str, frozenset[str]] = {
    PENDING: frozenset((RUNNING, RESUMING)),
    RESUMING: frozenset((RUNNING,)),
    RUNNING: frozenset((SUCCESS, REVERTING, SUSPENDING, FAILURE)),
    SUSPENDING: frozenset((SUSPENDED, SUCCESS, REVERTING, FAILURE)),
    SUSPENDED: frozenset((RESUMING,)),
    REVERTING: frozenset((REVERTED, FAILURE)),
    SUCCESS: frozenset(),
    REVERTED: frozenset(),
    FAILURE: frozenset(),
}

_ATOM_NEXT: Mapping[str, frozenset[str]] = {
    PENDING: frozenset((RUNNING, IGNORE)),
    RUNNING: frozenset((SUCCESS, FAILURE, RETRYING, PENDING)),
    RETRYING: frozenset((RUNNING, REVERTING)),
    SUCCESS: frozenset((REVERTING, RETRYING)),
    FAILURE: frozenset((REVERTING,)),
    REVERTING: frozenset((REVERTED, REVERT_FAILURE)),
    REVERTED: frozenset((PENDING,)),
    IGNORE: frozenset((PENDING,)),
    REVERT_FAILURE: frozenset(),
}


def _check(table: Mapping[str, frozenset[str]], kind: str, old: str, new: str) -> None:
    allowed = table.get(old)
    if allowed is None or new not in allowed:
        from conductor.exceptions import InvalidState

        raise InvalidState(f"{kind} cannot move from state {old!r} to {new!r}")


def check_flow_transition(old: str, new: str) -> None:
    """Raise :class:`~conductor.exceptions.InvalidState` unless a flow may go ``old`` → ``new``."""
    if new not in _FLOW_NEXT.get(old, ()):
        _check(_FLOW_NEXT, "a flow", old, new)


def check_atom_transition(old: str, new: str) -> None:
    """Raise :class:`~conductor.exceptions.InvalidState` unless an atom may go ``old`` → ``new``."""
    if new not in _ATOM_NEXT.get(old, ()):
        _check(_ATOM_NEXT, "an atom", old, new)


def flow_transitions() -> frozenset[tuple[str, str]]:
    """Every allowed flow transition as ``(old, new)`` pairs."""
    return frozenset((old, new) for old, news in _FLOW_NEXT.items() for new in news)


def atom_transitions() -> frozenset[tuple[str, str]]:
    """Every allowed atom transition as ``(old, new)`` pairs."""
    return frozenset((old, new) for old, news in _ATOM_NEXT.items() for new in news)
