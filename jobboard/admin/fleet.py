"""Which conductors are alive, and which flows they serve.

A conductor refreshes its registration (an entity of kind ``conductor``) at
least every ``heartbeat_interval`` seconds, which it publishes in its
metadata (the refresh period plus one lease renewal period). Missing two
refreshes in a row means it is gone or stuck: its record is flagged
``stale`` long before the board forgets it (``DEFAULT_ENTITY_TTL``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from jobboard.admin.records import conductor_record, mapping
from jobboard.model import Entity

__all__ = [
    "DEFAULT_HEARTBEAT",
    "STALE_FACTOR",
    "conductor_rows",
    "serving",
    "stale_after",
]

#: A conductor's registration refresh period when it does not publish one (seconds).
DEFAULT_HEARTBEAT = 5.0
#: A conductor is stale once this many refresh periods passed without a refresh.
STALE_FACTOR = 2.0


def stale_after(metadata: Mapping[str, Any]) -> float:
    """Seconds without a refresh after which a conductor with this metadata is stale."""
    interval = metadata.get("heartbeat_interval")
    if isinstance(interval, bool) or not isinstance(interval, int | float) or interval <= 0:
        lease = metadata.get("lease")
        renew = lease / 3 if isinstance(lease, int | float) and not isinstance(lease, bool) else 0
        interval = DEFAULT_HEARTBEAT + max(0.0, float(renew))
    return STALE_FACTOR * float(interval)


def conductor_rows(entities: Iterable[Entity], now: float) -> list[dict[str, Any]]:
    """``conductors`` records with ``stale`` and ``stale_after``, live ones first."""
    out = []
    for entity in entities:
        record = conductor_record(entity, now)
        bound = stale_after(mapping(entity.metadata))
        record["stale_after"] = bound
        record["stale"] = record["heartbeat_age"] > bound
        out.append(record)
    out.sort(key=lambda c: (c["stale"], str(c["name"])))
    return out


def serving(rows: Sequence[Mapping[str, Any]], flow: str) -> list[Mapping[str, Any]]:
    """The live (not stale) conductors among ``rows`` that serve ``flow``."""
    return [c for c in rows if not c["stale"] and flow in c["flows"]]
