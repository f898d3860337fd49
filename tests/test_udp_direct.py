"""UDP's direct send path: `SendTo`/`Send` send each datagram from the app's buffer
while the transport queues nothing (in the compiled build through `_fastsend.DgramSender`,
which keeps the last destination's sockaddr), and hand it to the transport as bytes of
its own when the kernel cannot take it now.

What a user checks, on both loops (and both builds: the compiled run of the suite goes
through the helper): every datagram reaches the peer it was sent to, whole or the part
`len` asks for, once; a datagram the transport must queue is not changed by the app
reusing its buffer at once; `SocketSendResult` once per call, never inside it; nothing is
sent on a descriptor after the socket let go of it.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import Any

import pytest
from kit.conformance import call
from kit.loop import Mux, Recorder, have_ipv6, provider

from usocket_asyncio import IInstanceLog, ISocket


def inside(sock: ISocket) -> Any:
    """The library socket, for a look at its private fields."""
    return sock


def peer4() -> socket.socket:
    p = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    p.bind(("127.0.0.1", 0))
    p.settimeout(5)
    return p


def opened(mux: Mux, log: IInstanceLog, connect_to: int | None = None) -> tuple[ISocket, Recorder]:
    """A bound UDP socket (or one connected to 127.0.0.1:`connect_to`), open."""
    rec = Recorder("udp")
    sock = provider("udp").CreateSocket(mux, rec, log)
    if connect_to is None:
        sock.Bind("127.0.0.1", 0)
        mux.run_until(lambda: "bind" in rec.names(), what="bind")
    else:
        sock.Connect(f"127.0.0.1:{connect_to}")
        mux.run_until(lambda: "connect" in rec.names(), what="connect")
    return sock, rec


def rec_done(mux: Mux, rec: Recorder, n: int) -> None:
    """Run the loop until `rec` has `n` send results."""
    mux.run_until(lambda: rec.sends_done == n, what=f"{n} send results")


class NotNow:
    """Stands in for the socket's sender (`_tx`, compiled build) or OS socket (`_sock`,
    pure build): the kernel takes nothing now (EAGAIN)."""

    def __getattr__(self, name: str) -> Any:
        def refuse(*args: Any) -> Any:
            raise BlockingIOError(11, "Resource temporarily unavailable")

        return refuse


class Keeping:
    """A transport that keeps a reference to each datagram it is given, as uvloop's does
    when it queues (and still sends it, so the peer gets it)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.kept: list[Any] = []

    def sendto(self, data: Any, addr: Any = None) -> None:
        self.kept.append(data)
        self.inner.sendto(data, addr)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.mark.parametrize("mode", ["bound", "connected"])
def test_a_datagram_the_kernel_cannot_take_goes_to_the_transport_as_a_copy(
    mux: Mux, log: IInstanceLog, mode: str
) -> None:
    """EAGAIN on the direct send: the transport gets the datagram as bytes of its own, so
    the app reusing its buffer right after the call changes nothing; the peer gets each
    datagram intact and in order, and each call one SocketSendResult, after it."""
    peer = peer4()
    port = peer.getsockname()[1]
    sock, rec = opened(mux, log, None if mode == "bound" else port)
    s = inside(sock)
    if s._tx is not None:
        s._tx = NotNow()
    else:
        s._sock = NotNow()
    keeping = s._tr = Keeping(s._tr)
    ba = bytearray(os.urandom(1500))
    want = [bytes(ba[:1000]), bytes(ba)]
    try:
        for n in (1000, None):
            if mode == "bound":
                call(rec, sock.SendTo, ba, n, "127.0.0.1", port)
            else:
                call(rec, sock.Send, ba, n)
        ba[:] = bytes(len(ba))  # reused at once
        assert [bytes(d) for d in keeping.kept] == want
        assert all(d is not ba for d in keeping.kept)
        assert [peer.recv(2048) for _ in want] == want
        mux.run_until(lambda: rec.sends_done == 2, what="the send results")
    finally:
        peer.close()
        sock.Delete()
    assert not rec.violations, rec.violations


def test_each_datagram_reaches_the_peer_it_was_sent_to(mux: Mux, log: IInstanceLog) -> None:
    """SendTo to peers in turn (an address string, an ipaddress object, the same peer
    twice running): the kept destination follows each new one; `len` sends that part."""
    peers = [peer4() for _ in range(3)]
    ports = [p.getsockname()[1] for p in peers]
    sock, rec = opened(mux, log)
    ba = bytearray(os.urandom(600))
    order = [0, 1, 1, 2, 0, 2, 1, 0]
    try:
        for i, who in enumerate(order):
            ba[0] = i
            dst: Any = "127.0.0.1" if i % 2 else ipaddress.ip_address("127.0.0.1")
            call(rec, sock.SendTo, ba, 100 + i, dst, ports[who])
        for who, p in enumerate(peers):
            got = []
            for i, w in enumerate(order):
                if w == who:
                    got.append(p.recv(2048))
                    assert got[-1][0] == i and len(got[-1]) == 100 + i
                    assert got[-1][1:] == bytes(ba[1 : 100 + i])
        mux.run_until(lambda: rec.sends_done == len(order), what="the send results")
    finally:
        for p in peers:
            p.close()
        sock.Delete()
    assert not rec.violations, rec.violations


@pytest.mark.skipif(not have_ipv6(), reason="no IPv6 loopback")
def test_ipv6_replies_go_to_each_sender(mux: Mux, log: IInstanceLog) -> None:
    """An IPv6 socket answering an IPv6 peer and (dual stack) an IPv4 one, through the
    source it was given: each gets its own reply."""
    rec = Recorder("udp6")
    sock = provider("udp").CreateSocket(mux, rec, log, True)
    sock.Bind(None, 0)
    mux.run_until(lambda: "bind" in rec.names(), what="bind")
    port = rec.events[0][2]
    buf = bytearray(100)

    def echo(s: ISocket, b: Any, n: int, ip: Any, p: int) -> None:
        s.SendTo(b, n, ip, p)
        s.Recv(buf)

    rec.hooks["recvfrom"] = echo
    call(rec, sock.Recv, buf)
    p6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    p6.bind(("::1", 0))
    p6.settimeout(5)
    p4 = peer4()
    try:
        for i in range(3):
            p6.sendto(b"six%d" % i, ("::1", port))
            rec_done(mux, rec, 2 * i + 1)
            p4.sendto(b"four%d" % i, ("127.0.0.1", port))
            rec_done(mux, rec, 2 * i + 2)
            assert p6.recv(100) == b"six%d" % i
            assert p4.recv(100) == b"four%d" % i
    finally:
        p4.close()
        p6.close()
        sock.Delete()
    assert not rec.violations, rec.violations


@pytest.mark.parametrize("end", ["Shutdown", "Delete"])
def test_the_sender_is_dropped_with_the_socket(mux: Mux, log: IInstanceLog, end: str) -> None:
    """However the socket ends, it lets go of its sender (which writes to the descriptor
    the transport owns, and closes): no send after that can reach a reused descriptor."""
    sock, rec = opened(mux, log)
    s = inside(sock)
    had = s._tx is not None
    getattr(sock, end)()
    if end == "Shutdown":
        mux.run_until(lambda: rec.shutdown is not None, what="the end")
    assert s._tx is None and s._sock is None
    if had:
        assert s._tr is None
    if end == "Shutdown":
        sock.Delete()


def test_dgram_sender_itself() -> None:
    """The compiled helper alone: a part of a buffer, the connected peer, a destination
    form it leaves to `socket.sendto` (a name), IPv4-mapped on a dual-stack socket, and
    a size beyond the buffer."""
    fastsend = pytest.importorskip("usocket_asyncio._fastsend")
    if not hasattr(fastsend, "DgramSender"):
        pytest.skip("the helper of this build has no datagram sender")
    r = peer4()
    dst = r.getsockname()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.connect(dst)
    try:
        tx = fastsend.DgramSender(s)
        assert tx.send(bytearray(b"hello world"), 5, dst) == 5
        assert r.recv(100) == b"hello"
        assert tx.send(b"again", -1, dst) == 5
        assert r.recv(100) == b"again"
        assert tx.send(b"by name", -1, ("localhost", dst[1])) == 7
        assert r.recv(100) == b"by name"
        assert tx.send(memoryview(b"0123456789"), 3, ("localhost", dst[1])) == 3
        assert r.recv(100) == b"012"
        with pytest.raises(ValueError):
            tx.send(b"x", 5, dst)
        assert fastsend.DgramSender(c).send(b"connected", -1, None) == 9
        assert r.recv(100) == b"connected"
        if have_ipv6():
            s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            s6.bind(("::", 0))
            try:
                tx6 = fastsend.DgramSender(s6)
                assert tx6.send(b"mapped", -1, ("::ffff:127.0.0.1", dst[1], 0, 0)) == 6
                assert r.recv(100) == b"mapped"
            finally:
                s6.close()
    finally:
        for x in (r, s, c):
            x.close()
