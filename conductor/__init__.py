"""Conductor: run flows of tasks for the jobs of a job board.

``conductor.Conductor`` (the daemon) is imported on first use, so engine users
do not load the board code.
"""

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:  # for type checkers and the API reference; imported lazily below
    from conductor.conductor import Conductor as Conductor


def __getattr__(name: str):
    """Import the daemon lazily so engine users do not pay for the board code."""
    if name == "Conductor":
        from conductor.conductor import Conductor as Conductor

        return Conductor
    raise AttributeError(f"module 'conductor' has no attribute {name!r}")
