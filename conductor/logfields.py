"""The job fields of log records: ``job_id``, ``flow`` and ``conductor``.

A conductor runs each job on one worker thread; while it does, every record
logged on that thread (and on the engine's task threads, which copy the
context) carries the job's fields through :class:`JobFieldsFilter`. Code that
logs about a job from another thread (the heartbeat, board events) uses
:func:`job_logger`, whose records carry the same fields.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

__all__ = ["FIELDS", "JobFieldsFilter", "bound_job", "job_fields", "job_logger"]

#: The fields a record about a job carries.
FIELDS = ("job_id", "flow", "conductor")

_current: ContextVar[Mapping[str, str] | None] = ContextVar("conductor_log_fields", default=None)


def job_fields(job: Any, conductor: str) -> dict[str, str]:
    """The fields of records about ``job`` run by ``conductor``."""
    return {"job_id": job.id, "flow": job.flow, "conductor": conductor}


@contextmanager
def bound_job(fields: Mapping[str, str]) -> Iterator[None]:
    """Give every record logged in this context (thread, copied contexts) ``fields``."""
    token = _current.set(dict(fields))
    try:
        yield
    finally:
        _current.reset(token)


def job_logger(logger: logging.Logger, fields: Mapping[str, str]) -> logging.LoggerAdapter[Any]:
    """``logger`` whose records carry ``fields`` whatever thread logs them."""
    return logging.LoggerAdapter(logger, dict(fields))


class JobFieldsFilter(logging.Filter):
    """Adds the bound job's fields to records that do not have them already."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = _current.get()
        if fields:
            for key, value in fields.items():
                if getattr(record, key, None) is None:
                    setattr(record, key, value)
        return True
