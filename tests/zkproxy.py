"""A small TCP proxy on loopback that can cut a connection without closing it.

``cut()`` makes the proxy drop every byte in both directions (on open and new
connections alike) while keeping the sockets open: to both ends it looks like a
network partition, not a closed connection. ``heal()`` forwards again.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType

from tests.servers import LOOPBACK


class TcpProxy:
    """Forward ``LOOPBACK:port`` to ``LOOPBACK:target`` until cut."""

    def __init__(self, target: int) -> None:
        self.target = target
        self._listener = socket.create_server((LOOPBACK, 0))
        self.port = self._listener.getsockname()[1]
        self._cut = threading.Event()
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True, name="tcp-proxy").start()

    @property
    def hosts(self) -> str:
        """The ``host:port`` clients connect to instead of the server's."""
        return f"{LOOPBACK}:{self.port}"

    def cut(self) -> None:
        """Drop all traffic from now on (connections stay open)."""
        self._cut.set()

    def heal(self) -> None:
        """Forward traffic again."""
        self._cut.clear()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
                server = socket.create_connection((LOOPBACK, self.target), timeout=5)
            except OSError:
                continue
            server.settimeout(None)
            with self._lock:
                self._sockets += [client, server]
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                if not self._cut.is_set():
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        """Stop accepting and close every connection."""
        self._closed.set()
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)  # wakes the pumps; the peers see it closed
                except OSError:
                    pass
                sock.close()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
