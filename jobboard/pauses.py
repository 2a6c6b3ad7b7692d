"""Flow pauses: an operator stops conductors claiming one flow's jobs during an incident.

:class:`FlowPauses` is part of :class:`~jobboard.base.JobBoard`: the public
methods are written once here; a backend stores the notes through two small
hooks, :meth:`FlowPauses._read_pauses` and :meth:`FlowPauses._write_pause`.
"""

from __future__ import annotations

import json
import time
from typing import Any, ClassVar

from jobboard import errors
from jobboard.checks import FLOW_RE, BoardChecks

__all__ = ["FlowPauses"]


class FlowPauses(BoardChecks):
    """Pause and resume the claiming of a flow's jobs, and list paused flows."""

    def pause_flow(self, flow: str, *, reason: str | None = None, by: str | None = None) -> None:
        """Ask every conductor to stop claiming jobs of ``flow`` until :meth:`resume_flow`.

        Persistent (it outlives every process) and idempotent: pausing again
        replaces the reason. Jobs of the flow may still be posted, and jobs
        already claimed run on; a conductor sees the pause at its next
        registration refresh (``Conductor.ENTITY_REFRESH``, 5 s).
        """
        self._validate_flow_name(flow)
        note = {"reason": reason, "by": by, "since": time.time()}
        self._write_pause(flow, self._encode(note, "pause", flow))

    def resume_flow(self, flow: str) -> bool:
        """Let conductors claim jobs of ``flow`` again; True if it was paused."""
        self._validate_flow_name(flow)
        return self._write_pause(flow, None)

    def paused_flows(self) -> dict[str, dict[str, Any]]:
        """``{flow: {"reason", "by", "since"}}`` of every paused flow (one read)."""
        out = {}
        for flow, encoded in self._read_pauses().items():
            try:
                note = json.loads(encoded)
            except ValueError:
                note = None
            out[flow] = note if isinstance(note, dict) else {"reason": None}
        return out

    #: Whether ``register_entity`` also tells this board of other owners' lease ends
    #: (a conductor then refreshes its registration at least once a lease).
    LEASES_ON_REGISTER: ClassVar[bool] = False

    def settings_version(self) -> int | None:
        """A number that moves whenever flow pauses or schedules change, as the last
        ``register_entity`` of this board saw it; ``None`` when the backend does not
        keep one. A conductor re-reads pauses and schedules only when it moved, so that
        its heartbeat is the only request it sends while idle."""
        return None

    def _validate_flow_name(self, flow: str) -> None:
        if not isinstance(flow, str) or not FLOW_RE.match(flow):
            raise errors.InvalidJob(
                f"field 'flow' must match {FLOW_RE.pattern}, got {flow!r}", field="flow"
            )

    def _read_pauses(self) -> dict[str, str]:
        """``{flow: encoded note}`` of the paused flows (one read)."""
        raise errors.BoardError(f"{type(self).__name__} cannot pause flows")

    def _write_pause(self, flow: str, encoded: str | None) -> bool:
        """Store the encoded note of a paused ``flow`` (``None`` removes it); True if it
        was paused before. Durable like a job."""
        raise errors.BoardError(f"{type(self).__name__} cannot pause flows")
