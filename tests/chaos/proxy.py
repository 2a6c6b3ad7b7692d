"""A small threaded TCP proxy on loopback, to cut and blackhole one client's connections.

Chaos tests put one :class:`TcpProxy` in front of the server for each
conductor process, so a network fault can be aimed at exactly the conductor
that holds claims:

* :meth:`TcpProxy.blackhole` keeps every connection open but forwards nothing
  (a partition: the peers see silence, as with a pulled cable), and new
  connections are accepted and left hanging;
* :meth:`TcpProxy.cut` closes every connection at once (both peers see a
  reset or an end of file, as when a middlebox drops its state);
* :meth:`TcpProxy.restore` forwards again (new connections; bytes held back
  during a blackhole are dropped, so a healed partition behaves like a lost
  network, not a slow one).
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading

LOOPBACK = "127.0.0.1"
_CHUNK = 65536
_POLL = 0.05


class TcpProxy:
    """Forward ``127.0.0.1:<port>`` to ``target``, with faults switched on demand."""

    def __init__(self, target_port: int, target_host: str = LOOPBACK) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((LOOPBACK, 0))
        self._listener.listen(64)
        self._listener.settimeout(_POLL)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket | None]] = []
        self._blackholed = False
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name="tcp-proxy", daemon=True)
        self._thread.start()
        #: How many connections were cut and how many blackhole spells there were.
        self.cuts = 0
        self.blackholes = 0

    # -- faults -------------------------------------------------------------

    def blackhole(self) -> None:
        """Forward nothing from now on; connections stay open and silent."""
        with self._lock:
            self._blackholed = True
            self.blackholes += 1

    def cut(self) -> None:
        """Close every current connection (both sides)."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
            self.cuts += len(pairs)
        for pair in pairs:
            _close(*pair)

    def restore(self) -> None:
        """Heal: drop the connections that lived through the blackhole, forward again."""
        with self._lock:
            was = self._blackholed
            self._blackholed = False
        if was:
            self.cut()

    def close(self) -> None:
        """Stop accepting and close every connection."""
        self._closed.set()
        self.cut()
        self._thread.join(2)
        with contextlib.suppress(OSError):
            self._listener.close()

    # -- forwarding -----------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with self._lock:
            hanging = self._blackholed
        upstream: socket.socket | None = None
        if not hanging:
            try:
                upstream = socket.create_connection(self.target, timeout=2.0)
            except OSError:
                _close(client, None)
                return
        with self._lock:
            self._pairs.append((client, upstream))
        try:
            self._pump(client, upstream)
        finally:
            with self._lock:
                if (client, upstream) in self._pairs:
                    self._pairs.remove((client, upstream))
            _close(client, upstream)

    def _pump(self, client: socket.socket, upstream: socket.socket | None) -> None:
        """Copy bytes both ways until either side closes or the pair is cut."""
        peers = {client: upstream, upstream: client} if upstream else {client: None}
        while not self._closed.is_set():
            with self._lock:
                if (client, upstream) not in self._pairs:
                    return
                silent = self._blackholed
            try:
                readable, _, _ = select.select(list(peers), [], [], _POLL)
            except (OSError, ValueError):
                return
            for sock in readable:
                try:
                    data = sock.recv(_CHUNK)
                except OSError:
                    return
                if not data:
                    return
                other = peers[sock]
                if silent or other is None:
                    continue  # swallowed by the partition
                try:
                    other.sendall(data)
                except OSError:
                    return


def _close(a: socket.socket, b: socket.socket | None) -> None:
    for sock in (a, b):
        if sock is None:
            continue
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()
