"""Conductor: run flows of tasks claimed from a job board, resuming where a lost owner stopped.

The public API, importable from the package root (each piece is described in
the module named beside it)::

    building flows      Task, FunctionTask, returns            conductor.task
                        (the task() decorator: conductor.task.task; patterns: conductor.patterns)
                        Retry, Times, ForEach, RetryPolicy     conductor.retry
                        FlowRegistry, RegistryError            conductor.registry
    running them        engines (engines.load, engines.run)    conductor.engines
                        ActionEngine, ProgressBackend, MemoryProgress
                        CheckingClaimListener                  conductor.listeners.claims
                        Conductor, ConductorEvents             conductor.conductor
    inside a task       context (current, progress, cancelled, check_cancelled, on_cancel),
                        JobContext                             conductor.context
    records and errors  TaskInfo, ExecutionInfo, ExceptionInfo, TaskResult
                                                               conductor.records
                        Failure, ConductorError, ExecutionFailure, Cancelled, TaskCancelled
                                                               conductor.exceptions
    vocabulary          states, task, retry, exceptions (the modules themselves)

:class:`Conductor` is imported on first use, so engine-only users do not load
the board code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from conductor import context, engines, exceptions, retry, states, task
from conductor.context import JobContext
from conductor.engines import ActionEngine
from conductor.exceptions import (
    Cancelled,
    ConductorError,
    ExecutionFailure,
    Failure,
    TaskCancelled,
)
from conductor.listeners.claims import CheckingClaimListener
from conductor.records import ExceptionInfo, ExecutionInfo, TaskInfo, TaskResult
from conductor.registry import FlowRegistry, RegistryError
from conductor.retry import ForEach, Retry, RetryPolicy, Times
from conductor.storage import MemoryProgress, ProgressBackend
from conductor.task import FunctionTask, Task, returns

if TYPE_CHECKING:
    from conductor.conductor import Conductor, ConductorEvents

__version__ = "0.1.0"

__all__ = [
    # building flows
    "FlowRegistry",
    "ForEach",
    "FunctionTask",
    "RegistryError",
    "Retry",
    "RetryPolicy",
    "Task",
    "TaskResult",
    "Times",
    "returns",
    # running them
    "ActionEngine",
    "CheckingClaimListener",
    "Conductor",
    "ConductorEvents",
    "MemoryProgress",
    "ProgressBackend",
    # inside a task
    "JobContext",
    # records and errors
    "Cancelled",
    "ConductorError",
    "ExceptionInfo",
    "ExecutionFailure",
    "ExecutionInfo",
    "Failure",
    "TaskCancelled",
    "TaskInfo",
    # modules
    "context",
    "engines",
    "exceptions",
    "retry",
    "states",
    "task",
]

_LAZY = {"Conductor", "ConductorEvents"}


def __getattr__(name: str) -> Any:
    """Import the daemon lazily so engine users do not pay for the board code."""
    if name in _LAZY:
        from conductor import conductor as daemon

        return getattr(daemon, name)
    raise AttributeError(f"module 'conductor' has no attribute {name!r}")
