"""DTLS helpers: contexts, the listener's peers, a lossy loopback relay, a hand-driven
client, the handshake wait, and an `IDtls` endpoint over a library UDP socket."""

from __future__ import annotations

import asyncio
import hashlib
import heapq
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


# --------------------------------------------------------------------------- IDtls, simulated


def record_kind(datagram: bytes) -> tuple[int, int]:
    """(content type, epoch) of the first DTLS record of `datagram`: (21, >=1) is an
    encrypted alert (a close_notify after the handshake), (23, 1) application data."""
    return datagram[0], int.from_bytes(datagram[3:5], "big")


def is_client_hello(datagram: bytes) -> bool:
    """Does `datagram` begin with an epoch-0 handshake record holding a ClientHello?"""
    return (
        len(datagram) >= 25 and datagram[0] == 22 and datagram[3:5] == b"\0\0" and datagram[13] == 1
    )


class SimSide(UDtls):
    """One side of two `IDtls` engines on a `SimNet`, recording every callback as
    (name, *args) in `trace` and checking, as it goes, the rules every callback keeps:
    none runs inside another, none but `DtlsSend` while a datagram the engine produced
    is still to go, none after `DtlsConnectionClosed`, none but one
    `DtlsTimerStop` after `DtlsAbortConnect` returned, `DtlsTimerStop` only for a running
    timer. `hook`: (callback name, action) run once, inside the first such callback for
    which `when()` is true; between ("hook", name) and ("return", name) in `trace`."""

    def __init__(self, net: SimNet, name: str) -> None:
        self.net = net
        self.name = name
        self.eng = IDtls.Create(self, name, IInstanceLog(0))
        self.trace: list[tuple[Any, ...]] = []
        self.violations: list[str] = []
        self.timer_due: float | None = None
        self.depth = 0
        self.aborted = False  # DtlsAbortConnect returned
        self.by_app = False  # DtlsClose or DtlsAbortConnect called
        self.data: list[bytes] = []
        self.received: list[bytes] = []  # DTLS datagrams handed to DtlsRecv, in order
        self.hook: tuple[str, Callable[[SimSide], None]] | None = None
        self.when: Callable[[], bool] = lambda: True
        self.peer: SimSide | None = None

    def names(self) -> list[str]:
        return [t[0] for t in self.trace]

    @property
    def connected(self) -> bool:
        return "connected" in self.names()

    @property
    def closed(self) -> int | None:
        for t in self.trace:
            if t[0] == "closed":
                return int(t[1])
        return None

    @property
    def over(self) -> bool:
        """The app knows the association is over (its own close or abort, or the end)."""
        return self.by_app or self.closed is not None

    def timer_running(self) -> bool:
        return self.timer_due is not None

    def _cb(self, name: str, *args: Any) -> None:
        if self.depth:
            self.violations.append(f"{name} inside another callback")
        if self.closed is not None:
            self.violations.append(f"{name} after DtlsConnectionClosed")
        if self.aborted and (name != "timer_stop" or "timer_stop" in self.after_abort()):
            self.violations.append(f"{name} after DtlsAbortConnect")
        if name != "send" and self.unsent():
            self.violations.append(f"{name} while datagrams were still to go to DtlsSend")
        self.trace.append((name, *args))
        hook = self.hook
        if hook is not None and hook[0] == name and self.when():
            self.hook = None
            self.trace.append(("hook", name))
            self.depth += 1
            try:
                hook[1](self)
            finally:
                self.depth -= 1
            self.trace.append(("return", name))

    def unsent(self) -> int:
        """Datagrams the engine produced and has not handed to `DtlsSend` yet."""
        eng = self.eng
        conn = eng._conn
        return len(eng._sendq) + (len(conn._out) if conn is not None else 0)

    def after_abort(self) -> list[str]:
        names = self.names()
        i = names.index("aborted") if "aborted" in names else len(names)
        return names[i + 1 :]

    # calls the test makes at the top level, recorded
    def close(self) -> None:
        self.by_app = True
        self.trace.append(("DtlsClose",))
        self.eng.DtlsClose()

    def abort(self) -> None:
        self.by_app = True
        self.eng.DtlsAbortConnect()
        self.aborted = True
        self.trace.append(("aborted",))

    # UDtls
    def DtlsSend(self, ctx: Any, buf: bytes, len: int) -> None:
        assert ctx == self.name and len == buf.__len__()
        self._cb("send", bytes(buf))
        if self.closed is None and not self.aborted:
            assert self.peer is not None
            self.net.send(self.peer, bytes(buf))

    def DtlsTimerStart(self, ctx: Any, to: int) -> None:
        assert to >= 0
        self.timer_due = self.net.now + to / 1000
        self._cb("timer_start", to)

    def DtlsTimerStop(self, ctx: Any) -> None:
        if self.timer_due is None:
            self.violations.append("DtlsTimerStop with no timer running")
        self.timer_due = None
        self._cb("timer_stop")

    def DtlsSrtpKeys(self, ctx: Any, keys: bytes, profile: str) -> None:
        self._cb("keys", profile)

    def DtlsConnected(self, ctx: Any) -> None:
        self._cb("connected")

    def DtlsRecvApplicationData(self, ctx: Any, buf: bytes, len: int) -> None:
        self.data.append(bytes(buf[:len]))
        self._cb("data", bytes(buf[:len]))

    def DtlsConnectionClosed(self, ctx: Any, error: int) -> None:
        self._cb("closed", error)


class SimNet:
    """Two `SimSide`s on a simulated clock (`now`, seconds): each datagram arrives
    `latency` after it was sent, in order; a side's timer fires at its due time (the
    test's `DtlsTimeout`). Nothing reads a real clock."""

    def __init__(self, latency: float = 0.001) -> None:
        self.now = 0.0
        self.latency = latency
        self.flight: list[tuple[float, int, SimSide, bytes]] = []
        self.seq = 0
        self.c = SimSide(self, "c")
        self.s = SimSide(self, "s")
        self.c.peer, self.s.peer = self.s, self.c
        self.timeouts = 0

    def send(self, dst: SimSide, data: bytes) -> None:
        self.seq += 1
        heapq.heappush(self.flight, (self.now + self.latency, self.seq, dst, data))

    def take(self, dst: SimSide) -> bytes | None:
        """The next datagram on its way to `dst`, taken off the network (None: none)."""
        for item in sorted(self.flight):
            if item[2] is dst:
                self.flight.remove(item)
                heapq.heapify(self.flight)
                return item[3]
        return None

    def step(self, limit: float) -> bool:
        """Deliver the next datagram or fire the next timer, if before `limit`."""
        best: tuple[float, int, SimSide | None, bytes | None] | None = None
        if self.flight:
            best = self.flight[0]
        for side in (self.c, self.s):
            due = side.timer_due
            if due is not None and (best is None or due < best[0]):
                best = (due, 0, side, None)
        if best is None or best[0] > limit:
            return False
        t, _, dst, data = best
        assert dst is not None
        self.now = max(self.now, t)
        if data is None:
            dst.timer_due = None
            self.timeouts += 1
            dst.eng.DtlsTimeout()
        else:
            heapq.heappop(self.flight)
            dst.received.append(data)
            assert dst.eng.DtlsRecv(data, None, "127.0.0.1", 5000)
        return True

    def run(self, until: Callable[[], bool] = lambda: False, seconds: float = 120.0) -> None:
        """Run until `until()` or nothing is left to do within `seconds` from now."""
        limit = self.now + seconds
        while not until() and self.step(limit):
            pass
