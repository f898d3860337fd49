"""An echo client app, as the SDK's client example would be written in Python.

It connects, sends its lines, receives the server's greeting and the echoes, checks
them, and shuts down; `SocketShutdown` deletes the socket and ends the run.

Run it against `examples.echo_server`::

    python -m examples.echo_client 127.0.0.1:5000 one two three
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence

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


class EchoClient(USocket):
    """Connects to `address`, sends `lines`, and expects a greeting plus each line back.

    Args:
        iomux: the loop to run on.
        log: the app's log.
        address: "ip:port", "[v6]:port" or "name:port".
        lines: the lines to send (without newlines).
        on_done: called once the socket ended, with `self` (read `ok`, `reason`).
        provider: the socket provider (TCP by default).
    """

    def __init__(
        self,
        iomux: IIoMux,
        log: IInstanceLog,
        address: str,
        lines: Sequence[str],
        on_done: Callable[[EchoClient], None] | None = None,
        provider: ISocketProvider | None = None,
    ) -> None:
        self.log = log
        self.lines = list(lines)
        self.expected = len(self.lines) + 1  # the greeting, then one echo per line
        self.received: list[str] = []
        self.pending = b""
        self.buf = bytearray(RECV_SIZE)
        self.reason: ShutdownReason | None = None
        self.on_done = on_done
        self.socket = (provider or CreateTCPSocketProvider()).CreateSocket(iomux, self, log)
        self.socket.Connect(address)
        # Sends before SocketConnectComplete are cached and go out once connected.
        for line in self.lines:
            self.socket.Send(line.encode() + b"\n")
        self.socket.Recv(self.buf, RECV_SIZE, recvPartial=True)

    @property
    def ok(self) -> bool:
        """True when the greeting and every echo came back and the end was normal."""
        return (
            self.reason is ShutdownReason.SOCKET_SHUTDOWN_NORMAL
            and len(self.received) == self.expected
            and self.received[0].startswith("hello ")
            and self.received[1:] == self.lines
        )

    def SocketConnectComplete(self, socket: ISocket) -> None:
        self.log.Log(LOG_APP, "client: connected, %d lines to send", len(self.lines))

    def SocketRecvResult(self, socket: ISocket, buf: bytearray, len: int) -> None:
        # `len` is the SDK's parameter name; the builtin is not needed here.
        if self._take(bytes(memoryview(buf)[:len])):
            socket.Shutdown()
        else:
            socket.Recv(self.buf, RECV_SIZE, recvPartial=True)

    def _take(self, data: bytes) -> bool:
        """Split `data` into lines; True once everything expected has arrived."""
        *complete, self.pending = (self.pending + data).split(b"\n")
        for line in complete:
            text = line.decode(errors="replace")
            self.log.Log(LOG_APP, "client: got %r", text)
            self.received.append(text)
        return len(self.received) >= self.expected

    def SocketShutdown(self, socket: ISocket, reason: ShutdownReason) -> None:
        self.reason = reason
        self.log.Log(LOG_APP, "client: shutdown %s", reason.name)
        socket.Delete()
        if self.on_done is not None:
            self.on_done(self)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m examples.echo_client", description=__doc__)
    p.add_argument("address", help='the server, e.g. "127.0.0.1:5000"')
    p.add_argument("lines", nargs="*", default=["hello, echo"], help="lines to send")
    p.add_argument("--uvloop", action="store_true", help="run on uvloop")
    p.add_argument("-v", "--verbose", action="store_true", help="also log the library (LOG_TCP)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    log = IInstanceLog(LOG_APP | (LOG_TCP if args.verbose else 0))
    iomux = IIoMux.Create(uvloop=args.uvloop)
    client = EchoClient(iomux, log, args.address, args.lines, on_done=lambda c: iomux.Terminate())
    try:
        iomux.Run()
    finally:
        iomux.Close()
    return 0 if client.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
