"""A captured exception that survives a JSON round trip.

A :class:`Failure` keeps what an operator needs to understand an error raised
by a task (its type names, message and traceback text, and its cause chain) as
plain strings, so it can be stored with the job's progress and read back on
another machine.  While it is still in the process that caught it, it also
keeps the live exception, which the engine re-attaches as ``__cause__``.

The class is defined in :mod:`conductor.exceptions` (errors carry failures and
a failure raises :class:`~conductor.exceptions.RemoteFailure`, so they live in
one module); this module is its documented home.
"""

from __future__ import annotations

from conductor.exceptions import ExcInfo, Failure, type_name

__all__ = ["ExcInfo", "Failure", "type_name"]
