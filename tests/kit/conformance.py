"""One generic checker that every stream socket kind runs through.

A kind is described by a `StreamKind`: how to make its provider and contexts, what to
`Bind` and how to turn the `SocketBindResult` into a `Connect` address, and (optional)
how to open a raw peer that can half-close or reset. TCP over IPv4 and IPv6 and local
sockets plug in in tests/test_conformance.py; TLS plugs in the same way with its
contexts (and no raw peer, since a raw TCP peer cannot speak TLS).

Each `check_*` function runs one behaviour of API.md on a `Mux` (tests/conftest.py)
and asserts what a user would check: bytes intact (hashed), callbacks in the right
order, the right `ShutdownReason`, nothing after `SocketShutdown`, and no callback
inside the call that caused it.
"""

from __future__ import annotations

import hashlib
import os
import random
import socket
import ssl
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import usocket_asyncio as u
from usocket_asyncio import (
    IInstanceLog,
    ISocket,
    ISocketContext,
    ISocketProvider,
    ShutdownReason,
    SocketModeError,
)
from usocket_asyncio._context import SocketContext

from .loop import ALL_LOG_FLAGS, InstanceRecorder, Mux, Recorder

ContextMaker = Callable[[ISocketProvider, IInstanceLog], ISocketContext | None]
"""Makes a kind's server or client context from its provider (None: no context)."""


def no_context(prov: ISocketProvider, log: IInstanceLog) -> ISocketContext | None:
    return None


@dataclass
class StreamKind:
    """How to run the conformance checks on one kind of stream socket."""

    name: str
    provider: Callable[[], ISocketProvider]
    bind_args: Callable[[str], tuple[str | None, int]]
    """Given a short temp dir, the (localAddr, localPort) to Bind."""
    connect_address: Callable[[str, int], str]
    """From SocketBindResult's (addr, port), the string to Connect to."""
    use_ipv6: bool = False
    server_context: ContextMaker = no_context
    client_context: ContextMaker = no_context
    server_name: str | None = None
    raw_connect: Callable[[str], tuple[int, Any]] | None = None
    """Given the Connect string: (family, sockaddr) for a raw stdlib peer; None for TLS."""
    extra: dict[str, Any] = field(default_factory=dict)
    flag: int = 0
    """The log flag the kind's sockets write under."""
    loopback: str | None = None
    """The loopback address of an IP kind; None for local sockets."""


@dataclass
class Pair:
    """A connected pair of library sockets: the listener, the accepted and the client."""

    listener: ISocket
    lrec: Recorder
    server: ISocket
    srec: Recorder
    client: ISocket
    crec: Recorder
    address: str


def call(rec: Recorder, fn: Callable[..., Any], *args: Any) -> Any:
    """Call into the library with `rec` marked as inside a call (callbacks then fail).
    Also for calls made from inside a callback: the mark is restored afterwards."""
    was, rec.in_call = rec.in_call, True
    try:
        return fn(*args)
    finally:
        rec.in_call = was


def raises_mode_error(fn: Callable[..., Any], *args: Any, what: str = "") -> str:
    """Call `fn(*args)`, which must raise SocketModeError at once: its message."""
    try:
        fn(*args)
    except SocketModeError as e:
        return str(e)
    raise AssertionError(f"{getattr(fn, '__name__', fn)}{what} did not raise SocketModeError")


def listen(
    mux: Mux,
    log: IInstanceLog,
    kind: StreamKind,
    tmp: str,
    srec_factory: Callable[[], Recorder] = Recorder,
    lrec: Recorder | None = None,
) -> tuple[ISocket, Recorder, list[tuple[ISocket, Recorder]], str]:
    """A listening library socket (its user `lrec`, a fresh Recorder by default) that
    accepts every peer with a fresh Recorder.

    Returns the listener, its recorder, the list the accepted (socket, recorder) pairs
    are appended to (at SocketAcceptComplete), and the address to connect to.
    """
    prov = kind.provider()
    ctx = kind.server_context(prov, log)
    lrec = lrec or Recorder("listener")
    accepted: list[tuple[ISocket, Recorder]] = []

    def on_listen(sock: ISocket, addr: str, port: int) -> None:
        rec = srec_factory()
        rec.hooks.setdefault("accept", lambda s: accepted.append((s, rec)))
        sock.Accept(rec)

    lrec.hooks["bind"] = lambda sock, a, p: sock.Listen()
    lrec.hooks["listen"] = on_listen
    listener = prov.CreateSocket(mux, lrec, log, kind.use_ipv6, ctx)
    addr, port = kind.bind_args(tmp)
    call(lrec, listener.Bind, addr, port)
    mux.run_until(lambda: "bind" in lrec.names() or lrec.shutdown is not None, what="bind")
    assert lrec.names() == ["bind"], lrec.events
    _, baddr, bport = lrec.events[0]
    return listener, lrec, accepted, kind.connect_address(baddr, bport)


def connect(
    mux: Mux, log: IInstanceLog, kind: StreamKind, address: str, rec: Recorder | None = None
) -> tuple[ISocket, Recorder]:
    """A library client socket, Connect called (not yet waited for)."""
    prov = kind.provider()
    ctx = kind.client_context(prov, log)
    crec = rec or Recorder("client")
    sock = prov.CreateSocket(mux, crec, log, kind.use_ipv6, ctx)
    call(crec, sock.Connect, address, kind.server_name)
    return sock, crec


def make_pair(mux: Mux, log: IInstanceLog, kind: StreamKind, tmp: str) -> Pair:
    """Listener + connected client + accepted server socket."""
    listener, lrec, accepted, address = listen(mux, log, kind, tmp)
    client, crec = connect(mux, log, kind, address)
    mux.run_until(lambda: bool(accepted) and "connect" in crec.names(), what="connect+accept")
    server, srec = accepted[0]
    return Pair(listener, lrec, server, srec, client, crec, address)


def close_pair(mux: Mux, p: Pair) -> None:
    """Delete all three sockets; check the recorders saw no contract violation."""
    for sock, rec in ((p.client, p.crec), (p.server, p.srec), (p.listener, p.lrec)):
        try:
            sock.Delete()
        except SocketModeError:
            pass  # deleted by the test already
        assert not rec.violations, rec.violations


class Pump:
    """Drives one side: sends `data` in seeded random chunks and receives into random
    exact or partial Recvs, until `expect` bytes arrived."""

    def __init__(self, sock: ISocket, rec: Recorder, data: bytes, expect: int, seed: int) -> None:
        self.sock, self.rec, self.data, self.expect = sock, rec, data, expect
        self.rng = random.Random(seed)
        self.off = 0
        self.sends = 0
        rec.hooks["recv"] = self._on_recv
        rec.hooks["send"] = self._on_send

    def start(self) -> None:
        self._post_recv()
        self._send_some()

    def _post_recv(self) -> None:
        left = self.expect - len(self.rec.received)
        if left <= 0:
            return
        n = min(left, self.rng.choice([1, 7, 512, 1500, 16384, 65536, 200000]))
        partial = self.rng.random() < 0.5
        buf = bytearray(n + self.rng.randrange(0, 3))
        call(self.rec, self.sock.Recv, buf, n, partial)

    def _on_recv(self, sock: ISocket, buf: Any, n: int) -> None:
        self._post_recv()

    def _send_some(self) -> None:
        # keep at most a few sends in flight, like a careful SDK app
        while self.off < len(self.data) and self.sends - self.rec.sends_done < 4:
            n = self.rng.choice([1, 100, 1400, 8192, 65536, 300000])
            chunk = self.data[self.off : self.off + n]
            # reuse one mutable buffer for every send: the library must have copied it
            buf = bytearray(chunk)
            call(self.rec, self.sock.Send, buf, len(chunk))
            buf[:] = b"\xee" * len(buf)
            self.off += len(chunk)
            self.sends += 1

    def _on_send(self, sock: ISocket) -> None:
        self._send_some()

    def done(self) -> bool:
        return (
            len(self.rec.received) >= self.expect
            and self.rec.sends_done == self.sends
            and self.off == len(self.data)
        )


def sha(b: bytes | bytearray) -> str:
    return hashlib.sha256(b).hexdigest()


# --------------------------------------------------------------------------- the checks


def check_bulk_both_ways(
    mux: Mux, log: IInstanceLog, kind: StreamKind, tmp: str, size: int = 3_000_000, seed: int = 1
) -> None:
    """Megabytes both ways at once, random chunking and Recv sizes: hashes match,
    every Send got exactly one SendResult."""
    p = make_pair(mux, log, kind, tmp)
    rng = random.Random(seed)
    a = rng.randbytes(size)
    b = rng.randbytes(size + 12345)
    pa = Pump(p.client, p.crec, a, len(b), seed + 1)
    pb = Pump(p.server, p.srec, b, len(a), seed + 2)
    pa.start()
    pb.start()
    mux.run_until(lambda: pa.done() and pb.done(), timeout=60, what="bulk transfer")
    assert sha(p.crec.received) == sha(b)
    assert sha(p.srec.received) == sha(a)
    assert p.crec.sends_done == pa.sends and p.srec.sends_done == pb.sends
    # a clean end: client shuts down, server sees BY_PEER, client NORMAL
    call(p.crec, p.client.Shutdown)
    p.srec.hooks["recv"] = lambda *a: None
    call(p.srec, p.server.Recv, bytearray(10))
    mux.run_until(
        lambda: p.crec.shutdown is not None and p.srec.shutdown is not None, what="shutdown"
    )
    assert p.crec.shutdown is ShutdownReason.SOCKET_SHUTDOWN_NORMAL
    assert p.srec.shutdown is ShutdownReason.SOCKET_SHUTDOWN_BY_PEER
    assert p.crec.names()[-1] == "shutdown" and p.srec.names()[-1] == "shutdown"
    close_pair(mux, p)


def check_exact_and_partial(mux: Mux, log: IInstanceLog, kind: StreamKind, tmp: str) -> None:
    """An exact Recv waits for all its bytes; a partial one completes with what is there;
    queued Recvs complete in order."""
    p = make_pair(mux, log, kind, tmp)
    b1, b2, b3 = bytearray(10), bytearray(100), bytearray(5)
    call(p.srec, p.server.Recv, b1, 10)  # exact
    call(p.srec, p.server.Recv, b2, 100, True)  # partial
    call(p.srec, p.server.Recv, b3, 5)  # exact
    call(p.crec, p.client.Send, b"0123456")
    mux.run_ready()
    assert "recv" not in p.srec.names(), "an exact Recv completed early"
    call(p.crec, p.client.Send, b"789abc")
    mux.run_until(lambda: p.srec.names().count("recv") >= 2, what="two recvs")
    recvs = [e for e in p.srec.events if e[0] == "recv"]
    assert recvs[0] == ("recv", 10)
    assert bytes(b1) == b"0123456789"
    assert recvs[1] == ("recv", 3) and bytes(b2[:3]) == b"abc"
    call(p.crec, p.client.Send, b"VWXYZ")
    mux.run_until(lambda: p.srec.names().count("recv") == 3, what="third recv")
    assert bytes(b3) == b"VWXYZ"
    assert p.srec.received == b"0123456789abcVWXYZ"
    close_pair(mux, p)


def check_recv_cancel(mux: Mux, log: IInstanceLog, kind: StreamKind, tmp: str) -> None:
    """RecvCancel: one SocketRecvCanceled per pending buffer, in order, after the call;
    bytes already in a cancelled buffer are not lost."""
    p = make_pair(mux, log, kind, tmp)
    b1, b2 = bytearray(8), bytearray(4)
    call(p.srec, p.server.Recv, b1, 8)
    call(p.srec, p.server.Recv, b2, 4)
    call(p.crec, p.client.Send, b"abc")
    mux.run_ready()
    call(p.srec, p.server.RecvCancel)
    assert "canceled" not in p.srec.names()
    mux.run_until(lambda: p.srec.names().count("canceled") == 2, what="cancel callbacks")
    cancels = [e[1] for e in p.srec.events if e[0] == "canceled"]
    assert cancels[0] is b1 and cancels[1] is b2
    call(p.crec, p.client.Send, b"defgh")
    b3 = bytearray(8)
    call(p.srec, p.server.Recv, b3, 8)
    mux.run_until(lambda: "recv" in p.srec.names(), what="recv after cancel")
    assert bytes(b3) == b"abcdefgh"
    close_pair(mux, p)


def check_set_user(mux: Mux, log: IInstanceLog, kind: StreamKind, tmp: str) -> None:
    """SetUser mid-stream: later callbacks go to the new user only."""
    p = make_pair(mux, log, kind, tmp)
    call(p.srec, p.server.Recv, bytearray(3), 3)
    call(p.crec, p.client.Send, b"one")
    mux.run_until(lambda: "recv" in p.srec.names())
    other = Recorder("other")
    call(p.srec, p.server.SetUser, other)
    call(other, p.server.Recv, bytearray(3), 3)
    call(p.crec, p.client.Send, b"two")
    mux.run_until(lambda: "recv" in other.names())
    assert other.received == b"two" and p.srec.received == b"one"
    call(p.crec, p.client.Shutdown)
    mux.run_until(lambda: other.shutdown is not None)
    assert p.srec.shutdown is None and other.shutdown is ShutdownReason.SOCKET_SHUTDOWN_BY_PEER
    close_pair(mux, p)


def check_send_before_connect(mux: Mux, log: IInstanceLog, kind: StreamKind, tmp: str) -> None:
    """Send right after Connect is cached and goes out after SocketConnectComplete;
    SocketSendResult follows SocketConnectComplete."""
    listener, _lrec, accepted, address = listen(mux, log, kind, tmp)
    crec = Recorder("client")
    prov = kind.provider()
    sock = prov.CreateSocket(mux, crec, log, kind.use_ipv6, kind.client_context(prov, log))
    call(crec, sock.Connect, address, kind.server_name)
    buf = bytearray(b"hello before connect")
    call(crec, sock.Send, buf)
    buf[:] = b"X" * len(buf)  # reuse at once: the library must have taken a copy
    call(crec, sock.Send, b"!")
    mux.run_until(lambda: bool(accepted) and crec.sends_done == 2)
    assert crec.names()[:3] == ["connect", "send", "send"]
    server, srec = accepted[0]
    call(srec, server.Recv, bytearray(21), 21)
    mux.run_until(lambda: "recv" in srec.names())
    assert srec.received == b"hello before connect!"
    for s in (sock, server, listener):
        s.Delete()
    assert not crec.violations and not srec.violations


def check_flush_on_shutdown(mux: Mux, log: IInstanceLog, kind: StreamKind, tmp: str) -> None:
    """Shutdown right after a big Send: the peer gets every byte, then BY_PEER; we get
    every SendResult, then SocketShutdown(NORMAL); Send after Shutdown is ignored."""
    p = make_pair(mux, log, kind, tmp)
    data = random.Random(7).randbytes(4_000_000)
    call(p.crec, p.client.Send, data)
    call(p.crec, p.client.Shutdown)
    call(p.crec, p.client.Send, b"ignored")
    Pump(p.server, p.srec, b"", len(data) + 100, 3).start()
    mux.run_until(lambda: p.crec.shutdown is not None and p.srec.shutdown is not None, timeout=30)
    assert sha(p.srec.received) == sha(data)
    assert p.crec.names() == ["connect", "send", "shutdown"]
    assert p.crec.shutdown is ShutdownReason.SOCKET_SHUTDOWN_NORMAL
    assert p.srec.shutdown is ShutdownReason.SOCKET_SHUTDOWN_BY_PEER
    close_pair(mux, p)


SLOW_READ = 16 * 1024
"""Bytes the slow reader of `check_shutdown_slow_reader` takes per Recv."""
SLOW_PAUSE = 0.015
"""Seconds it rests between two Recvs (16 KiB / 15 ms: about 1 MiB/s, slower under load)."""
SMALL_KERNEL_BUFFER = 64 * 1024
"""SO_SNDBUF/SO_RCVBUF of both ends there (the kernel doubles it)."""


def set_kernel_buffers(sock: ISocket, size: int) -> None:
    """Fix the kernel's send and receive buffers of a connected library socket (no
    autotuning), so that what a test sends beyond them waits in the library."""
    raw = sock._raw_socket()  # type: ignore[attr-defined]
    assert raw is not None, "a connected socket has a kernel socket"
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def check_shutdown_slow_reader(mux: Mux, log: IInstanceLog, kind: StreamKind, tmp: str) -> None:
    """Shutdown with megabytes queued to a slow reader: every byte arrives (hash equal),
    then BY_PEER; the sender gets its SendResult and NORMAL only after all left, however
    long the peer takes: here its reading lasts longer than the wait for the peer's close
    (LINGER_TIMEOUT, TLS SHUTDOWN_TIMEOUT) and than two stall limits, the limits a drain
    with a fixed deadline would use, and at the sender's end the reader has all but what
    its own socket may hold (TLS answers close_notify with up to HOLD_LIMIT unread; TCP
    reads the FIN only after the last byte).

    The kernel buffers of both ends are made small, so nearly all of the stream waits in
    the library while the reader takes it: were they large, the library would hand the
    stream to the kernel at once and its wait for the peer's close would end (rightly)
    while the reader still reads. The reading lasts the stream's size over the reader's
    pace (16 KiB per 15 ms at most), sized to outlast those limits by 0.3 s."""
    from usocket_asyncio._stream import HOLD_LIMIT, LINGER_TIMEOUT
    from usocket_asyncio._tls import SHUTDOWN_TIMEOUT

    longest = SHUTDOWN_TIMEOUT if kind.flag == int(u.LogFlags.LOG_TLS) else LINGER_TIMEOUT
    stall = 0.8
    p = make_pair(mux, log, kind, tmp)
    set_stall_limit(p.client, stall)
    set_kernel_buffers(p.client, SMALL_KERNEL_BUFFER)
    set_kernel_buffers(p.server, SMALL_KERNEL_BUFFER)
    pace = SLOW_READ / SLOW_PAUSE  # bytes per second, at most
    data = random.Random(17).randbytes(int((max(longest, 2 * stall) + 0.3) * pace))
    buf = bytearray(SLOW_READ)
    times: dict[str, float] = {}

    def again(s: ISocket) -> None:
        if p.srec.shutdown is None:
            s.Recv(buf, None, True)

    def slowly(s: ISocket, b: Any, n: int) -> None:
        if len(p.srec.received) == len(data):
            times["last byte"] = mux.loop.time()
        mux.loop.call_later(SLOW_PAUSE, again, s)

    p.srec.hooks["recv"] = slowly
    unread = []
    p.crec.hooks["shutdown"] = lambda s, r: unread.append(len(data) - len(p.srec.received))
    times["start"] = mux.loop.time()
    call(p.crec, p.client.Send, data)
    call(p.crec, p.client.Shutdown)
    call(p.srec, p.server.Recv, buf, None, True)
    mux.run_until(
        lambda: p.crec.shutdown is not None and p.srec.shutdown is not None,
        timeout=40,
        what="the slow reader's last byte and both ends",
    )
    assert sha(p.srec.received) == sha(data), f"{len(p.srec.received)} of {len(data)} bytes"
    assert p.crec.names() == ["connect", "send", "shutdown"], p.crec.names()
    assert p.crec.shutdown is ShutdownReason.SOCKET_SHUTDOWN_NORMAL
    assert p.srec.shutdown is ShutdownReason.SOCKET_SHUTDOWN_BY_PEER
    reading = times["last byte"] - times["start"]
    assert reading > max(longest, 2 * stall), f"the reader took only {reading:.2f} s"
    # the limit plus one read; a sender ending at a fixed deadline leaves ~0.3 s unread
    assert unread[0] <= HOLD_LIMIT + 64 * 1024, f"the sender ended with {unread[0]} bytes unread"
    close_pair(mux, p)


def set_stall_limit(sock: ISocket, seconds: float) -> None:
    """Shorten how long `Shutdown` waits for a peer that takes nothing (per socket)."""
    try:
        sock._stall_limit = seconds  # type: ignore[attr-defined]
    except AttributeError:  # a build without it: the checks then show what it does
        pass


def check_shutdown_stalled_reader(mux: Mux, log: IInstanceLog, kind: StreamKind, tmp: str) -> None:
    """Shutdown while the peer reads nothing at all: after the stall limit the socket
    gives up with SOCKET_LOST, and no SendResult comes for the bytes that never left."""
    p = make_pair(mux, log, kind, tmp)
    set_stall_limit(p.client, 0.4)
    call(p.crec, p.client.Send, b"first")
    mux.run_until(lambda: p.crec.sends_done == 1, what="the first send")
    data = random.Random(19).randbytes(24 * 1024 * 1024)  # more than the kernel buffers hold
    call(p.crec, p.client.Send, data)
    call(p.crec, p.client.Shutdown)
    mux.run_until(lambda: p.crec.shutdown is not None, timeout=20, what="giving up")
    mux.run_ready()
    assert p.crec.names() == ["connect", "send", "shutdown"], p.crec.names()
    assert p.crec.shutdown is ShutdownReason.SOCKET_LOST
    # the peer, reading now, gets a prefix of the stream and never all of it
    call(p.srec, p.server.Recv, bytearray(1 << 20), None, True)
    p.srec.hooks["recv"] = lambda s, b, n: s.Recv(bytearray(1 << 20), None, True)
    mux.run_until(lambda: p.srec.shutdown is not None, timeout=20, what="the peer's end")
    got = bytes(p.srec.received)
    assert got.startswith(b"first") and len(got) < 5 + len(data)
    assert got[5:] == data[: len(got) - 5]
    close_pair(mux, p)


async def _raw_peer(mux: Mux, kind: StreamKind, address: str) -> socket.socket:
    assert kind.raw_connect is not None
    family, sockaddr = kind.raw_connect(address)
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setblocking(False)
    await mux.loop.sock_connect(s, sockaddr)
    return s


def check_half_close_by_peer(mux: Mux, log: IInstanceLog, kind: StreamKind, tmp: str) -> None:
    """A raw peer sends and half-closes: every byte reaches the app first (a pending exact
    Recv gets what there is, shorter), then SOCKET_SHUTDOWN_BY_PEER; the app can still
    send before it shuts down."""
    listener, _lrec, accepted, address = listen(mux, log, kind, tmp)
    raw = mux.loop.run_until_complete(_raw_peer(mux, kind, address))
    mux.run_until(lambda: bool(accepted))
    server, srec = accepted[0]
    payload = random.Random(3).randbytes(200_000)
    mux.loop.run_until_complete(mux.loop.sock_sendall(raw, payload + b"tail"))
    raw.shutdown(socket.SHUT_WR)
    mux.run_for(0.1)
    # nothing was read yet: the bytes wait for Recv, and so does the shutdown
    assert srec.shutdown is None
    call(srec, server.Recv, bytearray(len(payload)), len(payload))
    call(srec, server.Recv, bytearray(100), 100)  # exact, can only get 4
    mux.run_until(lambda: srec.shutdown is not None)
    assert srec.events[-3:] == [
        ("recv", len(payload)),
        ("recv", 4),
        ("shutdown", ShutdownReason.SOCKET_SHUTDOWN_BY_PEER),
    ]
    assert sha(srec.received) == sha(payload + b"tail")
    raw.close()
    server.Delete()
    listener.Delete()
    assert not srec.violations


def check_reset_by_peer(mux: Mux, log: IInstanceLog, kind: StreamKind, tmp: str) -> None:
    """A peer that resets (SO_LINGER 0): bytes already read go to pending Recvs, then
    SOCKET_LOST, exactly once."""
    listener, _lrec, accepted, address = listen(mux, log, kind, tmp)
    raw = mux.loop.run_until_complete(_raw_peer(mux, kind, address))
    mux.run_until(lambda: bool(accepted))
    server, srec = accepted[0]
    got = bytearray(100)
    call(srec, server.Recv, got, 100)
    mux.loop.run_until_complete(mux.loop.sock_sendall(raw, b"partial data"))
    mux.run_for(0.05)
    # unread data in the raw peer's receive queue plus SO_LINGER 0 makes close() a reset
    call(srec, server.Send, b"x" * 1000)
    mux.run_for(0.05)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    raw.close()
    mux.run_until(lambda: srec.shutdown is not None)
    lost = srec.shutdown
    expected: tuple[ShutdownReason, ...] = (ShutdownReason.SOCKET_LOST,)
    if kind.extra.get("reset_may_look_like_close"):
        expected += (ShutdownReason.SOCKET_SHUTDOWN_BY_PEER,)
    assert lost in expected, lost
    assert ("recv", 12) in srec.events and srec.received == b"partial data"
    assert srec.names().count("shutdown") == 1 and srec.names()[-1] == "shutdown"
    server.Delete()
    listener.Delete()
    assert not srec.violations


def check_delete_inside_callbacks(mux: Mux, log: IInstanceLog, kind: StreamKind, tmp: str) -> None:
    """Delete() inside each callback: no further callback, nothing in the exception handler."""
    # inside SocketConnectComplete
    _listener, lrec, accepted, address = listen(mux, log, kind, tmp)
    rec = Recorder("c1")
    rec.hooks["connect"] = lambda s: s.Delete()
    connect(mux, log, kind, address, rec)
    mux.run_until(lambda: "connect" in rec.names())
    mux.run_ready()
    assert rec.names() == ["connect"]
    # inside SocketRecvResult with more data and a SendResult due
    rec2 = Recorder("c2")
    s2, _ = connect(mux, log, kind, address, rec2)
    mux.run_until(lambda: "connect" in rec2.names() and len(accepted) >= 2)
    server, srec = accepted[-1]
    call(rec2, s2.Send, b"a" * 10)
    call(rec2, s2.Recv, bytearray(1), 1)
    call(rec2, s2.Recv, bytearray(1), 1)

    def on_recv(s: ISocket, buf: Any, n: int) -> None:
        s.Send(b"due")
        s.Delete()

    rec2.hooks["recv"] = on_recv
    call(srec, server.Send, b"xy")
    mux.run_until(lambda: "recv" in rec2.names())
    mux.run_ready()
    assert rec2.names().count("recv") == 1 and rec2.names()[-1] == "recv"
    # inside SocketSendResult
    rec3 = Recorder("c3")
    s3, _ = connect(mux, log, kind, address, rec3)
    mux.run_until(lambda: "connect" in rec3.names())
    rec3.hooks["send"] = lambda s: s.Delete()
    call(rec3, s3.Send, b"1")
    call(rec3, s3.Send, b"2")
    mux.run_until(lambda: "send" in rec3.names())
    mux.run_ready()
    assert rec3.names() == ["connect", "send"]
    # inside SocketShutdown (the usual SDK pattern), and inside SocketAcceptComplete
    rec4 = Recorder("c4")
    rec4.hooks["shutdown"] = lambda s, r: s.Delete()
    s4, _ = connect(mux, log, kind, address, rec4)
    mux.run_until(lambda: "connect" in rec4.names())
    call(rec4, s4.Shutdown)
    mux.run_until(lambda: rec4.shutdown is not None)
    # inside SocketListenResult: deny by deleting nothing, accept then delete the listener
    lrec.hooks["listen"] = lambda s, a, p: (s.Accept(None), s.Delete())
    rec5 = Recorder("c5")
    connect(mux, log, kind, address, rec5)
    mux.run_until(lambda: rec5.shutdown is not None or "connect" in rec5.names(), timeout=10)
    mux.run_for(0.1)
    n_events = len(lrec.events)
    mux.run_for(0.05)
    assert len(lrec.events) == n_events
    for r in (rec, rec2, rec3, rec4, lrec):
        assert not r.violations, r.violations
    for s, _ in accepted:
        try:
            s.Delete()
        except SocketModeError:
            pass


def check_callbacks_set_on_the_instance(
    mux: Mux, log: IInstanceLog, kind: StreamKind, tmp: str
) -> None:
    """Callbacks set on the user object, not its class (`user.SocketSendResult = fn`),
    are called as methods are: on the listener (bind, listen), the client (connect,
    send, recv), the accepted socket (accept, send, recv, canceled), and a user set by
    `SetUser`, also one whose `SocketSendResult` is set after the socket took it."""
    _lsock, lrec, accepted, address = listen(
        mux, log, kind, tmp, InstanceRecorder, InstanceRecorder("listener")
    )
    crec = InstanceRecorder("client")
    client, _ = connect(mux, log, kind, address, crec)
    mux.run_until(lambda: bool(accepted) and "connect" in crec.names(), what="connect+accept")
    assert lrec.names() == ["bind", "listen"], lrec.events
    server, srec = accepted[0]
    assert srec.names() == ["accept"]
    call(crec, client.Send, b"ping")
    call(crec, client.Recv, bytearray(4))
    call(srec, server.Recv, bytearray(4))
    srec.hooks["recv"] = lambda s, b, n: s.Send(b"pong")
    mux.run_until(lambda: crec.received == b"pong" and srec.sends_done == 1, what="ping-pong")
    assert srec.received == b"ping" and crec.sends_done == 1
    first = bytearray(8)
    call(srec, server.Recv, first)
    call(srec, server.RecvCancel)
    mux.run_until(lambda: "canceled" in srec.names(), what="SocketRecvCanceled")
    assert srec.events[-1] == ("canceled", first)
    # SetUser: a user whose callbacks are on the instance, SocketSendResult set only
    # after the socket took it (and after a first Send, which hears nothing); SetUser
    # again looks at once
    other = InstanceRecorder("other")
    del other.SocketSendResult
    call(srec, server.SetUser, other)
    call(other, server.Send, b"1")
    mux.run_ready()
    other.SocketSendResult = lambda s: other._rec("late")  # type: ignore[method-assign,assignment]
    call(other, server.SetUser, other)
    other.hooks["recv"] = lambda s, b, n: s.Send(b"2")
    call(other, server.Recv, bytearray(3))
    call(crec, client.Recv, bytearray(2))
    call(crec, client.Send, b"abc")
    mux.run_until(lambda: other.names() == ["recv", "late"], what="the late SocketSendResult")
    mux.run_until(lambda: crec.received == b"pong12", what="the bytes of both Sends")
    for r in (lrec, crec, srec, other):
        assert not r.violations, (r.name, r.violations)
    for sock in (client, server, _lsock):
        sock.Delete()


def socket_calls(s: ISocket, address: str, host: str) -> dict[str, Callable[[], object]]:
    """Every public call of a socket (with arguments that would be fine on its thread or
    raise for the mode only after the thread check)."""
    return {
        "Connect": lambda: s.Connect(address),
        "Bind": lambda: s.Bind(host, 0),
        "Listen": s.Listen,
        "Accept": lambda: s.Accept(None),
        "Send": lambda: s.Send(b"x"),
        "SendTo": lambda: s.SendTo(b"x", None, host, 9),
        "Recv": lambda: s.Recv(bytearray(4)),
        "RecvCancel": s.RecvCancel,
        "SetUser": lambda: s.SetUser(Recorder("never")),
        "GetLocalAddress": s.GetLocalAddress,
        "SetQoS": lambda: s.SetQoS(u.QosTrafficType(0)),
        "Shutdown": s.Shutdown,
        "Delete": s.Delete,
    }


def check_calls_from_a_thread_inside_a_callback(
    mux: Mux, log: IInstanceLog, kind: StreamKind, tmp: str
) -> None:
    """Every public call of a socket, made from a thread the app starts inside one of
    the socket's callbacks while the loop's thread waits in it (SocketRecvResult,
    SocketSendResult, a listener's SocketListenResult), raises SocketModeError and
    changes nothing."""
    from .streams import from_a_thread_here, refused

    p = make_pair(mux, log, kind, tmp)
    host = kind.loopback or "127.0.0.1"
    said: dict[str, dict[str, str]] = {}

    def inside(where: str, s: ISocket) -> None:
        said[where] = from_a_thread_here(socket_calls(s, p.address, host))

    p.srec.hooks["recv"] = lambda s, b, n: inside("recv", s)
    p.crec.hooks["send"] = lambda s: inside("send", s)
    p.lrec.hooks["listen"] = lambda s, a, port: inside("listen", s)
    call(p.srec, p.server.Recv, bytearray(4))
    call(p.crec, p.client.Send, b"abcd")
    c2, c2rec = connect(mux, log, kind, p.address)
    mux.run_until(lambda: len(said) == 3, what="the three callbacks")
    mux.run_until(lambda: c2rec.shutdown is not None, what="the second client denied")
    for where, got in said.items():
        refused(got, socket_calls(p.client, p.address, host))
        assert where in ("recv", "send", "listen")
    # nothing changed: the pair still works both ways
    call(p.srec, p.server.Recv, bytearray(2))
    call(p.crec, p.client.Send, b"ok")
    call(p.crec, p.client.Recv, bytearray(4))
    call(p.srec, p.server.Send, b"back")
    mux.run_until(lambda: p.srec.received == b"abcdok" and p.crec.received == b"back")
    c2.Delete()
    close_pair(mux, p)


def _resize(rec: Recorder, errors: list[BaseException]) -> Callable[..., None]:
    """A receive hook that consumes the bytes the way a parser does: `del buf[:n]`, then
    `buf.extend(...)`, inside the callback; what that raises is collected."""

    def hook(s: ISocket, buf: Any, n: int, *rest: Any) -> None:
        before = bytes(buf[n:])
        try:
            del buf[:n]
            buf.extend(b"\xaa" * 3)
            buf[:0] = b"grow" * 100
        except BufferError as e:
            errors.append(e)
            return
        assert bytes(buf) == b"grow" * 100 + before + b"\xaa" * 3

    return hook


def check_resize_the_buffer_inside_recv_result(
    mux: Mux, log: IInstanceLog, kind: StreamKind, tmp: str
) -> None:
    """The buffer `SocketRecvResult` gets is the app's from that moment: resized inside
    the callback (`del buf[:n]`, `buf.extend`), for every shape of Recv (the whole
    buffer, partial; a shorter `len`; an exact Recv filled in pieces; Recvs queued
    behind it), and the library never writes into it again."""
    p = make_pair(mux, log, kind, tmp)
    errors: list[BaseException] = []
    p.srec.hooks["recv"] = _resize(p.srec, errors)
    bufs = [bytearray(64), bytearray(32), bytearray(10), bytearray(5), bytearray(5)]
    call(p.srec, p.server.Recv, bufs[0], None, True)
    call(p.crec, p.client.Send, b"A" * 20)
    mux.run_until(lambda: len(p.srec.received) == 20, what="whole, partial")
    call(p.srec, p.server.Recv, bufs[1], 16)
    call(p.crec, p.client.Send, b"B" * 16)
    mux.run_until(lambda: len(p.srec.received) == 36, what="a shorter len")
    call(p.srec, p.server.Recv, bufs[2], 10)
    call(p.crec, p.client.Send, b"C" * 4)
    mux.run_ready()
    call(p.crec, p.client.Send, b"D" * 6)
    mux.run_until(lambda: len(p.srec.received) == 46, what="exact, in pieces")
    call(p.srec, p.server.Recv, bufs[3], 5)
    call(p.srec, p.server.Recv, bufs[4], 5)
    call(p.crec, p.client.Send, b"E" * 5 + b"F" * 5)
    mux.run_until(lambda: len(p.srec.received) == 56, what="queued Recvs")
    assert not errors, errors
    assert p.srec.received == b"A" * 20 + b"B" * 16 + b"C" * 4 + b"D" * 6 + b"E" * 5 + b"F" * 5
    snapshot = [bytes(b) for b in bufs]
    call(p.srec, p.server.Recv, bytearray(8), None, True)
    call(p.crec, p.client.Send, b"G" * 8)
    mux.run_until(lambda: len(p.srec.received) == 64, what="one more")
    assert [bytes(b) for b in bufs] == snapshot, "the library wrote into a delivered buffer"
    close_pair(mux, p)


def check_raising_callback(mux: Mux, log: IInstanceLog, kind: StreamKind, tmp: str) -> None:
    """An exception in a callback goes to the loop's exception handler; the socket carries on."""
    p = make_pair(mux, log, kind, tmp)
    count = [0]

    def boom(s: ISocket, buf: Any, n: int) -> None:
        count[0] += 1
        if count[0] == 1:
            s.Recv(bytearray(4), 4)
            raise RuntimeError("app bug")

    p.srec.hooks["recv"] = boom
    call(p.srec, p.server.Recv, bytearray(4), 4)
    call(p.crec, p.client.Send, b"abcdefgh")
    mux.run_until(lambda: count[0] == 2)
    errs = mux.take_errors()
    assert len(errs) == 1 and isinstance(errs[0]["exception"], RuntimeError)
    assert p.srec.received == b"abcdefgh"
    close_pair(mux, p)


def check_wrong_mode(mux: Mux, log: IInstanceLog, kind: StreamKind, tmp: str) -> None:
    """Wrong-mode calls raise SocketModeError at once and change nothing."""
    p = make_pair(mux, log, kind, tmp)
    raises_mode_error(p.client.Connect, p.address)
    raises_mode_error(p.client.Bind, None, 0)
    raises_mode_error(p.client.Listen)
    raises_mode_error(p.client.Accept, None)
    raises_mode_error(p.listener.Send, b"x", what=" on a listener")
    # the connection still works
    call(p.srec, p.server.Recv, bytearray(2), 2)
    call(p.crec, p.client.Send, b"ok")
    mux.run_until(lambda: "recv" in p.srec.names())
    p.client.Delete()
    raises_mode_error(p.client.Send, b"x", what=" after Delete")
    raises_mode_error(p.client.Recv, bytearray(1), what=" after Delete")
    raises_mode_error(p.client.Shutdown, what=" after Delete")
    raises_mode_error(p.client.Delete, what=" after Delete")
    close_pair(mux, p)


def _ip(kind: StreamKind) -> str:
    assert kind.loopback is not None, f"{kind.name} is no IP kind"
    return kind.loopback


def check_bad_addresses(mux: Mux, log: IInstanceLog, kind: StreamKind, tmp: str) -> None:
    """Bind and Connect failures of an IP kind: SOCKET_ADDRESS_INVALID for strings that
    are no address, SOCKET_ADDR_IN_USE for a port someone listens on, SOCKET_BIND_FAILED
    for an address on no interface, SOCKET_CONNECT_REJECTED for a closed port; each with
    its detail logged under the kind's flag, and nothing logged without that flag."""
    from .loop import free_port

    host = _ip(kind)
    family = _address_failures(mux, kind, host, socket.SOCK_STREAM)
    _rejected(mux, kind, kind.connect_address(host, free_port(family)))


def check_open_failed(mux: Mux, log: IInstanceLog, kind: StreamKind, tmp: str) -> None:
    """socket() itself fails (EMFILE): SOCKET_OPEN_FAILED with the errno logged."""
    import usocket_asyncio._stream as stream

    _open_fails(mux, kind, stream, _ip(kind))


def check_bytes_before_peer_shutdown_reach_recv(
    mux: Mux, log: IInstanceLog, kind: StreamKind, tmp: str
) -> None:
    """The library peer sends more than the hold limit and shuts down while no Recv is
    pending: the end waits for the bytes; an exact Recv that can no longer be filled
    gets what there is, shorter; then SOCKET_SHUTDOWN_BY_PEER (the peer: NORMAL)."""
    p = make_pair(mux, log, kind, tmp)
    payload = random.Random(9).randbytes(100_000)
    call(p.srec, p.server.Send, payload + b"tail")
    call(p.srec, p.server.Shutdown)
    mux.run_for(0.2)  # within a TLS peer's bounded wait for our close_notify
    assert p.crec.names() == ["connect"]  # held, not ended
    call(p.crec, p.client.Recv, bytearray(len(payload)))
    call(p.crec, p.client.Recv, bytearray(100))
    mux.run_until(lambda: p.crec.shutdown is not None and p.srec.shutdown is not None)
    ended_once(p.srec, ShutdownReason.SOCKET_SHUTDOWN_NORMAL)
    assert p.crec.events[1:] == [
        ("recv", len(payload)),
        ("recv", 4),
        ("shutdown", ShutdownReason.SOCKET_SHUTDOWN_BY_PEER),
    ]
    assert sha(p.crec.received) == sha(payload + b"tail")
    close_pair(mux, p)


def drop_provider(prov: ISocketProvider, *contexts: ISocketContext | None) -> None:
    """The app deletes the provider and its contexts at once (their sockets live on)."""
    prov.Delete()
    for ctx in contexts:
        if ctx is not None:
            ctx.Delete()


def delete_live(mux: Mux) -> int:
    """Delete every socket the library still holds on this loop: how many there were."""
    from usocket_asyncio._base import LIVE

    live = [s for s in LIVE if getattr(s, "_loop", None) is mux.loop]
    for s in live:
        s.Delete()
    return len(live)


def _fixed_bind(kind: StreamKind, tmp: str) -> tuple[tuple[str | None, int], str]:
    """Bind arguments with a port known before the bind completes, and the address."""
    from .loop import free_port

    addr, _ = kind.bind_args(tmp)
    if kind.loopback is None:
        return (addr, 0), kind.connect_address(str(addr), 0)
    port = free_port(socket.AF_INET6 if kind.use_ipv6 else socket.AF_INET)
    return (addr, port), kind.connect_address(str(addr), port)


def check_nothing_kept_calls_before_run(
    mux: Mux, log: IInstanceLog, kind: StreamKind, tmp: str
) -> None:
    """Item 0 with provider.Delete() and ISocketContext.Delete(): the app keeps no
    reference to any socket, makes every call before the loop runs, and deletes the
    provider and the contexts at once; the sockets live on and the exchange completes."""
    import gc

    prov = kind.provider()
    sctx, cctx = kind.server_context(prov, log), kind.client_context(prov, log)
    (baddr, bport), address = _fixed_bind(kind, tmp)
    lrec, srec, crec = Recorder("listener"), Recorder("server"), Recorder("client")
    lrec.hooks["listen"] = lambda s, a, p: s.Accept(srec)
    srec.hooks["accept"] = lambda s: s.Recv(bytearray(11))
    srec.hooks["recv"] = lambda s, b, n: s.Send(b"pong")
    lsock = prov.CreateSocket(mux, lrec, log, kind.use_ipv6, sctx)
    lsock.Bind(baddr, bport)
    lsock.Listen()  # while still binding: listens once bound
    csock = prov.CreateSocket(mux, crec, log, kind.use_ipv6, cctx)
    csock.Connect(address, kind.server_name)
    csock.Send(b"before loop")
    csock.Recv(bytearray(4))
    crec.hooks["recv"] = lambda s, b, n: s.Shutdown()
    drop_provider(prov, sctx, cctx)
    del lsock, csock, prov, sctx, cctx
    gc.collect()
    assert lrec.events == [] and crec.events == []
    mux.run_until(lambda: crec.shutdown is not None and srec.shutdown is not None)
    gc.collect()
    assert lrec.names() == ["bind", "listen"]
    assert crec.names() == ["connect", "send", "recv", "shutdown"], crec.events
    assert crec.received == b"pong" and srec.received == b"before loop"
    ended_once(crec, ShutdownReason.SOCKET_SHUTDOWN_NORMAL)
    ended_once(srec, ShutdownReason.SOCKET_SHUTDOWN_BY_PEER)
    assert delete_live(mux) == 3
    mux.run_ready()
    assert not lrec.violations


def _bound_to_any(
    mux: Mux, log: IInstanceLog, kind: StreamKind | DatagramKind, listens: bool
) -> tuple[ISocket, Recorder, int]:
    """A socket given SetQoS(QOS_VOICE), then Bind(None): it reports "0.0.0.0" ("::"
    with useIPv6), GetLocalAddress agrees, its packets carry EF; with `listens` it
    listens and accepts every peer. The socket, its recorder and its port."""
    any_ = "::" if kind.use_ipv6 else "0.0.0.0"
    prov = kind.provider()
    rec = Recorder("bound")
    if listens:
        rec.hooks["bind"] = lambda s, a, p: s.Listen()
        rec.hooks["listen"] = lambda s, a, p: s.Accept(Recorder("peer"))
    sock = prov.CreateSocket(mux, rec, log, kind.use_ipv6, kind.server_context(prov, log))
    sock.SetQoS(u.QOS_VOICE)
    call(rec, sock.Bind, None, 0)
    mux.run_until(lambda: bool(rec.events))
    assert rec.events[0][:2] == ("bind", any_), rec.events
    port = int(rec.events[0][2])
    assert sock.GetLocalAddress() == (any_, port)
    assert tos(sock) == 46 << 2
    return sock, rec, port


def _connected_with_qos(mux: Mux, sock: ISocket, rec: Recorder) -> None:
    """A socket that called Connect (by name) connects, reports a loopback address and
    marks its packets AF41 after SetQoS(QOS_AUDIO_VIDEO)."""
    mux.run_until(lambda: rec.shutdown is not None or "connect" in rec.names())
    assert rec.names() == ["connect"], rec.events
    host, port = sock.GetLocalAddress()
    assert host in ("127.0.0.1", "::1", "::ffff:127.0.0.1") and port > 0, host
    call(rec, sock.SetQoS, u.QOS_AUDIO_VIDEO)
    assert tos(sock) == 34 << 2


def _localhost(v6: bool) -> str:
    """ "localhost", or "[::1]" for an IPv6 socket where localhost has no IPv6 address
    (a useIPv6 socket resolves IPv6 addresses only)."""
    if not v6:
        return "localhost"
    try:
        socket.getaddrinfo("localhost", 0, socket.AF_INET6)
        return "localhost"
    except OSError:
        return "[::1]"


def check_bind_none_local_address_qos_and_by_name(
    mux: Mux, log: IInstanceLog, kind: StreamKind, tmp: str
) -> None:
    """Bind(None) reports "0.0.0.0" ("::" with useIPv6); GetLocalAddress agrees; SetQoS
    before Bind applies to the listener's socket; a client connects by name
    ("localhost:port") and marks its packets after SetQoS."""
    _lsock, lrec, port = _bound_to_any(mux, log, kind, True)
    csock, crec = connect(mux, log, kind, f"{_localhost(kind.use_ipv6)}:{port}")
    _connected_with_qos(mux, csock, crec)
    delete_live(mux)
    assert not crec.violations and not lrec.violations


def check_sendto_ignored(mux: Mux, log: IInstanceLog, kind: StreamKind, tmp: str) -> None:
    """SendTo is UDP only and ignored elsewhere: no exception, no callback, no byte."""
    p = make_pair(mux, log, kind, tmp)
    call(p.srec, p.server.Recv, bytearray(64), None, True)
    call(p.crec, p.client.SendTo, b"not sent", None, "127.0.0.1", 9)
    call(p.crec, p.client.Send, b"sent")
    mux.run_until(lambda: p.srec.received != b"" and p.crec.sends_done == 1)
    mux.run_ready()
    assert p.srec.received == b"sent" and p.crec.names() == ["connect", "send"]
    close_pair(mux, p)


def check_without_recv_holds_a_bounded_amount(
    mux: Mux, log: IInstanceLog, kind: StreamKind, tmp: str
) -> None:
    """The client sends 256 KiB after each SocketSendResult to a peer that has no Recv
    pending: the peer holds at most its hold limit, the sender's results stop coming
    (the kernel buffers are full) well before 64 MiB; then every byte is read, intact."""
    import time

    from usocket_asyncio._stream import HOLD_LIMIT

    p = make_pair(mux, IInstanceLog(0), kind, tmp)
    chunk = random.Random(4).randbytes(256 * 1024)
    limit = 64 * 1024 * 1024
    sent = [0]
    last = [time.monotonic()]

    def more(s: ISocket) -> None:
        last[0] = time.monotonic()
        if sent[0] < limit:
            call(p.crec, s.Send, chunk)
            sent[0] += len(chunk)

    p.crec.hooks["send"] = more
    more(p.client)
    mux.run_until(lambda: time.monotonic() - last[0] > 0.5 or sent[0] >= limit, 30)
    assert sent[0] < limit, "the sender was never held back"
    held = p.server._hend - p.server._hstart  # type: ignore[attr-defined]
    assert held <= HOLD_LIMIT + 64 * 1024, held  # the limit plus one read
    assert p.srec.names() == ["accept"]
    total = sent[0]
    p.crec.hooks.pop("send")
    h = hashlib.sha256()
    got = [0]
    buf = bytearray(1 << 20)

    def on_recv(s: ISocket, b: Any, n: int) -> None:
        h.update(memoryview(b)[:n])
        got[0] += n
        if got[0] < total:
            call(p.srec, s.Recv, buf, None, True)

    p.srec.hooks["recv"] = on_recv
    call(p.srec, p.server.Recv, buf, None, True)
    mux.run_until(lambda: got[0] >= total, 30, "draining")
    want = hashlib.sha256()
    for _ in range(total // len(chunk)):
        want.update(chunk)
    assert got[0] == total and h.digest() == want.digest()
    p.srec.received = bytearray()
    close_pair(mux, p)


def check_second_bind_or_connect_raises(
    mux: Mux, log: IInstanceLog, kind: StreamKind, tmp: str
) -> None:
    """Bind or Connect a second time, or the other mode's call, raises SocketModeError
    at once with a sentence and changes nothing; Accept returns None; the provider
    deleted at once leaves its sockets working."""
    prov = kind.provider()
    lrec, crec = Recorder("listener"), Recorder("client")
    accepted: list[Any] = []
    lrec.hooks["bind"] = lambda s, a, p: s.Listen()
    lrec.hooks["listen"] = lambda s, a, p: accepted.append(s.Accept(Recorder("server")))
    lsock = prov.CreateSocket(mux, lrec, log, kind.use_ipv6, kind.server_context(prov, log))
    bind = kind.bind_args(tmp)
    call(lrec, lsock.Bind, *bind)
    mux.run_until(lambda: bool(lrec.events))
    address = kind.connect_address(str(lrec.events[0][1]), int(lrec.events[0][2]))
    csock = prov.CreateSocket(mux, crec, log, kind.use_ipv6, kind.client_context(prov, log))
    call(crec, csock.Connect, address, kind.server_name)
    prov.Delete()
    for fn, args in (
        (lsock.Bind, bind),
        (lsock.Connect, (address,)),
        (csock.Connect, (address,)),
        (csock.Bind, bind),
    ):
        said = raises_mode_error(fn, *args)
        assert said.strip().count(" ") >= 3, said  # a sentence, not a code
    mux.run_until(lambda: "connect" in crec.names() and bool(accepted))
    assert accepted == [None]
    assert lrec.shutdown is None and crec.shutdown is None
    delete_live(mux)
    assert not lrec.violations and not crec.violations


def check_calls_after_run_returned(mux: Mux, log: IInstanceLog, kind: StreamKind, tmp: str) -> None:
    """A connection made while Run() was running; Run() returns (Terminate); Send, Recv
    and Shutdown made then take effect when the loop runs again."""

    def srec() -> Recorder:
        rec = Recorder("server")
        rec.hooks["recv"] = lambda s, b, n: s.Send(b"pong")
        return rec

    listener, _lrec, accepted, address = listen(mux, log, kind, tmp, srec)
    crec = Recorder("client")
    crec.hooks["connect"] = lambda s: mux.Terminate()
    csock, _ = connect(mux, log, kind, address, crec)
    mux.Run()  # returns once the client is connected
    assert crec.names() == ["connect"]
    mux.run_until(lambda: bool(accepted))
    server, sr = accepted[0]
    call(sr, server.Recv, bytearray(4))
    crec.hooks["recv"] = lambda s, b, n: mux.Terminate()
    call(crec, csock.Send, b"ping")
    call(crec, csock.Recv, bytearray(4))
    assert crec.names() == ["connect"]
    mux.Run()
    assert crec.names() == ["connect", "send", "recv"] and crec.received == b"pong"
    call(crec, csock.Shutdown)
    assert crec.shutdown is None
    mux.run_until(lambda: crec.shutdown is not None)
    ended_once(crec, ShutdownReason.SOCKET_SHUTDOWN_NORMAL)
    for s in (csock, server, listener):
        s.Delete()


def check_delete_inside_bind_accept_and_canceled(
    mux: Mux, log: IInstanceLog, kind: StreamKind, tmp: str
) -> None:
    """Delete inside SocketBindResult, SocketAcceptComplete or SocketRecvCanceled (the
    callbacks check_delete_inside_callbacks does not reach): nothing after it on that
    socket; the client of a deleted accepted socket ends."""
    for where in ("bind", "accept", "canceled"):
        prov = kind.provider()
        lrec, srec, crec = Recorder("listener"), Recorder("server"), Recorder("client")
        seen: list[str] = []

        def deleter(s: ISocket, *rest: Any, where: str = where, seen: list[str] = seen) -> None:
            seen.append(where)
            s.Delete()

        lrec.hooks["bind"] = deleter if where == "bind" else (lambda s, a, p: s.Listen())
        lrec.hooks["listen"] = lambda s, a, p, srec=srec: s.Accept(srec)
        if where == "accept":
            srec.hooks["accept"] = deleter
        lsock = prov.CreateSocket(mux, lrec, log, kind.use_ipv6, kind.server_context(prov, log))
        call(lrec, lsock.Bind, *kind.bind_args(tmp))
        mux.run_until(lambda lrec=lrec: bool(lrec.events))  # type: ignore[misc]
        if where == "bind":
            mux.run_ready()
            assert lrec.names() == ["bind"] and seen == ["bind"]
            continue
        address = kind.connect_address(str(lrec.events[0][1]), int(lrec.events[0][2]))
        csock, _ = connect(mux, log, kind, address, crec)
        mux.run_until(lambda crec=crec: "connect" in crec.names() or crec.shutdown is not None)  # type: ignore[misc]
        if where == "accept":
            mux.run_until(lambda seen=seen: bool(seen))  # type: ignore[misc]
            call(crec, csock.Send, b"to nobody")
            mux.run_until(lambda crec=crec: crec.shutdown is not None, what="the client's end")  # type: ignore[misc]
            assert srec.names() == ["accept"]
        else:
            crec.hooks["canceled"] = deleter
            for _ in range(3):
                call(crec, csock.Recv, bytearray(8))
            call(crec, csock.RecvCancel)
            mux.run_until(lambda seen=seen: bool(seen))  # type: ignore[misc]
            mux.run_ready()
            assert crec.names() == ["connect", "canceled"], crec.events
        assert seen == [where] and not crec.violations and not srec.violations
        for s in (lsock, csock):
            try:
                s.Delete()
            except SocketModeError:
                pass


# --------------------------------------------------------------------------- the stream kinds


def _raw_tcp(address: str) -> tuple[int, tuple[str, int]]:
    host, _, port = address.rpartition(":")
    if host.startswith("["):
        return socket.AF_INET6, (host[1:-1], int(port))
    return socket.AF_INET, (host, int(port))


def tcp_kind(name: str, host: str) -> StreamKind:
    """TCP on one loopback address ("127.0.0.1" or "::1")."""
    v6 = ":" in host
    shown = f"[{host}]" if v6 else host
    return StreamKind(
        name=name,
        provider=u.CreateTCPSocketProvider,
        bind_args=lambda tmp: (host, 0),
        connect_address=lambda a, p: f"{shown}:{p}",
        use_ipv6=v6,
        raw_connect=_raw_tcp,
        flag=int(u.LogFlags.LOG_TCP),
        loopback=host,
        extra={"child": "tcp"} if not v6 else {},
    )


STREAM_KINDS = {
    "tcp4": tcp_kind("tcp4", "127.0.0.1"),
    "tcp6": tcp_kind("tcp6", "::1"),
    "local": StreamKind(
        name="local",
        provider=u.CreateLocalSocketProvider,
        bind_args=lambda tmp: (os.path.join(tmp, "s"), 0),
        connect_address=lambda a, p: a,
        raw_connect=lambda address: (socket.AF_UNIX, address),
        flag=int(u.LogFlags.LOG_LDS),
    ),
}
"""TCP over IPv4 and IPv6 and local sockets (TLS needs a CA: `tls_kind`)."""

TLS_VERSIONS = {"tls12": ssl.TLSVersion.TLSv1_2, "tls13": ssl.TLSVersion.TLSv1_3}


def tls_kind(ca: Any, version: str) -> StreamKind:
    """TLS over IPv4 loopback, server certificate from the test CA, the client verifying it."""
    server_pem = ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.bytes()
    ca_pem = ca.cert_pem.bytes()

    def context(setup: Callable[[SocketContext], None]) -> ContextMaker:
        def make(p: ISocketProvider, log: IInstanceLog) -> ISocketContext | None:
            ctx = p.CreateSocketContext(log)
            assert isinstance(ctx, SocketContext)
            ctx.tls_max_version = TLS_VERSIONS[version]
            setup(ctx)
            return ctx

        return make

    return StreamKind(
        name=version,
        provider=lambda: u.CreateTLSSocketProvider(None),
        bind_args=lambda tmp: ("127.0.0.1", 0),
        connect_address=lambda a, p: f"127.0.0.1:{p}",
        server_context=context(lambda c: c.SetServerCertificate(server_pem)),
        client_context=context(lambda c: c.SetTrustedCertificates(ca_pem)),
        server_name="localhost",
        flag=int(u.LogFlags.LOG_TLS),
        loopback="127.0.0.1",
        extra={"child": "tls"} if version == "tls13" else {},
    )


# =========================================================================== datagrams
#
# The datagram checker: UDP bound (SendTo/RecvFrom), UDP connected (Connect/Send/Recv)
# and DTLS (a client and the peer socket its listener accepted). The socket under test is
# the client `a`; its peer `b` is a bound UDP socket for the UDP kinds (it answers the
# source of what it got) and the listener-accepted peer for DTLS, so the checks run on
# both ends of a DTLS association.


@dataclass
class DatagramKind:
    """How to run the datagram checks on one kind of datagram socket."""

    name: str
    provider: Callable[[], ISocketProvider]
    host: str
    """The loopback address both ends bind ("127.0.0.1" or "::1")."""
    flag: int
    """The log flag the kind's sockets write under."""
    connected: bool
    """`a` calls Connect and uses Send/Recv (SocketRecvResult); else it calls Bind and
    uses SendTo/Recv (SocketRecvFromResult)."""
    listener: bool = False
    """`b` is accepted by a listening socket (DTLS); else `b` is a bound UDP socket."""
    server_context: ContextMaker = no_context
    client_context: ContextMaker = no_context
    server_name: str | None = None
    break_transport: Callable[[ISocket], None] = lambda s: None
    """Close the kernel transport under a socket, as a fatal socket error would."""
    extra: dict[str, Any] = field(default_factory=dict)
    client_open: str = field(init=False, default="")
    client_recv: str = field(init=False, default="")
    server_open: str = field(init=False, default="")
    server_recv: str = field(init=False, default="")

    @property
    def use_ipv6(self) -> bool:
        return ":" in self.host

    def address(self, port: int, host: str | None = None) -> str:
        h = self.host if host is None else host
        return f"[{h}]:{port}" if ":" in h else f"{h}:{port}"

    def __post_init__(self) -> None:
        # the callbacks that open `a` and `b`, and that deliver to each
        self.client_open = "connect" if self.connected else "bind"
        self.client_recv = "recv" if self.connected else "recvfrom"
        self.server_open = "accept" if self.listener else "bind"
        self.server_recv = "recv" if self.listener else "recvfrom"


class End:
    """One end of a datagram pair: its socket, its recorder, and how it sends (Send, or
    SendTo its peer: the one given, else the source of the last datagram it got)."""

    def __init__(
        self, sock: ISocket, rec: Recorder, connected: bool, peer: tuple[str, int] | None
    ) -> None:
        self.sock, self.rec, self.connected, self.peer = sock, rec, connected, peer
        self.recv_name = "recv" if connected else "recvfrom"

    def dst(self) -> tuple[str, int]:
        if self.peer is not None:
            return self.peer
        ev = [e for e in self.rec.events if e[0] == "recvfrom"][-1]
        return str(ev[2]), int(ev[3])

    def send(self, data: Any, n: int | None = None) -> None:
        if self.connected:
            call(self.rec, self.sock.Send, data, n)
        else:
            call(self.rec, self.sock.SendTo, data, n, *self.dst())

    def recv(self, buf: Any, n: int | None = None, partial: bool = False) -> None:
        call(self.rec, self.sock.Recv, buf, n, partial)

    def got(self) -> list[int]:
        """The lengths of the datagrams delivered so far, in order."""
        return [int(e[1]) for e in self.rec.events if e[0] == self.recv_name]

    def later(self) -> list[str]:
        """The callbacks after the opening one."""
        return self.rec.names()[1:]


@dataclass
class DgServer:
    """The side `b` comes from: a bound UDP socket (`b` itself) or a DTLS listener."""

    kind: DatagramKind
    sock: ISocket
    rec: Recorder
    port: int
    peers: list[End]
    accept_returns: list[Any] = field(default_factory=list)


def dgram_server(
    mux: Mux,
    log: IInstanceLog,
    kind: DatagramKind,
    brec: Callable[[], Recorder] = lambda: Recorder("b"),
    host: str | None = None,
    prov: ISocketProvider | None = None,
    lrec: Recorder | None = None,
) -> DgServer:
    """Bind the server side on `host` (the kind's loopback by default) and wait for it
    (a listener's user: `lrec`, a fresh Recorder by default)."""
    prov = prov or kind.provider()
    ctx = kind.server_context(prov, log)
    if kind.listener:
        rec = lrec or Recorder("listener")
        peers: list[End] = []
        srv: DgServer

        def on_listen(sock: ISocket, addr: str, port: int) -> None:
            prec = brec()
            keep = prec.hooks.get("accept")

            def accepted(s: ISocket) -> None:
                peers.append(End(s, prec, True, None))
                if keep is not None:
                    keep(s)

            prec.hooks["accept"] = accepted
            srv.accept_returns.append(sock.Accept(prec))

        rec.hooks["bind"] = lambda s, a, p: s.Listen()
        rec.hooks["listen"] = on_listen
    else:
        rec = brec()
        peers = []
    sock = prov.CreateSocket(mux, rec, log, kind.use_ipv6, ctx)
    call(rec, sock.Bind, kind.host if host is None else host, 0)
    mux.run_until(lambda: bool(rec.events), what="the server's bind")
    assert rec.names()[0] == "bind", rec.events
    srv = DgServer(kind, sock, rec, int(rec.events[0][2]), peers)
    if not kind.listener:
        peers.append(End(sock, rec, False, None))
    return srv


def dgram_client(
    mux: Mux,
    log: IInstanceLog,
    kind: DatagramKind,
    port: int,
    rec: Recorder | None = None,
    before: Callable[[End], None] | None = None,
    prov: ISocketProvider | None = None,
    address: str | None = None,
) -> End:
    """`a`: Connect to, or Bind beside, the server's `port`; `before(a)` runs right after
    that call, before the loop runs."""
    prov = prov or kind.provider()
    rec = rec or Recorder("a")
    sock = prov.CreateSocket(mux, rec, log, kind.use_ipv6, kind.client_context(prov, log))
    a = End(sock, rec, kind.connected, None if kind.connected else (kind.host, port))
    if kind.connected:
        call(rec, sock.Connect, address or kind.address(port), kind.server_name)
    else:
        call(rec, sock.Bind, kind.host, 0)
    if before is not None:
        before(a)
    return a


@dataclass
class DgPair:
    """`a`, its peer `b`, and the server side `b` came from."""

    a: End
    b: End
    srv: DgServer


def dgram_wait(mux: Mux, kind: DatagramKind, a: End, srv: DgServer) -> End:
    """Run until `a` is open and `b` exists; `b`'s peer is then `a` (UDP)."""
    mux.run_until(
        lambda: (
            a.rec.shutdown is not None or (kind.client_open in a.rec.names() and bool(srv.peers))
        ),
        what="a and b",
    )
    assert kind.client_open in a.rec.names(), a.rec.events
    b = srv.peers[0]
    if not kind.listener and b.peer is None:
        b.peer = (kind.host, int(a.sock.GetLocalAddress()[1]))
    return b


def make_dgram_pair(
    mux: Mux,
    log: IInstanceLog,
    kind: DatagramKind,
    arec: Recorder | None = None,
    brec: Callable[[], Recorder] = lambda: Recorder("b"),
    before: Callable[[End], None] | None = None,
) -> DgPair:
    """Server side, then `a`, then wait for both ends."""
    srv = dgram_server(mux, log, kind, brec)
    a = dgram_client(mux, log, kind, srv.port, arec, before)
    return DgPair(a, dgram_wait(mux, kind, a, srv), srv)


def close_dgram_pair(p: DgPair) -> None:
    """Delete every socket of the pair; no recorder saw a contract violation."""
    ends = [p.a, *p.srv.peers]
    for s, rec in [(e.sock, e.rec) for e in ends] + [(p.srv.sock, p.srv.rec)]:
        try:
            s.Delete()
        except SocketModeError:
            pass  # deleted by the check already
        assert not rec.violations, (rec.name, rec.violations)


def ended_once(rec: Recorder, reason: ShutdownReason) -> None:
    """`rec` saw exactly one SocketShutdown, `reason`, and nothing after it."""
    assert rec.names().count("shutdown") == 1 and rec.names()[-1] == "shutdown", rec.events
    assert rec.shutdown is reason, rec.shutdown
    assert not rec.violations, rec.violations


def shut_down_a(mux: Mux, p: DgPair) -> None:
    """`a` shuts down: SOCKET_SHUTDOWN_NORMAL; a DTLS `b` sees SOCKET_SHUTDOWN_BY_PEER."""
    call(p.a.rec, p.a.sock.Shutdown)
    mux.run_until(
        lambda: (
            p.a.rec.shutdown is not None
            and (not p.srv.kind.listener or p.b.rec.shutdown is not None)
        ),
        what="the end",
    )
    ended_once(p.a.rec, ShutdownReason.SOCKET_SHUTDOWN_NORMAL)
    if p.srv.kind.listener:
        ended_once(p.b.rec, ShutdownReason.SOCKET_SHUTDOWN_BY_PEER)


# --------------------------------------------------------------------------- datagram checks


def check_dgram_exchange(mux: Mux, log: IInstanceLog, kind: DatagramKind) -> None:
    """Datagrams of random sizes both ways: each Recv gets exactly one, in order, intact
    (hashed); one SocketSendResult per Send/SendTo, in order; a's Shutdown ends it NORMAL
    (and a DTLS peer BY_PEER)."""
    p = make_dgram_pair(mux, log, kind)
    rng = random.Random(5)
    ab = [rng.randbytes(rng.randint(1, 1000)) for _ in range(40)]
    ba = [rng.randbytes(rng.randint(1, 1000)) for _ in range(40)]
    for _ in ab:
        p.b.recv(bytearray(1000))
    for _ in ba:
        p.a.recv(bytearray(1000))
    buf = bytearray(1000)
    for m in ab:
        buf[: len(m)] = m
        p.a.send(buf, len(m))
        buf[:] = bytes(1000)  # reused at once
    mux.run_until(lambda: len(p.b.got()) == len(ab), what="a to b")
    for m in ba:
        p.b.send(m)
    mux.run_until(lambda: len(p.a.got()) == len(ba), what="b to a")
    assert p.b.got() == [len(m) for m in ab] and p.a.got() == [len(m) for m in ba]
    assert sha(p.b.rec.received) == sha(b"".join(ab))
    assert sha(p.a.rec.received) == sha(b"".join(ba))
    mux.run_until(lambda: p.a.rec.sends_done == len(ab) and p.b.rec.sends_done == len(ba))
    shut_down_a(mux, p)
    close_dgram_pair(p)


def check_dgram_calls_inside_callbacks(mux: Mux, log: IInstanceLog, kind: DatagramKind) -> None:
    """Send/SendTo, Recv, RecvCancel and Shutdown made inside the callbacks (the opening
    ones, SocketRecv(From)Result) never call back inside themselves; an echo through
    `b` keeps the order, one datagram per Recv."""
    n = 12
    payloads = [bytes([65 + i]) * (10 + i) for i in range(n)]
    arec = Recorder("a")
    holder: list[End] = []

    def a_open(s: ISocket, *rest: Any) -> None:
        end = holder[0]
        for m in payloads:
            end.send(m)
        for _ in range(n):
            end.recv(bytearray(100))

    def a_got(s: ISocket, *rest: Any) -> None:
        if len(arec.received) == sum(map(len, payloads)):
            call(arec, s.Recv, bytearray(10))
            call(arec, s.RecvCancel)
            call(arec, s.Shutdown)

    arec.hooks[kind.client_open] = a_open
    arec.hooks[kind.client_recv] = a_got
    srvs: list[DgServer] = []

    def brec() -> Recorder:
        rec = Recorder("b")

        def b_got(s: ISocket, buf: Any, k: int, *rest: Any) -> None:
            srvs[0].peers[0].send(bytes(memoryview(buf)[:k]))
            call(rec, s.Recv, bytearray(100))

        rec.hooks[kind.server_open] = lambda s, *rest: call(rec, s.Recv, bytearray(100))
        rec.hooks[kind.server_recv] = b_got
        return rec

    srv = dgram_server(mux, log, kind, brec)
    srvs.append(srv)
    a = dgram_client(mux, log, kind, srv.port, arec, before=holder.append)
    mux.run_until(lambda: arec.shutdown is not None, what="the echo")
    assert bytes(arec.received) == b"".join(payloads)
    assert a.got() == [len(m) for m in payloads]
    assert arec.sends_done == n and arec.names().count("canceled") == 1
    ended_once(arec, ShutdownReason.SOCKET_SHUTDOWN_NORMAL)
    b = srv.peers[0]
    if kind.listener:
        mux.run_until(lambda: b.rec.shutdown is not None)
        ended_once(b.rec, ShutdownReason.SOCKET_SHUTDOWN_BY_PEER)
    assert b.rec.sends_done == n
    close_dgram_pair(DgPair(a, b, srv))


def check_dgram_send_before_open(mux: Mux, log: IInstanceLog, kind: DatagramKind) -> None:
    """Send/SendTo right after Connect/Bind (the handshake or bind still running) is
    cached and sent after the opening callback; the caller's buffer is free at once;
    one SocketSendResult per call, all after the opening one, in order."""
    rng = random.Random(3)
    sent = [rng.randbytes(rng.randint(1, 900)) for _ in range(10)]

    def before(a: End) -> None:
        buf = bytearray(1000)
        for m in sent:
            buf[: len(m)] = m
            a.send(buf, len(m))
            buf[:] = bytes(1000)  # reused at once
        assert a.rec.events == []

    def brec() -> Recorder:
        rec = Recorder("b")
        rec.hooks[kind.server_open] = lambda s, *rest: [
            call(rec, s.Recv, bytearray(1000)) for _ in sent
        ]
        return rec

    p = make_dgram_pair(mux, log, kind, brec=brec, before=before)
    mux.run_until(lambda: len(p.b.got()) == len(sent) and p.a.rec.sends_done == len(sent))
    assert p.a.rec.names() == [kind.client_open] + ["send"] * len(sent)
    assert p.b.got() == [len(m) for m in sent]
    assert sha(p.b.rec.received) == sha(b"".join(sent))
    close_dgram_pair(p)


def _dgram_delete_in(mux: Mux, log: IInstanceLog, kind: DatagramKind, where: str) -> None:
    """Delete `a` inside its `where` callback: nothing after it, not even what was due."""
    seen: list[str] = []

    def deleter(s: ISocket, *rest: Any) -> None:
        seen.append(where)
        s.Delete()
        raises_mode_error(s.Recv, bytearray(4), what=" inside the callback, after Delete")

    arec = Recorder("a")
    if where == kind.client_open:
        arec.hooks[where] = deleter
        srv = dgram_server(mux, log, kind)
        a = dgram_client(mux, log, kind, srv.port, arec, before=lambda a: a.send(b"cached"))
        mux.run_until(lambda: bool(seen), what=where)
        mux.run_ready()  # what was due (datagrams sent, callbacks queued) runs now
        assert arec.names() == [where], arec.events
        close_dgram_pair(DgPair(a, a, srv))
        return
    p = make_dgram_pair(mux, log, kind, arec)
    arec.hooks[where] = deleter
    for i in range(3):
        p.a.send(b"a%d" % i)
        p.b.send(b"b%d" % i)
    for _ in range(3):
        p.a.recv(bytearray(8))
    if where == "canceled":
        call(arec, p.a.sock.RecvCancel)
    elif where == "shutdown":
        call(arec, p.a.sock.Shutdown)
    mux.run_until(lambda: bool(seen), what=where)
    mux.run_ready()  # what was due (datagrams sent, callbacks queued) runs now
    assert seen == [where]
    assert arec.names()[-1] == where and arec.names().count(where) == 1, arec.events
    close_dgram_pair(p)


def _dgram_delete_server_in(mux: Mux, log: IInstanceLog, kind: DatagramKind, where: str) -> None:
    """Delete the listener inside SocketListenResult, or the new peer inside
    SocketAcceptComplete: nothing after it on that socket."""
    seen: list[str] = []

    def deleter(s: ISocket, *rest: Any) -> None:
        seen.append(where)
        s.Delete()

    def brec() -> Recorder:
        rec = Recorder("b")
        rec.hooks["accept"] = deleter
        return rec

    srv = dgram_server(mux, log, kind, brec)
    if where == "listen":
        srv.rec.hooks["listen"] = deleter
    a = dgram_client(mux, log, kind, srv.port)
    mux.run_until(lambda: bool(seen), what=where)
    mux.run_ready()  # what was due (datagrams sent, callbacks queued) runs now
    assert seen == [where]
    assert srv.rec.names() == ["bind", "listen"], srv.rec.events
    if where == "accept":
        assert srv.peers[0].rec.names() == ["accept"]
    close_dgram_pair(DgPair(a, a, srv))


def check_dgram_delete_inside_each_callback(
    mux: Mux, log: IInstanceLog, kind: DatagramKind
) -> None:
    """Delete() inside each callback `a` gets (the opening one, SocketSendResult,
    SocketRecv(From)Result, SocketRecvCanceled, SocketShutdown) and, on DTLS, inside the
    listener's SocketListenResult and the peer's SocketAcceptComplete: no callback after
    it, calls on it raise, nothing reaches the exception handler."""
    for where in (kind.client_open, "send", kind.client_recv, "canceled", "shutdown"):
        _dgram_delete_in(mux, log, kind, where)
    if kind.listener:
        for where in ("listen", "accept"):
            _dgram_delete_server_in(mux, log, kind, where)


def check_dgram_raising_callback(mux: Mux, log: IInstanceLog, kind: DatagramKind) -> None:
    """An exception in a callback reaches the loop's exception handler; the socket
    carries on delivering and sending, and ends normally."""
    p = make_dgram_pair(mux, log, kind)

    def boom(*args: Any) -> None:
        raise RuntimeError("app bug")

    p.a.rec.hooks[kind.client_recv] = boom
    p.a.rec.hooks["send"] = boom
    for i in range(3):
        p.a.recv(bytearray(8))
        p.b.send(b"m%d" % i)
    p.a.send(b"x")
    mux.run_until(lambda: len(mux.errors) == 4, what="4 errors")
    errs = mux.take_errors()
    assert all(isinstance(e["exception"], RuntimeError) for e in errs)
    assert p.a.rec.received == b"m0m1m2" and p.a.rec.shutdown is None
    p.b.recv(bytearray(8))
    mux.run_until(lambda: p.b.rec.received == b"x")
    shut_down_a(mux, p)
    close_dgram_pair(p)


def check_dgram_recv_partial_makes_no_difference(
    mux: Mux, log: IInstanceLog, kind: DatagramKind
) -> None:
    """One datagram per Recv whatever recvPartial says: a shorter one completes a Recv
    with its own length, a longer one delivers the first `len` bytes (nothing written
    past `len`), with and without recvPartial."""
    for partial in (False, True):
        p = make_dgram_pair(mux, log, kind)
        bufs = [bytearray(64) for _ in range(3)]
        for b in bufs:
            p.a.recv(b, 10, partial)
        for msg in (b"abc", b"0123456789ABCDEF", b"xy"):
            p.b.send(msg)
        mux.run_until(lambda a=p.a: len(a.got()) == 3)  # type: ignore[misc]
        assert p.a.got() == [3, 10, 2], partial
        assert p.a.rec.received == b"abc0123456789xy"
        assert bytes(bufs[1][10:12]) == b"\0\0"
        close_dgram_pair(p)


def check_dgram_set_user(mux: Mux, log: IInstanceLog, kind: DatagramKind) -> None:
    """SetUser on an open socket: later callbacks go to the new user only."""
    p = make_dgram_pair(mux, log, kind)
    p.a.recv(bytearray(8))
    p.b.send(b"one")
    mux.run_until(lambda: p.a.rec.received == b"one")
    old, other = p.a.rec, Recorder("other")
    call(old, p.a.sock.SetUser, other)
    p.a.rec = other
    p.a.recv(bytearray(8))
    p.b.send(b"two")
    p.a.send(b"back")
    p.b.recv(bytearray(8))
    mux.run_until(lambda: p.b.rec.received == b"back" and other.received == b"two")
    assert old.names() == [kind.client_open, kind.client_recv]
    assert sorted(other.names()[:2]) == sorted([kind.client_recv, "send"])
    shut_down_a(mux, p)
    assert old.shutdown is None and not old.violations
    close_dgram_pair(p)


def check_dgram_callbacks_set_on_the_instance(
    mux: Mux, log: IInstanceLog, kind: DatagramKind
) -> None:
    """Callbacks set on the user object, not its class (`user.SocketSendResult = fn`),
    are called as methods are: on both ends (bind or connect, a DTLS listener's listen
    and the accepted peer's accept, send results, receive results, canceled), and on a
    user set by `SetUser`."""
    srv = dgram_server(
        mux, log, kind, lambda: InstanceRecorder("b"), lrec=InstanceRecorder("listener")
    )
    a = dgram_client(mux, log, kind, srv.port, InstanceRecorder("a"))
    b = dgram_wait(mux, kind, a, srv)
    if kind.listener:
        assert srv.rec.names() == ["bind", "listen"], srv.rec.events
    assert b.rec.names() == [kind.server_open] and a.rec.names() == [kind.client_open]
    b.recv(bytearray(8))
    a.send(b"ping")
    mux.run_until(lambda: b.rec.received == b"ping" and a.rec.sends_done == 1, what="a to b")
    a.recv(bytearray(8))
    b.send(b"pong")
    mux.run_until(lambda: a.rec.received == b"pong" and b.rec.sends_done == 1, what="b to a")
    first = bytearray(8)
    b.recv(first)
    call(b.rec, b.sock.RecvCancel)
    mux.run_until(lambda: "canceled" in b.rec.names(), what="SocketRecvCanceled")
    assert b.rec.events[-1] == ("canceled", first)
    other = InstanceRecorder("other")
    call(a.rec, a.sock.SetUser, other)
    a.rec = other
    a.recv(bytearray(8))
    b.recv(bytearray(8))
    a.send(b"again")
    b.send(b"back")
    mux.run_until(lambda: other.received == b"back" and other.sends_done == 1, what="other")
    mux.run_until(lambda: b.rec.received == b"pingagain", what="b got it")
    end_clean([srv.rec, b.rec, other], [a.sock, b.sock, srv.sock])


def end_clean(recs: list[Recorder], socks: list[ISocket]) -> None:
    """No recorder saw a contract violation; delete the sockets (one may appear twice,
    or be deleted already: a bound UDP `b` is its server socket)."""
    for r in recs:
        assert not r.violations, (r.name, r.violations)
    for sock in socks:
        try:
            sock.Delete()
        except SocketModeError:
            pass


def check_dgram_resize_the_buffer_inside_recv_result(
    mux: Mux, log: IInstanceLog, kind: DatagramKind
) -> None:
    """The buffer `SocketRecvResult`/`SocketRecvFromResult` gets is the app's from that
    moment: resized inside the callback (`del buf[:n]`, `buf.extend`), whether the
    datagram found its Recv waiting or was held first, with a shorter `len` too; the
    library never writes into it again."""
    p = make_dgram_pair(mux, log, kind)
    errors: list[BaseException] = []
    p.b.rec.hooks[p.b.recv_name] = _resize(p.b.rec, errors)
    bufs = [bytearray(64), bytearray(32), bytearray(16)]
    p.b.recv(bufs[0])
    p.a.send(b"A" * 20)
    mux.run_until(lambda: len(p.b.got()) == 1, what="a waiting Recv")
    p.b.recv(bufs[1], 10)
    p.a.send(b"B" * 10)
    mux.run_until(lambda: len(p.b.got()) == 2, what="a shorter len")
    p.a.send(b"C" * 12)
    mux.run_until(lambda: len(p.b.sock._q.held) == 1, what="held")  # type: ignore[attr-defined]
    p.b.recv(bufs[2])
    mux.run_until(lambda: len(p.b.got()) == 3, what="a held datagram")
    assert not errors, errors
    assert p.b.rec.received == b"A" * 20 + b"B" * 10 + b"C" * 12
    snapshot = [bytes(b) for b in bufs]
    p.b.recv(bytearray(8))
    p.a.send(b"D" * 8)
    mux.run_until(lambda: len(p.b.got()) == 4, what="one more")
    assert [bytes(b) for b in bufs] == snapshot, "the library wrote into a delivered buffer"
    close_dgram_pair(p)


def check_dgram_calls_from_a_thread_inside_a_callback(
    mux: Mux, log: IInstanceLog, kind: DatagramKind
) -> None:
    """Every public call of a datagram socket, made from a thread the app starts inside
    one of its callbacks while the loop's thread waits in it (the receive result, the
    send result), raises SocketModeError and changes nothing."""
    from .streams import from_a_thread_here, refused

    p = make_dgram_pair(mux, log, kind)
    address = kind.address(p.srv.port)
    said: dict[str, dict[str, str]] = {}

    def inside(where: str, s: ISocket) -> None:
        said[where] = from_a_thread_here(socket_calls(s, address, kind.host))

    p.b.rec.hooks[p.b.recv_name] = lambda s, *a: inside("recv", s)
    p.a.rec.hooks["send"] = lambda s: inside("send", s)
    p.b.recv(bytearray(8))
    p.a.send(b"one")
    mux.run_until(lambda: len(said) == 2, what="both callbacks")
    for got in said.values():
        refused(got, socket_calls(p.a.sock, address, kind.host))
    p.b.rec.hooks.pop(p.b.recv_name)
    p.b.recv(bytearray(8))
    p.a.send(b"two")
    mux.run_until(lambda: p.b.rec.received == b"onetwo", what="still works")
    close_dgram_pair(p)


def check_dgram_calls_from_another_thread_raise(
    mux: Mux, log: IInstanceLog, kind: DatagramKind
) -> None:
    """Send/SendTo, Recv, RecvCancel and Shutdown (the fast paths too) made from a thread
    other than the loop's while it runs raise SocketModeError and change nothing: the
    sockets work afterwards from the loop's thread."""
    from .streams import from_another_thread

    p = make_dgram_pair(mux, log, kind)
    a, b = p.a, p.b
    calls: dict[str, Callable[[], object]] = {
        "a send": lambda: a.send(b"x"),
        "a Recv": lambda: a.sock.Recv(bytearray(8)),
        "a RecvCancel": a.sock.RecvCancel,
        "a Shutdown": a.sock.Shutdown,
        "b send": lambda: b.send(b"x"),
        "b Recv": lambda: b.sock.Recv(bytearray(8)),
        "server Shutdown": p.srv.sock.Shutdown,
    }
    said = from_another_thread(mux, calls)
    for name in calls:
        assert "call_soon_threadsafe" in said.get(name, ""), (name, said.get(name))
    mux.run_ready()
    assert a.rec.names() == [kind.client_open] and b.rec.names() == [kind.server_open]
    b.recv(bytearray(16))
    a.send(b"still ok")
    mux.run_until(lambda: b.rec.received == b"still ok")
    close_dgram_pair(p)


def check_dgram_held_reach_recv_before_lost(
    mux: Mux, log: IInstanceLog, kind: DatagramKind
) -> None:
    """The kernel transport under `a` is lost (closed under it, as a fatal socket error
    would) while datagrams are held: the held ones still go to the Recvs posted
    afterwards, then SOCKET_LOST, once."""
    p = make_dgram_pair(mux, log, kind)
    for i in range(3):
        p.b.send(bytes([65 + i]) * 50)
    mux.run_until(lambda: len(p.a.sock._q.held) == 3)  # type: ignore[attr-defined]
    kind.break_transport(p.a.sock)
    mux.run_ready()
    assert p.a.rec.names() == [kind.client_open], p.a.rec.events  # held, not ended
    p.a.send(b"never sent")  # no transport: dropped (and logged), never reported as sent
    for _ in range(4):
        p.a.recv(bytearray(50))
    mux.run_until(lambda: p.a.rec.shutdown is not None)
    assert p.a.got() == [50] * 3
    assert p.a.rec.received == b"A" * 50 + b"B" * 50 + b"C" * 50
    mux.run_ready()
    assert p.a.rec.sends_done == 0, p.a.rec.events
    ended_once(p.a.rec, ShutdownReason.SOCKET_LOST)
    close_dgram_pair(p)


def check_dgram_without_recv_holds_a_bounded_number(
    mux: Mux, log: IInstanceLog, kind: DatagramKind
) -> None:
    """Datagrams that arrive with no Recv pending are held up to the hold limit (made 16
    here); the rest are dropped and the drop logged under the kind's flag; the held ones
    are delivered in order afterwards, and later ones as usual."""
    from .streams import captured_log

    clog, lines = captured_log(kind.flag)
    srv = dgram_server(mux, clog, kind)
    a = dgram_client(mux, log, kind, srv.port)
    b = dgram_wait(mux, kind, a, srv)
    b.sock._q.max_items = 16  # type: ignore[attr-defined]
    for i in range(48):
        a.send(i.to_bytes(2, "big") * 20)
    mux.run_until(lambda: a.rec.sends_done == 48)
    mux.run_for(0.1)
    assert "held: dropping" in lines.text(), lines.text()
    assert b.rec.names() == [kind.server_open]
    for _ in range(17):
        b.recv(bytearray(64))
    mux.run_until(lambda: len(b.got()) == 16)
    mux.run_ready()
    assert b.rec.received == b"".join(i.to_bytes(2, "big") * 20 for i in range(16))
    a.send(b"fresh")
    mux.run_until(lambda: b.rec.received.endswith(b"fresh"))
    close_dgram_pair(DgPair(a, b, srv))


def _fails(
    mux: Mux,
    kind: DatagramKind | StreamKind,
    action: Callable[[ISocket], None],
    reason: ShutdownReason,
    flags: int | None = None,
) -> list[str]:
    """A fresh socket of the kind, `action` on it: its one callback is
    SocketShutdown(reason); the lines logged (under `flags`, the kind's by default)."""
    from .streams import captured_log

    clog, lines = captured_log(kind.flag if flags is None else flags)
    prov = kind.provider()
    rec = Recorder("failing")
    ctx = kind.client_context(prov, IInstanceLog())  # the socket's lines only
    sock = prov.CreateSocket(mux, rec, clog, kind.use_ipv6, ctx)
    call(rec, action, sock)
    mux.run_until(lambda: rec.shutdown is not None, what=reason.name)
    mux.run_ready()  # what else was due comes now (and would be in events or violations)
    assert rec.events == [("shutdown", reason)], rec.events
    assert not rec.violations, rec.violations
    sock.Delete()
    return list(lines.lines)


def _calls(method: str, *args: Any) -> Callable[[ISocket], None]:
    """An action for `_fails`: call `method(*args)` on the socket."""
    return lambda s: getattr(s, method)(*args)


def _logged_under(lines: list[str], flag: int, *words: str) -> None:
    prefix = u.LogFlags(flag).name or ""
    assert lines and all(line.startswith(prefix) for line in lines), lines
    for w in words:
        assert any(w.lower() in line.lower() for line in lines), (w, lines)


def _address_failures(mux: Mux, kind: DatagramKind | StreamKind, host: str, stype: int) -> int:
    """The failures of Bind and Connect every IP kind shares (see the checks that call
    it); the address family of `host`."""
    R_ = ShutdownReason
    for address in ("127.0.0.1", "127.0.0.1:99999", "[::1", "bad name:5", ""):
        lines = _fails(mux, kind, _calls("Connect", address), R_.SOCKET_ADDRESS_INVALID)
        _logged_under(lines, kind.flag)
    for addr, port in (("999.1.1.1", 0), (host, 70000), ("[::1", 0)):
        lines = _fails(mux, kind, _calls("Bind", addr, port), R_.SOCKET_ADDRESS_INVALID)
        _logged_under(lines, kind.flag)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, stype) as holder:
        holder.bind((host, 0))
        if stype == socket.SOCK_STREAM:
            holder.listen(1)
        held = holder.getsockname()[1]
        lines = _fails(mux, kind, _calls("Bind", host, held), R_.SOCKET_ADDR_IN_USE)
        _logged_under(lines, kind.flag, "Address already in use")
        quiet = _fails(
            mux, kind, _calls("Bind", host, held), R_.SOCKET_ADDR_IN_USE, ALL_LOG_FLAGS & ~kind.flag
        )
        assert quiet == [], quiet
    lines = _fails(mux, kind, _calls("Bind", _unassignable(host), 0), R_.SOCKET_BIND_FAILED)
    _logged_under(lines, kind.flag, "Cannot assign requested address")
    return family


def _unassignable(host: str) -> str:
    """An address of no interface here (TEST-NET-1 / the documentation prefix)."""
    return "2001:db8::1" if ":" in host else "192.0.2.1"


def check_dgram_bad_addresses(mux: Mux, log: IInstanceLog, kind: DatagramKind) -> None:
    """Bind and Connect failures: SOCKET_ADDRESS_INVALID for strings that are no address,
    SOCKET_ADDR_IN_USE for a port someone holds, SOCKET_BIND_FAILED for an address on no
    interface; each with its detail logged under the kind's flag, and nothing logged
    without that flag."""
    _address_failures(mux, kind, kind.host, socket.SOCK_DGRAM)


def _open_fails(mux: Mux, kind: DatagramKind | StreamKind, module: Any, host: str) -> None:
    """Bind while `module` sees a socket() that fails with EMFILE: SOCKET_OPEN_FAILED,
    the errno's text logged under the kind's flag."""
    import errno
    import types

    import pytest

    def emfile(*args: Any, **kw: Any) -> socket.socket:
        raise OSError(errno.EMFILE, "Too many open files")

    fake = types.ModuleType("socket")
    fake.__dict__.update(vars(socket))
    fake.__dict__["socket"] = emfile
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(module, "socket", fake)
        lines = _fails(mux, kind, _calls("Bind", host, 0), ShutdownReason.SOCKET_OPEN_FAILED)
    _logged_under(lines, kind.flag, "Too many open files")


def check_dgram_open_failed(mux: Mux, log: IInstanceLog, kind: DatagramKind) -> None:
    """socket() itself fails (EMFILE): SOCKET_OPEN_FAILED with the errno logged."""
    import usocket_asyncio._datagram as datagram  # where UDP and DTLS sockets are made

    _open_fails(mux, kind, datagram, kind.host)


def _rejected(mux: Mux, kind: DatagramKind | StreamKind, address: str) -> None:
    """Connect to a closed port: SOCKET_CONNECT_REJECTED, "refused" logged under the
    kind's flag only."""
    reason = ShutdownReason.SOCKET_CONNECT_REJECTED
    _logged_under(_fails(mux, kind, _calls("Connect", address), reason), kind.flag, "refused")
    others = ALL_LOG_FLAGS & ~kind.flag
    assert _fails(mux, kind, _calls("Connect", address), reason, others) == []


def check_dgram_connect_rejected(mux: Mux, log: IInstanceLog, kind: DatagramKind) -> None:
    """A handshake to a closed port (ICMP port unreachable): SOCKET_CONNECT_REJECTED,
    "refused" logged under the kind's flag only."""
    from .loop import free_port

    _rejected(mux, kind, kind.address(free_port(socket.AF_INET, socket.SOCK_DGRAM)))


def tos(sock: ISocket) -> int:
    """The traffic-class bits of the kernel socket under any library socket."""
    raw: Any = sock._qos_socket()  # type: ignore[attr-defined]
    if raw.family == socket.AF_INET6:
        return int(raw.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS))
    return int(raw.getsockopt(socket.IPPROTO_IP, socket.IP_TOS))


def check_dgram_bind_none_local_address_qos_and_by_name(
    mux: Mux, log: IInstanceLog, kind: DatagramKind
) -> None:
    """Bind(None) binds every interface and reports "0.0.0.0" ("::" with useIPv6);
    GetLocalAddress agrees; SetQoS before Bind applies to the bound socket; a connected
    socket reaches it by name ("localhost:port") and marks its packets after SetQoS."""
    ssock, srec, port = _bound_to_any(mux, log, kind, kind.listener)
    if not kind.listener:
        call(srec, ssock.Recv, bytearray(8))
    if kind.connected:
        a = dgram_client(mux, log, kind, port, address=f"localhost:{port}")
        _connected_with_qos(mux, a.sock, a.rec)
        a.send(b"hi")
    else:
        a = dgram_client(mux, log, kind, port)
        a.send(b"hi")
    if not kind.listener:
        mux.run_until(lambda: srec.received == b"hi")
        got = next(e for e in srec.events if e[0] == "recvfrom")
        assert str(got[2]) in (kind.host, "127.0.0.1", "::ffff:127.0.0.1"), got
    mux.run_until(lambda: a.rec.sends_done == 1)
    for s in (a.sock, ssock):
        s.Delete()
    assert not a.rec.violations and not srec.violations


def check_dgram_sendto_ignored(mux: Mux, log: IInstanceLog, kind: DatagramKind) -> None:
    """SendTo is UDP only and ignored elsewhere: no exception, no callback, no byte."""
    p = make_dgram_pair(mux, log, kind)
    p.b.recv(bytearray(64))
    call(p.a.rec, p.a.sock.SendTo, b"not sent", None, "127.0.0.1", 9)
    p.a.send(b"sent")
    mux.run_until(lambda: p.b.rec.received != b"" and p.a.rec.sends_done == 1)
    mux.run_ready()
    assert p.b.rec.received == b"sent" and p.a.rec.names() == ["connect", "send"]
    close_dgram_pair(p)


def check_dgram_second_bind_or_connect_raises(
    mux: Mux, log: IInstanceLog, kind: DatagramKind
) -> None:
    """Bind or Connect a second time, or the other mode's call, raises SocketModeError at
    once with a sentence and changes nothing; Accept returns None; the provider deleted
    at once leaves its sockets working."""
    prov = kind.provider()
    srv = dgram_server(mux, log, kind, prov=prov)
    a = dgram_client(mux, log, kind, srv.port, prov=prov)
    prov.Delete()
    for fn, args in (
        (srv.sock.Bind, (kind.host, 0)),
        (srv.sock.Connect, (kind.address(srv.port),)),
        (a.sock.Connect, (kind.address(srv.port),)),
        (a.sock.Bind, (kind.host, 0)),
    ):
        said = raises_mode_error(fn, *args)
        assert said.strip().count(" ") >= 3, said  # a sentence, not a code
    b = dgram_wait(mux, kind, a, srv)
    b.recv(bytearray(8))
    a.send(b"still")
    mux.run_until(lambda: b.rec.received == b"still")
    if kind.listener:
        assert srv.accept_returns == [None]
    assert a.rec.shutdown is None and b.rec.shutdown is None
    close_dgram_pair(DgPair(a, b, srv))


def check_dgram_calls_after_run_returned(mux: Mux, log: IInstanceLog, kind: DatagramKind) -> None:
    """An exchange set up while Run() ran; Run() returns (Terminate); Send, Recv and
    Shutdown made then take effect when the loop runs again."""
    arec = Recorder("a")
    arec.hooks[kind.client_open] = lambda s, *rest: mux.Terminate()

    def brec() -> Recorder:
        rec = Recorder("b")
        rec.hooks[kind.server_recv] = lambda s, *rest: srvs[0].peers[0].send(b"pong")
        return rec

    srvs = [dgram_server(mux, log, kind, brec)]
    a = dgram_client(mux, log, kind, srvs[0].port, arec)
    mux.Run()  # returns once a is open
    assert arec.names() == [kind.client_open]
    b = dgram_wait(mux, kind, a, srvs[0])
    b.recv(bytearray(4))
    arec.hooks[kind.client_recv] = lambda s, *rest: mux.Terminate()
    a.send(b"ping")
    a.recv(bytearray(4))
    assert arec.names() == [kind.client_open]
    mux.Run()
    assert arec.names() == [kind.client_open, "send", kind.client_recv]
    assert arec.received == b"pong"
    call(arec, a.sock.Shutdown)
    assert arec.shutdown is None
    mux.run_until(lambda: arec.shutdown is not None)
    ended_once(arec, ShutdownReason.SOCKET_SHUTDOWN_NORMAL)
    close_dgram_pair(DgPair(a, b, srvs[0]))


def check_dgram_nothing_kept_calls_before_run(
    mux: Mux, log: IInstanceLog, kind: DatagramKind
) -> None:
    """Item 0 with provider.Delete() and ISocketContext.Delete(): the app keeps no
    reference to any socket, makes every call before the loop runs, and deletes the
    provider and the contexts at once; the sockets live on and the exchange completes."""
    import gc

    from .loop import free_port

    fam = socket.AF_INET6 if kind.use_ipv6 else socket.AF_INET
    port = free_port(fam, socket.SOCK_DGRAM)
    prov = kind.provider()
    sctx, cctx = kind.server_context(prov, log), kind.client_context(prov, log)
    lrec, srec, arec = Recorder("listener"), Recorder("b"), Recorder("a")
    if kind.listener:
        lrec.hooks["listen"] = lambda s, a, p: s.Accept(srec)
        srec.hooks["accept"] = lambda s: s.Recv(bytearray(11))
        srec.hooks["recv"] = lambda s, b, n: s.Send(b"pong")
    else:
        srec = lrec
        lrec.hooks["recvfrom"] = lambda s, b, n, a, p: s.SendTo(b"pong", None, a, p)
    lsock = prov.CreateSocket(mux, lrec, log, kind.use_ipv6, sctx)
    lsock.Bind(kind.host, port)
    if kind.listener:
        lsock.Listen()  # while still binding: listens once bound
    else:
        lsock.Recv(bytearray(11))
    asock = prov.CreateSocket(mux, arec, log, kind.use_ipv6, cctx)
    if kind.connected:
        asock.Connect(kind.address(port), kind.server_name)
        asock.Send(b"before loop")
    else:
        asock.Bind(kind.host, 0)
        asock.SendTo(b"before loop", None, kind.host, port)
    asock.Recv(bytearray(4))
    arec.hooks[kind.client_recv] = lambda s, *rest: s.Shutdown()
    drop_provider(prov, sctx, cctx)
    del lsock, asock, prov, sctx, cctx
    gc.collect()
    assert lrec.events == [] and arec.events == []
    mux.run_until(lambda: arec.shutdown is not None and (srec.shutdown is not None or srec is lrec))
    gc.collect()
    assert lrec.names()[:2] == (["bind", "listen"] if kind.listener else ["bind", "recvfrom"])
    assert arec.names() == [kind.client_open, "send", kind.client_recv, "shutdown"], arec.events
    assert arec.received == b"pong" and srec.received == b"before loop"
    ended_once(arec, ShutdownReason.SOCKET_SHUTDOWN_NORMAL)
    if kind.listener:
        mux.run_until(lambda: srec.shutdown is not None)
        ended_once(srec, ShutdownReason.SOCKET_SHUTDOWN_BY_PEER)
    assert delete_live(mux) == (3 if kind.listener else 2)
    mux.run_ready()
    assert not lrec.violations and not srec.violations


NO_NETWORK_CHILD = """
import asyncio, logging, sys, time
from usocket_asyncio import *

class U(USocket):
    reason = None
    def SocketShutdown(self, socket, reason):
        self.reason = reason

logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
which, loop = sys.argv[1], sys.argv[2]
log = IInstanceLog(LOG_TCP | LOG_TLS | LOG_DTLS | LOG_UDP)
mux = IIoMux.Create(uvloop=loop == "uvloop")

def make(user):
    if which == "udp":
        return CreateUDPSocketProvider().CreateSocket(mux, user, log)
    if which == "tcp":
        return CreateTCPSocketProvider().CreateSocket(mux, user, log)
    prov = CreateTLSSocketProvider(None)
    ctx = prov.CreateSocketContext(log)
    if which == "dtls":
        ctx.EnableDTLS(False)
    return prov.CreateSocket(mux, user, log, False, ctx)

attempts = {
    "Connect": lambda s: s.Connect("no-such-host.invalid:80"),
    "Bind": lambda s: s.Bind("no-such-host.invalid", 0),
    # the namespace's loopback is down: connect() fails with ENETUNREACH
    "Unreachable": lambda s: s.Connect("127.0.0.1:80"),
}
for what, attempt in attempts.items():
    user = U()
    sock = make(user)
    attempt(sock)
    deadline = time.monotonic() + 5
    while user.reason is None and time.monotonic() < deadline:
        mux.loop.run_until_complete(asyncio.sleep(0.01))
    print("RESULT", what, None if user.reason is None else user.reason.name)
    sock.Delete()
mux.Close()
"""


def check_unresolvable_and_unreachable(mux: Mux, log: IInstanceLog, kind: Any, *rest: Any) -> None:
    """In a network namespace of its own (nothing leaves the machine): an unresolvable
    name is SOCKET_CONNECT_FAILED for Connect and SOCKET_BIND_FAILED for Bind; an
    unreachable network is SOCKET_CONNECT_FAILED (for UDP too: connect() itself fails),
    with the errno logged. (Stream and datagram kinds: the child makes the kind's socket.)"""
    import shutil
    import subprocess
    import sys

    import pytest

    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "-n", "true"], capture_output=True).returncode:
        pytest.skip("needs unshare -n (a private network namespace) to resolve nothing")
    r = subprocess.run(
        [unshare, "-n", sys.executable, "-c", NO_NETWORK_CHILD, kind.extra["child"], mux.kind],
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "RESULT Connect SOCKET_CONNECT_FAILED" in r.stdout, out
    assert "RESULT Bind SOCKET_BIND_FAILED" in r.stdout, out
    assert "RESULT Unreachable SOCKET_CONNECT_FAILED" in r.stdout, out
    assert "Network is unreachable" in r.stdout, out


# --------------------------------------------------------------------------- the datagram kinds


def _udp_kind(name: str, host: str, connected: bool) -> DatagramKind:
    """UDP; the connected kind also runs the no-network child (bound ones would repeat it)."""
    return DatagramKind(
        name=name,
        provider=u.CreateUDPSocketProvider,
        host=host,
        flag=int(u.LogFlags.LOG_UDP),
        connected=connected,
        break_transport=lambda s: s._tr.abort(),  # type: ignore[attr-defined]
        extra={"child": "udp"} if connected else {},
    )


def _dtls_context(server: bool) -> Callable[[ISocketProvider, IInstanceLog], ISocketContext]:
    def make(p: ISocketProvider, log: IInstanceLog) -> ISocketContext:
        ctx = p.CreateSocketContext(log)
        ctx.EnableDTLS(False)
        if not server:  # the server's default self-signed certificate
            ctx.DisableCertificateVerification()
        return ctx

    return make


DATAGRAM_KINDS = {
    "udp4-bound": _udp_kind("udp4-bound", "127.0.0.1", False),
    "udp6-bound": _udp_kind("udp6-bound", "::1", False),
    "udp-connected": _udp_kind("udp-connected", "127.0.0.1", True),
    "dtls": DatagramKind(
        name="dtls",
        provider=lambda: u.CreateTLSSocketProvider(None),
        host="127.0.0.1",
        flag=int(u.LogFlags.LOG_DTLS),
        connected=True,
        listener=True,
        server_context=_dtls_context(True),
        client_context=_dtls_context(False),
        server_name="localhost",
        break_transport=lambda s: s._ep.tr.abort(),  # type: ignore[attr-defined]
        extra={"child": "dtls"},
    ),
}
"""UDP bound on IPv4 and IPv6, UDP connected, and DTLS (client and accepted peer)."""

DATAGRAM_CHECKS: list[Callable[[Mux, IInstanceLog, DatagramKind], None]] = [
    check_dgram_exchange,
    check_dgram_calls_inside_callbacks,
    check_dgram_send_before_open,
    check_dgram_delete_inside_each_callback,
    check_dgram_raising_callback,
    check_dgram_recv_partial_makes_no_difference,
    check_dgram_set_user,
    check_dgram_callbacks_set_on_the_instance,
    check_dgram_resize_the_buffer_inside_recv_result,
    check_dgram_calls_from_a_thread_inside_a_callback,
    check_dgram_calls_from_another_thread_raise,
    check_dgram_held_reach_recv_before_lost,
    check_dgram_without_recv_holds_a_bounded_number,
    check_dgram_bad_addresses,
    check_dgram_open_failed,
    check_dgram_connect_rejected,
    check_dgram_bind_none_local_address_qos_and_by_name,
    check_dgram_sendto_ignored,
    check_dgram_second_bind_or_connect_raises,
    check_dgram_calls_after_run_returned,
    check_dgram_nothing_kept_calls_before_run,
    check_unresolvable_and_unreachable,
]
DATAGRAM_APPLIES: dict[Callable[..., None], Callable[[DatagramKind], bool]] = {
    # only a handshake can be refused; a UDP Connect sends nothing (ICMP: item 10)
    check_dgram_connect_rejected: lambda k: k.listener,
    # SendTo is UDP's own
    check_dgram_sendto_ignored: lambda k: k.listener,
    check_unresolvable_and_unreachable: lambda k: "child" in k.extra,
}
"""Checks that apply to some datagram kinds only (the others skip them)."""
PURE_ONLY_CHECKS: set[Callable[..., None]] = {check_dgram_open_failed}
"""Checks that patch module internals: the compiled build skips them."""


def run_dgram_check(
    check: Callable[..., None], mux: Mux, log: IInstanceLog, kind: DatagramKind
) -> None:
    """Run one datagram check; skip it where it does not apply."""
    import pytest

    import usocket_asyncio

    applies = DATAGRAM_APPLIES.get(check)
    if applies is not None and not applies(kind):
        pytest.skip(f"n/a for {kind.name}")
    if check in PURE_ONLY_CHECKS and usocket_asyncio.COMPILED:
        pytest.skip("patches module internals; the compiled build fixes them")
    check(mux, log, kind)


# --------------------------------------------------------------------------- the stream check list

ALL_CHECKS: list[Callable[..., None]] = [
    check_bulk_both_ways,
    check_exact_and_partial,
    check_recv_cancel,
    check_set_user,
    check_send_before_connect,
    check_flush_on_shutdown,
    check_shutdown_slow_reader,
    check_shutdown_stalled_reader,
    check_delete_inside_callbacks,
    check_callbacks_set_on_the_instance,
    check_resize_the_buffer_inside_recv_result,
    check_calls_from_a_thread_inside_a_callback,
    check_raising_callback,
    check_wrong_mode,
    check_bad_addresses,
    check_open_failed,
    check_bytes_before_peer_shutdown_reach_recv,
    check_nothing_kept_calls_before_run,
    check_bind_none_local_address_qos_and_by_name,
    check_sendto_ignored,
    check_without_recv_holds_a_bounded_amount,
    check_second_bind_or_connect_raises,
    check_calls_after_run_returned,
    check_delete_inside_bind_accept_and_canceled,
    check_unresolvable_and_unreachable,
]
RAW_PEER_CHECKS = [check_half_close_by_peer, check_reset_by_peer]
IP_ONLY_CHECKS = [
    check_bad_addresses,
    check_open_failed,
    check_bind_none_local_address_qos_and_by_name,
]
"""Checks of IP addresses: local sockets have their own (tests/test_local.py)."""


def run_check(
    check: Callable[..., None], mux: Mux, log: IInstanceLog, kind: StreamKind, tmp: str
) -> None:
    """Run one check; skip it for kinds it does not apply to (raw-peer checks without a
    raw peer, IP checks on local sockets, the no-network child where the kind names none,
    internals-patching checks on the compiled build)."""
    import pytest

    import usocket_asyncio

    if check in RAW_PEER_CHECKS and kind.raw_connect is None:
        pytest.skip(f"{kind.name} has no raw peer")
    if check in IP_ONLY_CHECKS and kind.loopback is None:
        pytest.skip(f"{kind.name} has no IP address")
    if check is check_unresolvable_and_unreachable and "child" not in kind.extra:
        pytest.skip(f"the no-network child runs on one kind per provider, not {kind.name}")
    if check in (check_open_failed,) and usocket_asyncio.COMPILED:
        pytest.skip("patches module internals; the compiled build fixes them")
    check(mux, log, kind, tmp)
