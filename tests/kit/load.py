"""Echo servers and clients for the load tests (tests/test_load.py).

`EchoServer` accepts every peer and echoes what it receives; `EchoClient` connects,
sends one seeded message, checks the echo (hashed), shuts down and deletes itself.
Both delete their sockets in `SocketShutdown`, as an SDK app does, so nothing is held
once a connection is over.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from usocket_asyncio import (
    IInstanceLog,
    IIoMux,
    ISocket,
    ISocketProvider,
    ShutdownReason,
    USocket,
)

from .loop import wake


class Tally:
    """What every connection of a load run did."""

    def __init__(self) -> None:
        self.accepted = 0
        self.connected = 0
        self.echoed = 0
        self.bad_echo = 0
        self.client_ends: dict[ShutdownReason, int] = {}
        self.server_ends: dict[ShutdownReason, int] = {}
        self.violations: list[str] = []
        self.bytes_verified = 0

    @property
    def clients_done(self) -> int:
        return sum(self.client_ends.values())

    @property
    def servers_done(self) -> int:
        return sum(self.server_ends.values())


class EchoConn(USocket):
    """The server side of one connection: echo until the peer closes, then Delete."""

    __slots__ = ("buf", "ended", "tally")

    def __init__(self, tally: Tally) -> None:
        self.tally = tally
        self.buf = bytearray(4096)
        self.ended = False

    def SocketAcceptComplete(self, socket: ISocket) -> None:
        self.tally.accepted += 1
        wake()
        socket.Recv(self.buf, None, True)

    def SocketRecvResult(self, socket: ISocket, buf: Any, len: int) -> None:
        socket.Send(buf, len)
        socket.Recv(self.buf, None, True)

    def SocketShutdown(self, socket: ISocket, reason: ShutdownReason) -> None:
        if self.ended:
            self.tally.violations.append("server: a second SocketShutdown")
        self.ended = True
        self.tally.server_ends[reason] = self.tally.server_ends.get(reason, 0) + 1
        socket.Delete()
        wake()


class EchoServer(USocket):
    """A listening socket's user: accepts every peer with an `EchoConn`."""

    def __init__(self, tally: Tally) -> None:
        self.tally = tally
        self.bound: tuple[str, int] | None = None
        self.ended: ShutdownReason | None = None

    def SocketBindResult(self, socket: ISocket, localAddr: str, localPort: int) -> None:
        self.bound = (localAddr, localPort)
        socket.Listen()
        wake()

    def SocketListenResult(self, socket: ISocket, remoteAddr: str, remotePort: int) -> None:
        socket.Accept(EchoConn(self.tally))

    def SocketShutdown(self, socket: ISocket, reason: ShutdownReason) -> None:
        self.ended = reason


class EchoClient(USocket):
    """Connect, send one message, check its echo, then (unless `hold`) shut down."""

    __slots__ = ("buf", "ended", "hold", "msg", "on_end", "tally")

    def __init__(
        self,
        tally: Tally,
        msg: bytes,
        hold: bool = False,
        on_end: Callable[[], None] | None = None,
    ) -> None:
        self.tally = tally
        self.msg = msg
        self.buf = bytearray(len(msg))
        self.hold = hold
        self.ended = False
        self.on_end = on_end

    def SocketConnectComplete(self, socket: ISocket) -> None:
        self.tally.connected += 1
        socket.Recv(self.buf)
        socket.Send(self.msg)
        wake()

    def SocketRecvResult(self, socket: ISocket, buf: Any, len: int) -> None:
        if hashlib.sha256(buf[:len]).digest() == hashlib.sha256(self.msg).digest():
            self.tally.echoed += 1
            self.tally.bytes_verified += len
        else:
            self.tally.bad_echo += 1
        if not self.hold:
            socket.Shutdown()

    def SocketShutdown(self, socket: ISocket, reason: ShutdownReason) -> None:
        if self.ended:
            self.tally.violations.append("client: a second SocketShutdown")
        self.ended = True
        self.tally.client_ends[reason] = self.tally.client_ends.get(reason, 0) + 1
        socket.Delete()
        if self.on_end is not None:
            self.on_end()
        wake()


def start_server(
    mux: IIoMux, log: IInstanceLog, prov: ISocketProvider, tally: Tally, addr: str, port: int
) -> tuple[ISocket, EchoServer]:
    """A listening echo server (Bind called; run the loop until `server.bound`)."""
    user = EchoServer(tally)
    sock = prov.CreateSocket(mux, user, log)
    sock.Bind(addr, port)
    return sock, user
