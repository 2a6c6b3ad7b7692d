"""The names of the events a conductor emits on its ``notifier``."""

from __future__ import annotations

__all__ = ["LOGGED_EVENTS", "ConductorEvents"]


class ConductorEvents:
    """Names of the events a conductor's ``notifier`` emits (details: job, conductor...)."""

    CLAIMED = "job_claimed"
    RESUMED = "job_resumed"
    CONSUMED = "job_consumed"
    FAILED = "job_failed"
    CANCELLED = "job_cancelled"
    ABANDONED = "job_abandoned"
    TRASHED = "job_trashed"
    CLAIM_LOST = "claim_lost"
    ENDED_BY_OPERATOR = "job_ended_by_operator"
    TASK_DONE = "task_done"
    BOARD_ERROR = "board_error"
    RENEWED = "leases_renewed"

    ALL = (
        CLAIMED,
        RESUMED,
        CONSUMED,
        FAILED,
        CANCELLED,
        ABANDONED,
        TRASHED,
        CLAIM_LOST,
        ENDED_BY_OPERATOR,
        TASK_DONE,
        BOARD_ERROR,
        RENEWED,
    )


#: Events logged at INFO with the job's id, flow and conductor as fields.
LOGGED_EVENTS = frozenset(
    {
        ConductorEvents.CLAIMED,
        ConductorEvents.RESUMED,
        ConductorEvents.CONSUMED,
        ConductorEvents.FAILED,
        ConductorEvents.CANCELLED,
        ConductorEvents.ABANDONED,
        ConductorEvents.TRASHED,
        ConductorEvents.CLAIM_LOST,
    }
)
