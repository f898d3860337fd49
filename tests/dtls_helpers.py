"""Helpers for the DTLS tests: contexts, a lossy loopback relay, a hand-driven client."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

from conftest import Mux
from OpenSSL import SSL
from test_tls import make_ctx

from usocket_asyncio import IInstanceLog, ISocket, ISocketProvider
from usocket_asyncio._context import SocketContext
from usocket_asyncio._dtls import DTLSSocket


def dtls_ctx(
    prov: ISocketProvider, log: IInstanceLog, srtp: bool = True, **kw: Any
) -> SocketContext:
    """A DTLS context (see `make_ctx` for the keywords)."""
    ctx = make_ctx(prov, log, **kw)
    ctx.EnableDTLS(srtp)
    return ctx


def peers_of(listener: ISocket) -> dict[Any, DTLSSocket]:
    """The listener's peer table (source address -> peer socket)."""
    assert isinstance(listener, DTLSSocket)
    ep = listener._ep
    return ep.peers if ep is not None else {}


class _Side(asyncio.DatagramProtocol):
    def __init__(self, relay: Relay, direction: str) -> None:
        self.relay = relay
        self.direction = direction

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.relay.on(self.direction, data, addr)


class Relay:
    """A loopback UDP relay between one client and a server port; `drop(direction,
    data)` decides which datagrams are lost ("c2s" or "s2c"). Records every datagram
    as (direction, size, dropped)."""

    def __init__(self, mux: Mux, server_port: int, drop: Callable[[str, bytes], bool]) -> None:
        self.drop = drop
        self.seen: list[tuple[str, int, bool]] = []
        self.client: Any = None
        loop = mux.loop
        front, _ = loop.run_until_complete(
            loop.create_datagram_endpoint(lambda: _Side(self, "c2s"), local_addr=("127.0.0.1", 0))
        )
        back, _ = loop.run_until_complete(
            loop.create_datagram_endpoint(
                lambda: _Side(self, "s2c"), remote_addr=("127.0.0.1", server_port)
            )
        )
        self.front: Any = front
        self.back: Any = back
        self.port = int(front.get_extra_info("sockname")[1])

    def on(self, direction: str, data: bytes, addr: Any) -> None:
        if direction == "c2s":
            self.client = addr
        dropped = self.drop(direction, data)
        self.seen.append((direction, len(data), dropped))
        if dropped:
            return
        if direction == "c2s":
            self.back.sendto(data)
        elif self.client is not None:
            self.front.sendto(data, self.client)

    def dropped(self) -> int:
        return sum(1 for _, _, d in self.seen if d)

    def close(self) -> None:
        self.front.close()
        self.back.close()


class RawClient:
    """A DTLS client driven by hand over a plain UDP socket (pyOpenSSL memory BIOs):
    for ClientHellos without cookies and handshakes that stall on purpose."""

    def __init__(self, port: int) -> None:
        ctx = SSL.Context(SSL.DTLS_METHOD)
        ctx.set_verify(SSL.VERIFY_NONE)
        self.conn = SSL.Connection(ctx, None)
        self.conn.set_connect_state()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.connect(("127.0.0.1", port))
        self.replies: list[bytes] = []

    def client_hello(self) -> bytes:
        """The first flight (a ClientHello without cookie)."""
        try:
            self.conn.do_handshake()
        except SSL.WantReadError:
            pass
        return self.conn.bio_read(65536)

    def send(self, data: bytes) -> None:
        self.sock.send(data)

    def poll(self) -> bool:
        """Read what arrived (non-blocking); True when something did."""
        got = False
        while True:
            try:
                self.replies.append(self.sock.recv(65536))
                got = True
            except BlockingIOError:
                return got

    def answer(self) -> None:
        """Feed the replies into OpenSSL and send what it answers."""
        for r in self.replies:
            self.conn.bio_write(r)
        self.replies.clear()
        try:
            self.conn.do_handshake()
        except SSL.WantReadError:
            pass
        try:
            self.send(self.conn.bio_read(65536))
        except SSL.WantReadError:
            pass

    def close(self) -> None:
        self.sock.close()
