"""Callbacks keyed by event (state) name.

An engine owns two notifiers: ``engine.notifier`` for flow transitions and
``engine.atom_notifier`` for task and retry transitions.  A callback is called
as ``callback(state, details, *args, **kwargs)``; registering it for
:data:`ANY` makes it receive every event.  A callback that raises is logged
and skipped: it never stops the engine.  Registration is thread-safe and
copies the listener lists, so notifying takes no lock and costs one dict
lookup when nobody listens.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

LOG = logging.getLogger(__name__)

#: The event name that matches every event.
ANY = "*"

Callback = Callable[..., Any]
DetailsFilter = Callable[[Mapping[str, Any]], bool]


class _Entry:
    """One registration: a callback, its extra arguments and optional details filter."""

    __slots__ = ("callback", "args", "kwargs", "details_filter", "plain")

    def __init__(
        self,
        callback: Callback,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        details_filter: DetailsFilter | None,
    ):
        self.callback = callback
        self.args = tuple(args)
        self.kwargs = dict(kwargs)
        self.details_filter = details_filter
        #: Called as ``callback(event_type, details)``: no filter, no extra arguments.
        self.plain = details_filter is None and not self.args and not self.kwargs

    def is_equivalent(self, callback: Callback, details_filter: DetailsFilter | None) -> bool:
        return self.callback == callback and self.details_filter == details_filter


class Notifier:
    """Dispatches events to the callbacks registered for them (or for :data:`ANY`)."""

    ANY = ANY

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[_Entry, ...]] = {}
        # event type -> the entries it calls (its own, then ANY's); rebuilt lazily
        # after each change, so that notifying concatenates nothing.
        self._targets: dict[str, tuple[_Entry, ...]] = {}

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._entries.values())

    def register(
        self,
        event_type: str,
        callback: Callback,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        details_filter: DetailsFilter | None = None,
    ) -> None:
        """Call ``callback(event_type, details, *args, **kwargs)`` on each ``event_type`` event.

        ``details_filter(details)`` returning false skips the call.  Registering
        the same callback and filter twice for one event is an error.
        """
        if not callable(callback):
            raise ValueError(f"event callback must be callable, got {callback!r}")
        with self._lock:
            current = self._entries.get(event_type, ())
            if any(e.is_equivalent(callback, details_filter) for e in current):
                raise ValueError(f"{callback!r} is already registered for {event_type!r}")
            entry = _Entry(callback, args or (), kwargs or {}, details_filter)
            self._entries = {**self._entries, event_type: current + (entry,)}
            self._targets = {}

    def deregister(
        self, event_type: str, callback: Callback, details_filter: DetailsFilter | None = None
    ) -> bool:
        """Remove a registration; returns whether there was one."""
        with self._lock:
            current = self._entries.get(event_type, ())
            kept = tuple(e for e in current if not e.is_equivalent(callback, details_filter))
            if len(kept) == len(current):
                return False
            entries = dict(self._entries)
            if kept:
                entries[event_type] = kept
            else:
                del entries[event_type]
            self._entries = entries
            self._targets = {}
            return True

    def deregister_event(self, event_type: str) -> int:
        """Remove every callback of ``event_type``; returns how many there were."""
        with self._lock:
            entries = dict(self._entries)
            removed = entries.pop(event_type, ())
            self._entries = entries
            self._targets = {}
            return len(removed)

    def is_registered(
        self, event_type: str, callback: Callback, details_filter: DetailsFilter | None = None
    ) -> bool:
        """Whether ``callback`` (with that filter) is registered for ``event_type``."""
        return any(
            e.is_equivalent(callback, details_filter) for e in self._entries.get(event_type, ())
        )

    def listeners_iter(self) -> Iterator[tuple[str, Callback]]:
        """Every ``(event_type, callback)`` registration."""
        for event_type, entries in self._entries.items():
            for entry in entries:
                yield event_type, entry.callback

    def reset(self) -> None:
        """Forget every registration."""
        with self._lock:
            self._entries = {}
            self._targets = {}

    def has_listeners(self) -> bool:
        """Whether anything is registered at all (cheap: used on the hot path)."""
        return bool(self._entries)

    def notify(self, event_type: str, details: Mapping[str, Any]) -> None:
        """Call the callbacks of ``event_type`` and of :data:`ANY`; log (never raise) errors."""
        targets = self._targets  # read before the entries (both replaced on a change)
        entries = self._entries
        if not entries:
            return
        called = targets.get(event_type)
        if called is None:
            specific = entries.get(event_type, ())
            generic = entries.get(ANY, ()) if event_type != ANY else ()
            called = targets[event_type] = specific + generic
        for entry in called:
            try:
                if entry.plain:
                    entry.callback(event_type, details)
                elif entry.details_filter is None or entry.details_filter(details):
                    entry.callback(event_type, details, *entry.args, **entry.kwargs)
            except Exception:
                LOG.warning(
                    "listener %s failed on event %s; the engine carries on",
                    callable_name(entry.callback),
                    event_type,
                    exc_info=True,
                )


def callable_name(fn: Any) -> str:
    """A callable's qualified name for log lines (never its repr, which may hold state)."""
    owner = getattr(fn, "__self__", None)
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    if owner is not None and "." not in name:
        return f"{type(owner).__qualname__}.{name}"
    return str(name)
