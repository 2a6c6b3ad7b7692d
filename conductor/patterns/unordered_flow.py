"""Unordered flow: children are independent and may run in any order, or at once."""

from __future__ import annotations

from conductor.flow import Flow as _Flow


class Flow(_Flow):
    """Runs its children in no particular order (concurrently on a parallel engine).

    A child cannot use another child's outputs: there is no order between them.
    """
