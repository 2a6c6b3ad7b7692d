"""Linear flow: children run one after another, in the order they were added."""

from __future__ import annotations

from conductor.flow import Flow as _Flow


class Flow(_Flow):
    """Runs its children in order; each sees the outputs of those before it."""
