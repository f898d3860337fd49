"""An echo server app, as the SDK's server example would be written in Python.

The app creates a TCP provider and a listening socket, binds it to all interfaces
(`Bind(None, port)`), and calls `Listen` in `SocketBindResult`. In `SocketListenResult`
it denies the addresses it was told to deny (`Accept(None)`) and accepts every other
peer with a per-connection `USocket` that greets ("hello <addr>\\n"), echoes each line
back, and deletes its socket in `SocketShutdown`.

Run it::

    python -m examples.echo_server --port 5000 --deny 127.0.0.2
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Iterable

from usocket_asyncio import (
    LOG_APP,
    LOG_TCP,
    CreateTCPSocketProvider,
    IInstanceLog,
    IIoMux,
    ISocket,
    ISocketProvider,
    ShutdownReason,
    USocket,
)

RECV_SIZE = 4096
MAX_LINE = 64 * 1024
"""A peer whose line grows beyond this is cut off (Shutdown): the app never grows unbounded."""


class EchoConnection(USocket):
    """One accepted connection: greet, then echo every complete line."""

    def __init__(self, server: EchoServer, remoteAddr: str) -> None:
        self.server = server
        self.remote = remoteAddr
        self.socket: ISocket | None = None
        self.buf = bytearray(RECV_SIZE)
        self.line = bytearray()
        self.lines_echoed = 0

    def SocketAcceptComplete(self, socket: ISocket) -> None:
        self.socket = socket
        self.server.log.Log(LOG_APP, "echo: %s connected", self.remote)
        socket.Send(f"hello {self.remote}\n".encode())
        socket.Recv(self.buf, RECV_SIZE, recvPartial=True)

    def SocketRecvResult(self, socket: ISocket, buf: bytearray, len: int) -> None:
        self.line += memoryview(buf)[:len]
        while (nl := self.line.find(b"\n")) >= 0:
            socket.Send(self.line, nl + 1)  # Send copies: the buffer may change at once
            del self.line[: nl + 1]
            self.lines_echoed += 1
        if self.line.__len__() > MAX_LINE:
            self.server.log.Log(
                LOG_APP, "echo: %s sent a line over %d bytes", self.remote, MAX_LINE
            )
            socket.Shutdown()
            return
        socket.Recv(self.buf, RECV_SIZE, recvPartial=True)

    def SocketShutdown(self, socket: ISocket, reason: ShutdownReason) -> None:
        self.server.log.Log(
            LOG_APP, "echo: %s gone (%s), %d lines", self.remote, reason.name, self.lines_echoed
        )
        socket.Delete()
        self.server.connections.discard(self)


class EchoServer(USocket):
    """The listening side: binds, listens, and decides on each new connection.

    Args:
        iomux: the loop to run on.
        log: the app's log (LOG_APP lines; LOG_TCP for the library's).
        port: the port to bind (0: any; read it in `on_ready`).
        deny: peer addresses to turn away.
        bind: the local address; None binds all interfaces.
        on_ready: called with the bound port once listening.
        on_closed: called with the reason once the listening socket ended.
        provider: the socket provider (TCP by default).
    """

    def __init__(
        self,
        iomux: IIoMux,
        log: IInstanceLog,
        port: int = 0,
        deny: Iterable[str] = (),
        bind: str | None = None,
        on_ready: Callable[[int], None] | None = None,
        on_closed: Callable[[ShutdownReason], None] | None = None,
        provider: ISocketProvider | None = None,
    ) -> None:
        self.iomux = iomux
        self.log = log
        self.deny = frozenset(deny)
        self.on_ready = on_ready
        self.on_closed = on_closed
        self.connections: set[EchoConnection] = set()
        self.denied = 0
        self.port = 0
        self.reason: ShutdownReason | None = None
        self.provider = provider or CreateTCPSocketProvider()
        self.socket = self.provider.CreateSocket(iomux, self, log)
        self.socket.Bind(bind, port)

    def SocketBindResult(self, socket: ISocket, localAddr: str, localPort: int) -> None:
        self.port = localPort
        self.log.Log(LOG_APP, "echo: bound to %s:%u", localAddr, localPort)
        socket.Listen()
        if self.on_ready is not None:
            self.on_ready(localPort)

    def SocketListenResult(self, socket: ISocket, remoteAddr: str, remotePort: int) -> None:
        if remoteAddr in self.deny:
            self.log.Log(LOG_APP, "echo: %s:%u denied", remoteAddr, remotePort)
            self.denied += 1
            socket.Accept(None)
            return
        conn = EchoConnection(self, remoteAddr)
        self.connections.add(conn)
        socket.Accept(conn)

    def SocketShutdown(self, socket: ISocket, reason: ShutdownReason) -> None:
        self.reason = reason
        self.log.Log(LOG_APP, "echo: listener closed (%s)", reason.name)
        socket.Delete()
        if self.on_closed is not None:
            self.on_closed(reason)

    def Close(self) -> None:
        """Stop listening (connections already accepted carry on)."""
        self.socket.Shutdown()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m examples.echo_server", description=__doc__)
    p.add_argument("--port", type=int, required=True, help="TCP port to listen on")
    p.add_argument("--bind", default=None, help="local address (default: all interfaces)")
    p.add_argument("--deny", action="append", default=[], help="peer address to turn away")
    p.add_argument("--uvloop", action="store_true", help="run on uvloop")
    p.add_argument("-v", "--verbose", action="store_true", help="also log the library (LOG_TCP)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    log = IInstanceLog(LOG_APP | (LOG_TCP if args.verbose else 0))
    iomux = IIoMux.Create(uvloop=args.uvloop)
    server = EchoServer(
        iomux, log, args.port, args.deny, args.bind, on_closed=lambda r: iomux.Terminate()
    )
    try:
        iomux.Run()
    except KeyboardInterrupt:
        pass
    finally:
        iomux.Close()
    return 0 if server.reason in (None, ShutdownReason.SOCKET_SHUTDOWN_NORMAL) else 1


if __name__ == "__main__":
    raise SystemExit(main())
