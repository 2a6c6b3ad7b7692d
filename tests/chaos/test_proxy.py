"""The chaos suite's TCP proxy forwards, blackholes, cuts and heals (loopback only)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from tests.chaos.proxy import LOOPBACK, TcpProxy


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A loopback server that echoes every byte back, one thread per connection."""
    listener = socket.create_server((LOOPBACK, 0))
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(4096):
                conn.sendall(data)

    def accept() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(2)
    listener.close()


@pytest.fixture
def client() -> Iterator:
    """Open client sockets to a proxy; every one is closed after the test."""
    opened: list[socket.socket] = []

    def connect(proxy: TcpProxy) -> socket.socket:
        sock = socket.create_connection((LOOPBACK, proxy.port), timeout=2)
        sock.settimeout(0.5)
        opened.append(sock)
        return sock

    yield connect
    for sock in opened:
        sock.close()


def _echo(sock: socket.socket, payload: bytes) -> bytes:
    sock.sendall(payload)
    return sock.recv(4096)


def test_forwards_then_blackholes_then_heals(echo_port: int, client) -> None:
    proxy = TcpProxy(echo_port)
    try:
        sock = client(proxy)
        assert _echo(sock, b"one") == b"one"
        proxy.blackhole()
        with pytest.raises(TimeoutError):
            _echo(sock, b"lost")  # silence, not an error: a partition
        proxy.restore()
        # the connection that lived through the partition is gone; a new one works
        assert sock.recv(4096) == b""
        assert _echo(client(proxy), b"two") == b"two"
    finally:
        proxy.close()


def test_cut_closes_every_connection(echo_port: int, client) -> None:
    proxy = TcpProxy(echo_port)
    try:
        socks = [client(proxy) for _ in range(3)]
        assert [_echo(s, b"x") for s in socks] == [b"x"] * 3
        proxy.cut()
        for sock in socks:
            try:
                assert sock.recv(4096) == b""
            except ConnectionResetError:
                pass  # a reset is as good as an end of file here
        assert proxy.cuts == 3
        assert _echo(client(proxy), b"after") == b"after"
    finally:
        proxy.close()
