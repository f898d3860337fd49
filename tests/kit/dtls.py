"""DTLS helpers: contexts, the listener's peers, a lossy loopback relay, a hand-driven
client, the handshake wait, and an `IDtls` endpoint over a library UDP socket."""

from __future__ import annotations

import asyncio
import hashlib
import socket
from collections.abc import Callable
from typing import Any

from OpenSSL import SSL

from usocket_asyncio import (
    DTLS_OPTION_USE_SRTP,
    CreateUDPSocketProvider,
    IDtls,
    IInstanceLog,
    IPaddr,
    ISocket,
    ISocketProvider,
    ITimer,
    ShutdownReason,
    UDtls,
    USocket,
    UTimer,
)
from usocket_asyncio._context import SocketContext, default_server_cert
from usocket_asyncio._dtls import DTLSSocket

from .certs import Server, make_ctx
from .loop import Mux, Recorder, wake

SRTP = DTLS_OPTION_USE_SRTP
OWN_FP = hashlib.sha256(default_server_cert().leaf_der).digest()
"""The SHA-256 fingerprint of the library's own default certificate."""


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


def dsock(s: ISocket) -> DTLSSocket:
    assert isinstance(s, DTLSSocket)
    return s


def wait_connected(mux: Mux, srv: Server, crec: Recorder, timeout: float = 10) -> ISocket:
    """Run until the client's handshake ended; it connected, and the server accepted."""
    mux.run_until(
        lambda: crec.shutdown is not None or ("connect" in crec.names() and 0 in srv.socks),
        timeout,
        "the handshake",
    )
    assert crec.names() == ["connect"], crec.events
    assert srv.recs[0].names() == ["accept"], srv.recs[0].events
    return srv.socks[0]


def connected_udp(mux: Mux, log: IInstanceLog, port: int) -> tuple[ISocket, Recorder]:
    """A library UDP socket connected to 127.0.0.1:`port` (its SocketConnectComplete came)."""
    urec = Recorder("udp")
    udp = CreateUDPSocketProvider().CreateSocket(mux, urec, log)
    urec.in_call = True
    try:
        udp.Connect(f"127.0.0.1:{port}")
    finally:
        urec.in_call = False
    mux.run_until(lambda: urec.events != [])
    assert urec.names() == ["connect"]
    return udp, urec


def answer_once(srv: Server, reply: bytes) -> None:
    """Each peer `srv` accepts reads one datagram, sends `reply` and shuts down."""

    def on_accept(sock: ISocket) -> None:
        srv.socks[0] = sock
        sock.Recv(bytearray(2048))

    def on_recv(sock: ISocket, buf: Any, n: int) -> None:
        sock.Send(reply)
        sock.Shutdown()

    def on_listen(sock: ISocket, addr: str, port: int) -> None:
        srv._on_listen(sock, addr, port)
        srv.recs[-1].hooks["accept"] = on_accept
        srv.recs[-1].hooks["recv"] = on_recv

    srv.lrec.hooks["listen"] = on_listen


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
        wake()
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


class Endpoint(USocket, UDtls, UTimer):
    """A media endpoint as an app writes one: one UDP socket, an IDtls, an ITimer; the
    socket's datagrams go to `DtlsRecv` first and, when it says no, to the app."""

    def __init__(
        self,
        mux: Mux,
        log: IInstanceLog,
        server: bool,
        options: int = SRTP,
        fingerprint: bytes | None = OWN_FP,
        peer_port: int | None = None,
        recv_size: int = 2048,
    ) -> None:
        """`recv_size`: the bytes of each `Recv` buffer (a larger datagram is cut)."""
        self.mux = mux
        self.recv_size = recv_size
        self.server = server
        self.options = options
        self.fingerprint = fingerprint
        self.udp = CreateUDPSocketProvider().CreateSocket(mux, self, log)
        self.timer = ITimer(mux, self)
        self.dtls = IDtls.Create(self, "media", log)
        self.peer: tuple[IPaddr | str, int] | None = None
        if peer_port is not None:
            self.peer = ("127.0.0.1", peer_port)
        self.port = 0
        self.connected = False
        self.keys: tuple[bytes, str] | None = None
        self.received: list[bytes] = []
        self.other: list[bytes] = []
        self.closed: int | None = None
        self.shutdown: ShutdownReason | None = None
        self.udp.Bind("127.0.0.1", 0)

    def connect(self) -> None:
        assert self.peer is not None
        self.dtls.DtlsConnect(self.server, self.options, str(self.peer[0]), None, self.fingerprint)

    # USocket
    def SocketBindResult(self, socket: ISocket, localAddr: str, localPort: int) -> None:
        self.port = localPort
        socket.Recv(bytearray(self.recv_size))
        wake()

    def SocketRecvFromResult(
        self, socket: ISocket, buf: Any, len: int, srcAddr: IPaddr, srcPort: int
    ) -> None:
        if self.peer is None:
            self.peer = (srcAddr, srcPort)
            self.connect()
        if not self.dtls.DtlsRecv(buf, len, srcAddr, srcPort):
            self.other.append(bytes(buf[:len]))
        socket.Recv(buf)
        wake()

    def SocketShutdown(self, socket: ISocket, reason: ShutdownReason) -> None:
        self.shutdown = reason
        wake()

    # UTimer
    def TimerOnTimeout(self, timer: ITimer) -> None:
        self.dtls.DtlsTimeout()

    # UDtls
    def DtlsSend(self, ctx: Any, buf: bytes, len: int) -> None:
        assert self.peer is not None
        self.udp.SendTo(buf, len, self.peer[0], self.peer[1])

    def DtlsTimerStart(self, ctx: Any, to: int) -> None:
        self.timer.Start(to)

    def DtlsTimerStop(self, ctx: Any) -> None:
        self.timer.Cancel()

    def DtlsConnected(self, ctx: Any) -> None:
        self.connected = True
        wake()

    def DtlsSrtpKeys(self, ctx: Any, keys: bytes, profile: str) -> None:
        self.keys = (keys, profile)
        wake()

    def DtlsRecvApplicationData(self, ctx: Any, buf: bytes, len: int) -> None:
        self.received.append(bytes(buf[:len]))
        wake()

    def DtlsConnectionClosed(self, ctx: Any, error: int) -> None:
        self.closed = error
        self.timer.Cancel()
        wake()

    def close(self) -> None:
        self.timer.Cancel()
        self.udp.Delete()
