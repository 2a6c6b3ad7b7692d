"""How long a ZooKeeper session surely lives: the timeout the server granted and
when the server was last heard from.

The server clamps the session timeout a client asks for to its own bounds
(``minSessionTimeout``/``maxSessionTimeout``) and expires a session after that
long without hearing from the client. kazoo keeps the granted value only
inside its connection loop, so :class:`SessionClock` follows a client's
connection: it reads the value the handshake's answer carries (and, for a
client that was already connected when given to the board, the copy its
connection loop keeps), and
notes the time of every packet read from the server. A claim bound to the
session is then surely alive until the last packet heard plus the granted
timeout, less a safety margin for the round trip; past that, the board calls
it lost even while the connection merely looks suspended, so that its owner
stops before another client can have claimed the job.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

from kazoo.client import KazooClient
from kazoo.protocol.serialization import Connect

#: Attribute of a kazoo connection handler listing the clocks that follow it.
_CLOCKS = "_jobboard_session_clocks"


class SessionClock:
    """The granted session timeout of one client and when its server last spoke."""

    def __init__(self, requested: float, margin: float) -> None:
        #: The timeout asked for (used until the server's answer is known).
        self.requested = requested
        #: Fraction of the timeout kept as a safety margin.
        self.margin = margin
        self.granted: float | None = None
        self.heard_at = time.monotonic()
        self._client: KazooClient | None = None

    @property
    def timeout(self) -> float:
        """The session timeout in seconds: the granted one once known."""
        return self.granted if self.granted is not None else self.requested

    def trusted_for(self) -> float:
        """Seconds the session surely lives after the server was last heard from."""
        timeout = self.timeout
        return timeout - max(0.1, self.margin * timeout)

    def alive_until(self) -> float:
        """Monotonic time until which the session surely lives (seen from here)."""
        return self.heard_at + self.trusted_for()

    def attach(self, client: KazooClient) -> None:
        """Follow ``client``'s connection (its handshakes and the packets it reads)."""
        self._client = client
        handler = client._connection
        clocks: list[SessionClock] | None = getattr(handler, _CLOCKS, None)
        if clocks is None:
            clocks = []
            setattr(handler, _CLOCKS, clocks)
            _wrap(handler, clocks)
        clocks.append(self)
        self.heard_at = time.monotonic()
        if client.connected and self.granted is None:
            self.granted = _granted_by_running_loop(handler)

    def detach(self) -> None:
        """Stop following the client."""
        client, self._client = self._client, None
        if client is not None:
            clocks = getattr(client._connection, _CLOCKS, [])
            if self in clocks:
                clocks.remove(self)


def _wrap(handler: Any, clocks: list[SessionClock]) -> None:
    """Wrap a kazoo connection handler's handshake request and socket read (per
    instance). The handshake's answer is seen before kazoo reports CONNECTED."""
    invoke, read_socket = handler._invoke, handler._read_socket

    def handshake(timeout: float, request: Any, xid: int | None = None) -> Any:
        result = invoke(timeout, request, xid)
        if isinstance(request, Connect) and isinstance(result, tuple):
            granted = getattr(result[0], "time_out", 0)
            if isinstance(granted, int) and granted > 0:
                now = time.monotonic()
                for clock in list(clocks):
                    clock.granted, clock.heard_at = granted / 1000.0, now
        return result

    def read(*args: Any) -> Any:
        result = read_socket(*args)
        now = time.monotonic()
        for clock in list(clocks):
            clock.heard_at = now
        return result

    handler._invoke, handler._read_socket = handshake, read


def _granted_by_running_loop(handler: Any) -> float | None:
    """The granted timeout from the ``read_timeout`` kazoo's running connection loop
    derived from it (2/3 of it, in seconds), or None when it cannot be seen."""
    thread = getattr(handler, "_connection_routine", None)
    ident = thread.ident if isinstance(thread, threading.Thread) else None
    frame = sys._current_frames().get(ident) if ident is not None else None
    while frame is not None:
        if frame.f_code.co_name == "_connect_attempt" and frame.f_globals.get(
            "__name__", ""
        ).startswith("kazoo"):
            value = frame.f_locals.get("read_timeout")
            if not isinstance(value, int | float) or value <= 0:
                return None
            return value * 1.5 / (1000.0 if value > 3600 else 1.0)  # caught before the / 1000
        frame = frame.f_back
    return None
