"""Execution records: where, when and how each task execution ran.

Every time the engine runs a task it fills a :class:`TaskInfo` (what was
submitted and how it ended) holding an :class:`ExecutionInfo` (where it ran
and the timestamps of each phase).  The records are kept per atom in the
engine's storage (``engine.storage.get_execution(name)``) and saved with the
job's progress, so an operator can see on which host and for how long each
task ran.  All times are Unix timestamps (``time.time()``) of the process that
ran the task::

    execution_start_time
      input_transform_start_time   resolve arguments, run pre-converters
      input_transform_end_time
      task_start_time              the task's own execute()
      task_end_time
      result_transform_start_time  post-converters, named outputs, JSON check
      result_transform_end_time
    execution_end_time
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

#: Looked up once: the host name does not change while a process runs.
HOSTNAME = socket.gethostname()


@dataclass(slots=True)
class ExceptionInfo:
    """What a failed execution raised: type name, message and traceback text."""

    type: str
    message: str
    traceback: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return {"type": self.type, "message": self.message, "traceback": self.traceback}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExceptionInfo:
        """Rebuild from :meth:`to_dict` output."""
        return cls(data["type"], data["message"], data.get("traceback", ""))


@dataclass(slots=True)
class ExecutionInfo:
    """Where a task ran and the start/end timestamps of each phase of its execution."""

    hostname: str
    execution_start_time: float
    execution_end_time: float = 0.0
    input_transform_start_time: float = 0.0
    input_transform_end_time: float = 0.0
    task_start_time: float = 0.0
    task_end_time: float = 0.0
    result_transform_start_time: float = 0.0
    result_transform_end_time: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return {
            "hostname": self.hostname,
            "execution_start_time": self.execution_start_time,
            "execution_end_time": self.execution_end_time,
            "input_transform_start_time": self.input_transform_start_time,
            "input_transform_end_time": self.input_transform_end_time,
            "task_start_time": self.task_start_time,
            "task_end_time": self.task_end_time,
            "result_transform_start_time": self.result_transform_start_time,
            "result_transform_end_time": self.result_transform_end_time,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExecutionInfo:
        """Rebuild from :meth:`to_dict` output."""
        return cls(**data)


@dataclass(slots=True)
class TaskInfo:
    """One execution of an atom as the engine saw it.

    ``task_id`` is the atom's uuid, ``parent_task_ids`` the uuids of the atoms
    whose results were passed in as arguments, ``submit_time`` when the engine
    handed the atom to its executor and ``received_time`` when the engine
    learnt it had finished. ``attempt`` counts executions under a retry policy.
    """

    task_id: str
    name: str
    parent_task_ids: list[str]
    submit_time: float
    received_time: float | None = None
    success: bool | None = None
    exception: ExceptionInfo | None = None
    execution: ExecutionInfo | None = None
    attempt: int = 1

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (nested records as dicts)."""
        return {
            "task_id": self.task_id,
            "name": self.name,
            "parent_task_ids": list(self.parent_task_ids),
            "submit_time": self.submit_time,
            "received_time": self.received_time,
            "success": self.success,
            "exception": self.exception.to_dict() if self.exception is not None else None,
            "execution": self.execution.to_dict() if self.execution is not None else None,
            "attempt": self.attempt,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskInfo:
        """Rebuild from :meth:`to_dict` output."""
        exception = data.get("exception")
        execution = data.get("execution")
        return cls(
            task_id=data["task_id"],
            name=data["name"],
            parent_task_ids=list(data.get("parent_task_ids", ())),
            submit_time=data["submit_time"],
            received_time=data.get("received_time"),
            success=data.get("success"),
            exception=ExceptionInfo.from_dict(exception) if exception else None,
            execution=ExecutionInfo.from_dict(execution) if execution else None,
            attempt=data.get("attempt", 1),
        )


R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class TaskResult(Generic[R]):
    """A task's value together with the record of where and when it really ran.

    A task may return one instead of a bare value, for instance when its work
    ran on another machine that measured it: the engine stores ``value`` as
    the task's result and ``info`` as the execution record (phase times the
    task left at ``0.0`` are filled from the engine's own measurements).
    ``engine.storage.get_task_result(name)`` gives the same pair back.
    """

    value: R
    info: ExecutionInfo


def merge_execution(own: ExecutionInfo, reported: ExecutionInfo) -> ExecutionInfo:
    """``reported`` with every phase time it left at ``0.0`` taken from ``own``."""
    merged = ExecutionInfo(**reported.to_dict())
    for name, value in own.to_dict().items():
        if name != "hostname" and not getattr(merged, name):
            setattr(merged, name, value)
    if not merged.hostname:
        merged.hostname = own.hostname
    return merged
