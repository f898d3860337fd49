"""The SDK manual's socket example ("ISocket - server", "ISocket - client"), ported line by
line from the documentation alone, on both loops.

The server binds, calls Listen in SocketBindResult, denies one address and greets every
other peer with "Hello world"; each accepted connection receives into a 1024-byte buffer,
hex-dumps what came, and deletes itself when its socket ends. The manual binds to all
interfaces and denies 127.0.0.1; the tests stay on loopback, so the server binds
127.0.0.1 and denies 127.0.0.2 (a client bound to 127.0.0.2 connects from there).
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from kit.loop import Mux
from kit.streams import captured_log

from usocket_asyncio import (
    LOG_APP,
    CreateTCPSocketProvider,
    IInstanceLog,
    IIoMux,
    ISocket,
    ShutdownReason,
    USocket,
    shutdownreason_t,
)

DENIED = "127.0.0.2"


# --------------------------------------------------------------------------- the port


class RemoteUser(USocket):
    """`class remoteUser : public USocket` of the manual."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.remoteSocket: ISocket | None = None
        self.buffer = bytearray(1024)

    def SocketAcceptComplete(self, socket: ISocket) -> None:
        self.remoteSocket = socket
        self.remoteSocket.Recv(self.buffer, 1024)
        self.remoteSocket.Send(b"Hello world", 11)

    def SocketSendResult(self, socket: ISocket) -> None:
        self.app.log.Log(LOG_APP, "Data had been sent")

    def SocketRecvResult(self, socket: ISocket, buf: Any, len: int) -> None:
        self.app.log.Log(LOG_APP, "Received data")
        self.app.log.HexDump(LOG_APP, buf, len)
        self.app.received.append(bytes(memoryview(buf)[:len]))
        assert self.remoteSocket is not None
        self.remoteSocket.Recv(self.buffer, 1024)

    def SocketShutdown(self, socket: ISocket, reason: shutdownreason_t) -> None:
        self.app.remote_reasons.append(reason)
        socket.Delete()  # delete socket; delete this: the library holds no other reference


class App(USocket):
    """`class app : public USocket` of the manual: the server."""

    def __init__(self, iomux: IIoMux, log: IInstanceLog) -> None:
        self.iomux = iomux
        self.log = log
        provider = CreateTCPSocketProvider()
        self.serverSocket: ISocket | None = provider.CreateSocket(iomux, self, log, False)
        provider.Delete()
        self.serverSocket.Bind("127.0.0.1")  # the manual: Bind() (all interfaces)
        # what the test looks at
        self.port = 0
        self.listen_results: list[str] = []
        self.received: list[bytes] = []
        self.remote_reasons: list[ShutdownReason] = []
        self.reason: ShutdownReason | None = None

    def SocketBindResult(self, socket: ISocket, localAddr: str, localPort: int) -> None:
        self.port = localPort
        assert self.serverSocket is not None
        self.serverSocket.Listen()

    def SocketListenResult(self, socket: ISocket, remoteAddr: str, remotePort: int) -> None:
        self.listen_results.append(remoteAddr)
        assert self.serverSocket is not None
        # Deny connections from one address...
        if remoteAddr == DENIED:
            self.serverSocket.Accept(None)
        else:
            self.serverSocket.Accept(RemoteUser(self))

    def SocketShutdown(self, socket: ISocket, reason: shutdownreason_t) -> None:
        self.reason = reason
        # If None, an error occurred during Bind() and SocketBindResult()
        if self.serverSocket is None:
            socket.Delete()
        else:
            self.serverSocket.Delete()
            self.serverSocket = None
        self.iomux.Terminate()


# --------------------------------------------------------------------------- a client


class Client(USocket):
    """A library client: reads the greeting, answers, then shuts down."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.greeting = bytearray(11)
        self.reason: ShutdownReason | None = None
        self.events: list[str] = []

    def SocketConnectComplete(self, socket: ISocket) -> None:
        self.events.append("connect")
        socket.Recv(self.greeting)

    def SocketRecvResult(self, socket: ISocket, buf: Any, len: int) -> None:
        self.events.append(f"recv {bytes(buf[:len])!r}")
        socket.Send(self.answer)

    def SocketSendResult(self, socket: ISocket) -> None:
        self.events.append("send")
        socket.Shutdown()

    def SocketShutdown(self, socket: ISocket, reason: ShutdownReason) -> None:
        self.events.append(reason.name)
        self.reason = reason
        socket.Delete()


def test_the_sdk_server_example_ported(mux: Mux) -> None:
    log, lines = captured_log(LOG_APP)
    app = App(mux, log)
    answers = [f"answer {i} ".encode() * (i + 1) for i in range(3)]
    clients = [Client(a) for a in answers]
    denied: list[bytes] = []

    async def driver() -> None:
        while not app.port:
            await asyncio.sleep(0.002)
        # a client from the denied address: closed without a byte
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", app.port, local_addr=(DENIED, 0)
        )
        try:
            denied.append(await reader.read())
        except ConnectionResetError:
            denied.append(b"")
        writer.close()
        # greeted clients, from 127.0.0.1
        for c in clients:
            sock = CreateTCPSocketProvider().CreateSocket(mux, c, IInstanceLog())
            sock.Connect(f"127.0.0.1:{app.port}")
        while len(app.remote_reasons) < len(clients) or any(c.reason is None for c in clients):
            await asyncio.sleep(0.002)
        assert app.serverSocket is not None
        app.serverSocket.Shutdown()

    task = mux.loop.create_task(driver())
    guard = mux.loop.call_later(20, mux.loop.stop)  # bounds the run should Terminate fail
    mux.Run()  # the SDK's iomux->Run(): returns when the server's SocketShutdown terminates it
    assert not guard.cancelled()
    guard.cancel()
    assert task.done() and task.exception() is None

    assert denied == [b""]
    assert app.listen_results.count(DENIED) == 1
    assert app.listen_results.count("127.0.0.1") == len(clients)
    for c in clients:
        assert c.events == ["connect", "recv b'Hello world'", "send", "SOCKET_SHUTDOWN_NORMAL"]
    # each answer arrived whole (the exact 1024-byte Recv gets what there was at the close)
    assert sorted(hashlib.sha256(r).digest() for r in app.received) == sorted(
        hashlib.sha256(a).digest() for a in answers
    )
    assert app.remote_reasons == [ShutdownReason.SOCKET_SHUTDOWN_BY_PEER] * len(clients)
    assert app.reason is ShutdownReason.SOCKET_SHUTDOWN_NORMAL and app.serverSocket is None
    text = lines.text()
    assert text.count("Data had been sent") == len(clients)
    assert text.count("Received data") == len(clients)
    assert "hexdump 9 bytes" in text and "answer 0" in text


def test_the_sdk_server_example_reports_a_bind_failure(mux: Mux) -> None:
    """The manual's SocketShutdown branch for a failed Bind: the address is in use."""
    log = IInstanceLog()
    first = App(mux, log)
    mux.run_until(lambda: bool(first.port))

    class Second(App):
        def __init__(self, iomux: IIoMux, log: IInstanceLog, port: int) -> None:
            self.iomux, self.log = iomux, log
            self.serverSocket = CreateTCPSocketProvider().CreateSocket(iomux, self, log)
            self.port = 0
            self.reason = None
            self.serverSocket.Bind("127.0.0.1", port)

    second = Second(mux, log, first.port)
    mux.Run()  # Terminate from Second's SocketShutdown
    assert second.reason is ShutdownReason.SOCKET_ADDR_IN_USE and second.serverSocket is None
    assert first.serverSocket is not None
    first.serverSocket.Delete()
