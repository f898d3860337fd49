"""The direct send path (`_direct.py`): `Send` on a TCP or local socket writes to the OS
socket itself while the transport holds nothing, and hands the rest to the transport.

What a user checks, on both loops (and, in the compiled run of the suite, through the
compiled helper): the bytes arrive intact and in order across the switches between the
direct path and the transport; `SocketSendResult` comes only once the kernel took the
bytes; a kernel that takes nothing, a peer's reset, `Shutdown`, `Delete` and
`UpgradeToTLSSocket` right after a `Send` lose nothing and report the right end. The
peer is a plain socket the test reads (or does not read) itself.
"""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import socket
import struct
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
from kit.certs import delete, ended_once, make_ctx, pem_of
from kit.conformance import call
from kit.loop import Mux, R, Recorder, fd_count, provider
from kit.streams import captured_log

import usocket_asyncio
from usocket_asyncio import IInstanceLog, ISocket, LogFlags, _direct

KINDS = ["tcp", "local"]
TINY = 4096
"""SO_SNDBUF/SO_RCVBUF of the ends that must fill up (the kernel doubles it)."""
BIG = 1 << 20


def sha(b: bytes | bytearray) -> str:
    return hashlib.sha256(b).hexdigest()


class Spy:
    """Wraps a socket's sender: counts the direct sends and what the kernel took; a test
    may make the next ones raise."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0
        self.took: list[int] = []
        self.raise_next: list[OSError] = []
        self.writes = 0

    def send(self, *args: Any) -> int:
        self.calls += 1
        if self.raise_next:
            raise self.raise_next.pop(0)
        n = int(self.inner.send(*args))
        self.took.append(n)
        return n

    def write(self, data: Any, size: int | None = None) -> int:
        """The compiled helper's `write` (what `Send` calls there while the path is
        open): the bytes left over, or -1 for a buffer it leaves to `send`."""
        self.calls += 1
        if self.raise_next:
            raise self.raise_next.pop(0)
        left = int(self.inner.write(data, size))
        if left < 0:
            self.calls -= 1  # nothing sent: `Send` goes on to `send`
        else:
            self.writes += 1
            self.took.append((len(data) if size is None else size) - left)
        return left


class Peer:
    """A plain socket at the other end of a library client, read only when asked."""

    def __init__(self, kind: str, tmp: str, rcvbuf: int | None) -> None:
        if kind == "local":
            self.lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.address = os.path.join(tmp, "peer.sock")
            self.lsock.bind(self.address)
        else:
            self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.lsock.bind(("127.0.0.1", 0))
            self.address = f"127.0.0.1:{self.lsock.getsockname()[1]}"
        if rcvbuf is not None:
            self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.lsock.listen(4)
        self.lsock.settimeout(5)
        self.conn: socket.socket | None = None

    def accept(self) -> socket.socket:
        if self.conn is not None:
            self.conn.close()
        self.conn, _ = self.lsock.accept()
        self.conn.setblocking(False)
        return self.conn

    def read(self, mux: Mux, n: int, timeout: float = 20.0) -> bytes:
        """Read exactly `n` bytes (running the loop meanwhile, so the library can send)."""
        assert self.conn is not None
        got = bytearray()
        deadline = time.monotonic() + timeout
        while len(got) < n:
            assert time.monotonic() < deadline, f"read {len(got)} of {n} bytes"
            try:
                chunk = self.conn.recv(min(n - len(got), 1 << 20))
            except BlockingIOError:
                mux.run_for(0.002)
                continue
            assert chunk, f"EOF after {len(got)} of {n} bytes"
            got += chunk
        return bytes(got)

    def read_to_eof(self, mux: Mux, timeout: float = 20.0) -> bytes:
        assert self.conn is not None
        got = bytearray()
        deadline = time.monotonic() + timeout
        while True:
            assert time.monotonic() < deadline, f"no EOF after {len(got)} bytes"
            try:
                chunk = self.conn.recv(1 << 20)
            except BlockingIOError:
                mux.run_for(0.002)
                continue
            except ConnectionResetError:
                return bytes(got)
            if not chunk:
                return bytes(got)
            got += chunk

    def reset(self) -> None:
        """Close with a TCP reset (SO_LINGER 0); a local peer just closes."""
        assert self.conn is not None
        if self.conn.family != socket.AF_UNIX:
            self.conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.conn.close()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.lsock.close()


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def peer(kind: str, short_tmp: str) -> Iterator[Peer]:
    p = Peer(kind, short_tmp, TINY)
    yield p
    p.close()


def connected(mux: Mux, log: IInstanceLog, kind: str, peer: Peer) -> tuple[ISocket, Recorder]:
    """A library client connected to `peer`, which accepted it."""
    rec = Recorder("client")
    sock = provider(kind).CreateSocket(mux, rec, log)
    sock.Connect(peer.address)
    mux.run_until(lambda: "connect" in rec.names(), what="connect")
    peer.accept()
    return sock, rec


def inside(sock: ISocket) -> Any:
    """The library socket, for a look at its private fields."""
    return sock


def direct_of(sock: ISocket) -> Any:
    """The direct path's sender of a socket (None: it sends through its transport)."""
    return inside(sock)._direct


def os_socket(sock: ISocket) -> Any:
    """The OS socket under a connected library socket (its transport's)."""
    tr: Any = inside(sock)._tr
    return tr.get_extra_info("socket")


def shrink_sndbuf(sock: ISocket) -> None:
    os_socket(sock).setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, TINY)


def spy_on(sock: ISocket) -> Spy:
    d = direct_of(sock)
    assert d is not None, "a connected TCP/local socket sends directly"
    spy = Spy(d)
    inside(sock)._direct = spy
    inside(sock)._dfd = -1  # the pure build's `os.write` of a bytearray: through the spy too
    if inside(sock)._dsend is not None:  # the compiled helper's `write`: through the spy too
        inside(sock)._dsend = spy.write
    return spy


def buffered(sock: ISocket) -> int:
    tr: Any = inside(sock)._tr
    return int(tr.get_write_buffer_size())


# ----------------------------------------------------------------------------- the path


def test_each_kind_of_buffer_goes_direct_and_arrives_intact(
    mux: Mux, log: IInstanceLog, kind: str, peer: Peer
) -> None:
    sock, rec = connected(mux, log, kind, peer)
    spy = spy_on(sock)
    rng = bytes(range(256)) * 8
    ba = bytearray(rng)
    sends: list[tuple[Any, int | None]] = [
        (b"bytes as they are", None),
        (rng, 100),  # the first 100 bytes of a bytes
        (ba, 1000),  # part of a bytearray
        (ba, None),  # all of it
        (memoryview(ba)[10:300], None),  # a view's slice
        (memoryview(ba), 7),  # part of a view
        (memoryview(ba).cast("H")[:16], None),  # a view of 2-byte items: its bytes
    ]
    want = bytearray()
    for buf, n in sends:
        call(rec, sock.Send, buf, n)
        want += bytes(memoryview(buf).cast("B")[:n])
    ba[:] = bytes(len(ba))  # the app reuses its buffer at once
    got = peer.read(mux, len(want))
    assert sha(got) == sha(want)
    mux.run_until(lambda: rec.sends_done == len(sends), what="send results")
    # a `bytes` goes through uvloop's transport in the pure build (`_direct.takes_bytes`)
    direct = [
        len(p)
        for p, (b, _) in zip(_parts(sends), sends, strict=True)
        if type(b) is not bytes or inside(sock)._direct_bytes
    ]
    assert inside(sock)._direct_bytes == (_direct.FAST or mux.kind == "asyncio")
    assert spy.calls == len(direct) and spy.took == direct
    # the compiled build: one `write` of the helper per Send, but for the view of 2-byte
    # items (its general path casts it, then `send`)
    assert spy.writes == (len(sends) - 1 if _direct.FAST else 0)
    assert buffered(sock) == 0
    assert not rec.violations
    sock.Delete()


def _parts(sends: list[tuple[Any, int | None]]) -> list[bytes]:
    return [bytes(memoryview(b).cast("B")[:n]) for b, n in sends]


def test_tls_and_the_compiled_helper(mux: Mux, log: IInstanceLog, ca: Any) -> None:
    """A TLS socket never sends directly (its bytes pass the SSL layer); the compiled
    build sends through its helper."""
    if usocket_asyncio.COMPILED:
        assert _direct.FAST and _direct.FdSender is not None
    tls = provider("tls")
    sctx = make_ctx(tls, log, cert=pem_of(ca, "127.0.0.1"))
    cctx = make_ctx(tls, log, trust=ca.cert_pem.bytes())
    lrec, srec, crec = Recorder("l"), Recorder("s"), Recorder("c")
    accepted: list[ISocket] = []
    lrec.hooks["bind"] = lambda s, a, p: s.Listen()
    lrec.hooks["listen"] = lambda s, a, p: s.Accept(srec)
    srec.hooks["accept"] = accepted.append
    listener = tls.CreateSocket(mux, lrec, log, False, sctx)
    listener.Bind("127.0.0.1", 0)
    mux.run_until(lambda: "bind" in lrec.names())
    client = tls.CreateSocket(mux, crec, log, False, cctx)
    client.Connect(f"127.0.0.1:{lrec.events[0][2]}")
    mux.run_until(lambda: "connect" in crec.names() and bool(accepted), what="handshake")
    assert direct_of(client) is None and direct_of(accepted[0]) is None
    call(crec, client.Send, b"through the SSL layer")
    call(srec, accepted[0].Recv, bytearray(21))
    mux.run_until(lambda: srec.received == b"through the SSL layer")
    delete(client, accepted[0], listener)


def test_the_senders_never_close_the_descriptor(mux: Mux) -> None:
    a, b = socket.socketpair()
    try:
        a.setblocking(False)
        borrowed = _direct.BorrowedSocket(a.family, a.type, 0, a.fileno())
        borrowed.settimeout(0.0)
        assert borrowed.send(b"abc", _direct.NOSIGNAL) == 3
        borrowed.close()
        del borrowed
        os.fstat(a.fileno())  # still open
        assert b.recv(10) == b"abc"
        if _direct.FdSender is None:
            return
        fast = _direct.FdSender(a.fileno())
        assert fast.send(bytearray(b"xyz123"), _direct.NOSIGNAL, 3) == 3  # part, no slice
        assert fast.send(memoryview(b"456")) == 3
        with pytest.raises(ValueError):
            fast.send(b"ab", 0, 3)
        assert b.recv(10) == b"xyz456"
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, TINY)
        with pytest.raises(BlockingIOError):
            while True:
                fast.send(bytes(65536), _direct.NOSIGNAL)
        b.close()
        with pytest.raises(OSError) as e:
            fast.send(b"x", _direct.NOSIGNAL)
        assert e.value.errno in (errno.EPIPE, errno.ECONNRESET)
        del fast
        os.fstat(a.fileno())
    finally:
        a.close()
        b.close()


def test_the_helpers_write(mux: Mux) -> None:
    """The compiled helper's `write(buf, len)`, `Send`'s one call: what the kernel did
    not take (0: all), -1 with nothing sent for what the general path must check or
    word, `OSError` as `send`."""
    if _direct.FdSender is None:
        pytest.skip("the pure build has no compiled helper")
    a, b = socket.socketpair()
    try:
        a.setblocking(False)
        w = _direct.FdSender(a.fileno(), _direct.NOSIGNAL)
        assert w.flags == _direct.NOSIGNAL
        assert w.write(bytearray(b"abcdef"), 2) == 0
        assert w.write(b"cd") == 0
        assert w.write(memoryview(bytearray(b"xxef"))[2:]) == 0
        assert w.write(b"gh", 0) == 0
        released = memoryview(b"zz")
        released.release()
        for buf, n in [
            (memoryview(bytearray(8)).cast("H"), None),  # not bytes: the general path casts
            (memoryview(b"zzzz")[::2], None),  # strided
            (released, None),
            ([1, 2], None),
            (b"zz", 3),  # beyond the buffer
            (b"zz", -1),
            (b"zz", True),  # not an int: the general path decides
            (b"zz", 1 << 70),
        ]:
            assert w.write(buf, n) == -1, (buf, n)
        assert b.recv(100) == b"abcdef"
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, TINY)
        left = 0
        with pytest.raises(BlockingIOError):
            while True:
                left = w.write(bytes(65536))
                assert 0 <= left < 65536
        assert left > 0, "the kernel took part of one before it took nothing"
        b.close()
        with pytest.raises(OSError) as e:
            w.write(bytearray(b"x"))
        assert e.value.errno in (errno.EPIPE, errno.ECONNRESET)
        del w
        os.fstat(a.fileno())
    finally:
        a.close()
        b.close()


# ----------------------------------------------------------------------------- partial


def test_partial_write_then_the_transport_then_direct_again(
    mux: Mux, log: IInstanceLog, kind: str, peer: Peer
) -> None:
    """The kernel takes part of a large Send: the rest waits in the transport (a copy:
    the app reuses its buffer), Sends meanwhile queue behind it, no SocketSendResult
    until the kernel has every byte; then the next Send is direct again. The bytes
    arrive in Send order."""
    sock, rec = connected(mux, log, kind, peer)
    shrink_sndbuf(sock)
    spy = spy_on(sock)
    a = bytearray(os.urandom(BIG))
    a_copy = bytes(a)
    call(rec, sock.Send, a, BIG - 1)
    assert spy.calls == 1 and 0 < spy.took[0] < BIG - 1, spy.took
    assert buffered(sock) > 0
    a[:] = bytes(BIG)  # reused at once: the transport holds a copy
    b = os.urandom(50_000)
    c = memoryview(bytearray(os.urandom(30_000)))
    c_copy = bytes(c[1:])
    call(rec, sock.Send, b)
    call(rec, sock.Send, c[1:])
    c[:] = bytes(len(c))
    assert spy.calls == 1, "while the transport holds bytes, Sends go behind them"
    mux.run_for(0.05)  # the peer reads nothing: the kernel cannot take it all
    assert rec.sends_done == 0 and "send" not in rec.names()
    got = peer.read(mux, BIG - 1)
    assert sha(got) == sha(a_copy[: BIG - 1])
    assert peer.read(mux, len(b)) == b
    assert peer.read(mux, len(c_copy)) == c_copy
    mux.run_until(lambda: rec.sends_done == 3, what="three send results")
    d = bytearray(os.urandom(1000))
    call(rec, sock.Send, d)
    assert spy.calls == 2 and spy.took[-1] == 1000, "direct again once the transport is empty"
    assert peer.read(mux, 1000) == d
    mux.run_until(lambda: rec.sends_done == 4)
    assert rec.names() == ["connect", "send", "send", "send", "send"]
    sock.Delete()


def test_a_kernel_that_takes_nothing(mux: Mux, log: IInstanceLog, kind: str, peer: Peer) -> None:
    """EAGAIN on the direct send (the kernel's buffer is full while the transport is
    empty): every byte goes to the transport, and the result waits for the kernel."""
    sock, rec = connected(mux, log, kind, peer)
    shrink_sndbuf(sock)
    spy = spy_on(sock)
    # fill the kernel's buffers behind the transport's back, as another writer would
    filler = socket.socket(fileno=os.dup(os_socket(sock).fileno()))
    filler.setblocking(False)
    filled = bytearray()
    try:
        while True:
            chunk = os.urandom(4096)
            n = filler.send(chunk)
            filled += chunk[:n]
    except BlockingIOError:
        pass
    finally:
        filler.close()
    x = bytearray(os.urandom(20_000))
    x_copy = bytes(x)
    call(rec, sock.Send, x)
    assert spy.calls == 1 and spy.took == [], "the kernel took nothing: EAGAIN"
    assert buffered(sock) == len(x)
    x[:] = bytes(len(x))
    mux.run_for(0.05)
    assert rec.sends_done == 0
    got = peer.read(mux, len(filled) + len(x_copy))
    assert sha(got) == sha(bytes(filled) + x_copy)
    mux.run_until(lambda: rec.sends_done == 1, what="the send result")
    # a simulated EAGAIN: the same
    spy.raise_next.append(BlockingIOError(errno.EAGAIN, "try again"))
    y = bytearray(os.urandom(5000))
    call(rec, sock.Send, y)
    assert peer.read(mux, len(y)) == y
    mux.run_until(lambda: rec.sends_done == 2)
    sock.Delete()


# ----------------------------------------------------------------------------- the end


def test_a_peer_reset_during_a_direct_write(
    mux: Mux, kind: str, peer: Peer, log: IInstanceLog
) -> None:
    """The peer resets (a local peer closes) and the Send comes before the loop noticed:
    the direct send fails, the transport meets the failure itself, and the socket ends
    with SOCKET_LOST (the errno logged), once, with nothing after it, and no
    SocketSendResult for the bytes that never left."""
    clog, lines = captured_log(int(LogFlags.LOG_TCP | LogFlags.LOG_LDS))
    sock, rec = connected(mux, clog, kind, peer)
    spy = spy_on(sock)
    peer.reset()
    time.sleep(0.05)  # the reset has arrived; the loop has not run
    call(rec, sock.Send, bytearray(b"into the void" * 100))
    assert spy.calls == 1 and spy.took == [], "the direct send failed"
    assert direct_of(sock) is None, "no direct send after a failure"
    mux.run_until(lambda: rec.shutdown is not None, what="SocketShutdown")
    mux.run_for(0.05)
    ended_once(rec, R.SOCKET_LOST)
    assert rec.names() == ["connect", "shutdown"], "no SocketSendResult: the bytes never left"
    assert any(("ECONNRESET" in ln or "EPIPE" in ln) for ln in lines.lines), lines.lines
    sock.Delete()


def test_send_racing_shutdown(mux: Mux, log: IInstanceLog, kind: str, peer: Peer) -> None:
    """Sends, some still in the transport, then Shutdown, then a Send (ignored): every
    byte before Shutdown arrives, then the close; the results, then SOCKET_SHUTDOWN_NORMAL."""
    sock, rec = connected(mux, log, kind, peer)
    shrink_sndbuf(sock)
    spy = spy_on(sock)
    a, b = os.urandom(BIG), os.urandom(3000)
    call(rec, sock.Send, bytearray(a))
    call(rec, sock.Send, b)
    call(rec, sock.Shutdown)
    assert direct_of(sock) is None
    call(rec, sock.Send, b"after Shutdown: ignored")
    assert spy.calls == 1
    got = peer.read_to_eof(mux)
    assert sha(got) == sha(a + b)
    mux.run_until(lambda: rec.shutdown is not None, what="SocketShutdown")
    assert rec.names() == ["connect", "send", "send", "shutdown"]
    ended_once(rec, R.SOCKET_SHUTDOWN_NORMAL)
    # all taken at once, then Shutdown in the same breath: the bytes, then the close
    sock2, rec2 = connected(mux, log, kind, peer)
    call(rec2, sock2.Send, b"short")
    call(rec2, sock2.Shutdown)
    assert peer.read_to_eof(mux) == b"short"
    mux.run_until(lambda: rec2.shutdown is not None)
    assert rec2.names() == ["connect", "send", "shutdown"]
    ended_once(rec2, R.SOCKET_SHUTDOWN_NORMAL)
    delete(sock, sock2)


def test_send_racing_delete(mux: Mux, log: IInstanceLog, kind: str, peer: Peer) -> None:
    """Delete right after a partial Send: no callback, the sender lets go of the
    descriptor (which the transport closes), nothing leaks."""
    warm, _ = connected(mux, log, kind, peer)  # what a loop makes at its first connection
    warm.Delete()
    mux.run_for(0.05)
    before = fd_count()
    sock, rec = connected(mux, log, kind, peer)
    before += 1  # the peer's end, which the peer closes below
    shrink_sndbuf(sock)
    d = direct_of(sock)
    call(rec, sock.Send, os.urandom(BIG))
    call(rec, sock.Send, b"more")
    call(rec, sock.Delete)
    assert direct_of(sock) is None
    if isinstance(d, _direct.BorrowedSocket):
        assert d.fileno() == -1  # detached, not closed: the transport closes it
    peer.read_to_eof(mux)
    mux.run_ready()
    assert peer.conn is not None
    peer.conn.close()
    peer.conn = None
    assert rec.names() == ["connect"] and not rec.violations
    mux.run_for(0.05)
    assert fd_count() <= before - 1


@pytest.mark.parametrize("held", [False, True], ids=["all-taken", "partly-held"])
def test_send_racing_upgrade_to_tls(mux: Mux, log: IInstanceLog, ca: Any, held: bool) -> None:
    """A plaintext Send (all taken by the kernel, or partly still in the transport) and
    UpgradeToTLSSocket at once: the plaintext arrives whole before the handshake; the
    TLS sockets never send directly, and the TCP socket handed over sends no more."""
    tcp, tls = provider("tcp"), provider("tls")
    sctx = make_ctx(tls, log, cert=pem_of(ca, "127.0.0.1"))
    cctx = make_ctx(tls, log, trust=ca.cert_pem.bytes())
    lrec, srec, crec = Recorder("l"), Recorder("s"), Recorder("c")
    got: list[ISocket] = []
    lrec.hooks["bind"] = lambda s, a, p: s.Listen()
    lrec.hooks["listen"] = lambda s, a, p: s.Accept(srec)
    srec.hooks["accept"] = got.append
    listener = tcp.CreateSocket(mux, lrec, log)
    listener.Bind("127.0.0.1", 0)
    mux.run_until(lambda: "bind" in lrec.names())
    tclient = tcp.CreateSocket(mux, crec, log)
    tclient.Connect(f"127.0.0.1:{lrec.events[0][2]}")
    mux.run_until(lambda: "connect" in crec.names() and bool(got))
    tserver = got[0]
    size = BIG if held else 2000
    if held:
        shrink_sndbuf(tclient)
    spy = spy_on(tclient)
    plain = os.urandom(size)
    call(crec, tclient.Send, bytearray(plain))
    assert spy.calls == 1 and (spy.took[0] < size) == held and (buffered(tclient) > 0) == held
    c, s = Recorder("tls-c"), Recorder("tls-s")
    tls_c = call(crec, tls.UpgradeToTLSSocket, tclient, mux, c, log, False, cctx)
    assert direct_of(tclient) is None
    call(crec, tclient.Send, b"ignored: handed over")
    assert spy.calls == 1
    call(c, tls_c.Send, b"secret")
    upgraded: list[ISocket] = []

    def on_plain(sock: ISocket, buf: Any, n: int) -> None:
        assert n == size
        srec.received = bytearray(bytes(buf[:n]))
        new = tls.UpgradeToTLSSocket(sock, mux, s, log, True, sctx)
        new.Recv(bytearray(6))
        upgraded.append(new)

    srec.hooks["recv"] = on_plain
    call(srec, tserver.Recv, bytearray(size))
    mux.run_until(lambda: s.received == b"secret", timeout=20, what="plaintext, then TLS")
    assert sha(srec.received) == sha(plain)
    assert direct_of(tls_c) is None and direct_of(upgraded[0]) is None
    assert crec.names() == ["connect"], "the TCP socket handed over hears nothing more"
    delete(tls_c, upgraded[0], listener)
    for r in (c, s, crec, srec):
        assert not r.violations, r.violations


# ----------------------------------------------------------------------------- UDP


def test_udp_datagrams_of_every_buffer_kind(mux: Mux, log: IInstanceLog) -> None:
    """UDP sends each datagram itself while the transport queues nothing: every kind of
    buffer arrives as one datagram, intact and in order; one result each."""
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.settimeout(5)
    port = peer.getsockname()[1]
    udp = provider("udp")
    brec, crec = Recorder("bound"), Recorder("connected")
    bound = udp.CreateSocket(mux, brec, log)
    bound.Bind("127.0.0.1", 0)
    conn = udp.CreateSocket(mux, crec, log)
    conn.Connect(f"127.0.0.1:{port}")
    mux.run_until(lambda: "bind" in brec.names() and "connect" in crec.names())
    ba = bytearray(os.urandom(1500))
    grams: list[tuple[Any, int | None]] = [
        (b"bytes", None),
        (ba, 1000),
        (ba, None),
        (memoryview(ba)[5:700], None),
        (memoryview(ba), 9),
    ]
    try:
        for buf, n in grams:
            call(brec, bound.SendTo, buf, n, "127.0.0.1", port)
            call(crec, conn.Send, buf, n)
        want = [bytes(memoryview(b)[:n]) for b, n in grams for _ in range(2)]
        ba[:] = bytes(len(ba))
        got = [peer.recv(2048) for _ in want]
        assert got == want
        mux.run_until(lambda: brec.sends_done == len(grams) and crec.sends_done == len(grams))
        assert inside(bound)._tr.get_write_buffer_size() == 0
    finally:
        peer.close()
        delete(bound, conn)
    assert not brec.violations and not crec.violations


def test_udp_a_refused_datagram_is_logged_and_the_socket_carries_on(mux: Mux) -> None:
    """The kernel refuses a direct send (the port was unreachable): logged, as the
    transport does; no end of the socket, and its send result still follows."""
    clog, lines = captured_log(int(LogFlags.LOG_UDP))
    gone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    gone.bind(("127.0.0.1", 0))
    port = gone.getsockname()[1]
    gone.close()
    rec = Recorder("udp")
    sock = provider("udp").CreateSocket(mux, rec, clog)
    sock.Connect(f"127.0.0.1:{port}")
    mux.run_until(lambda: "connect" in rec.names())
    call(rec, sock.Send, b"first")
    mux.run_until(lambda: rec.sends_done == 1)
    time.sleep(0.05)  # the ICMP error is pending on the socket; the loop has not run
    call(rec, sock.Send, b"second")
    mux.run_until(lambda: rec.sends_done == 2)
    mux.run_until(lambda: any("refused" in ln.lower() for ln in lines.lines), what="the log line")
    mux.run_for(0.05)
    assert rec.shutdown is None and rec.names() == ["connect", "send", "send"]
    sock.Delete()


# ----------------------------------------------------------- the pure build's os.write


def test_the_pure_builds_bytearray_path_writes_the_descriptor(
    mux: Mux, log: IInstanceLog, kind: str, peer: Peer
) -> None:
    """A bytearray Send in the pure build goes to the descriptor with `os.write` (SIGPIPE
    ignored, Python's setting): whole, partly (the rest a copy in the transport, the
    result once the kernel has every byte, later Sends behind it), and direct again."""
    sock, rec = connected(mux, log, kind, peer)
    if _direct.FAST:
        assert inside(sock)._dfd == -1, "the compiled helper sends with MSG_NOSIGNAL"
        sock.Delete()
        return
    assert inside(sock)._dfd == os_socket(sock).fileno()
    small = bytearray(os.urandom(1024))
    call(rec, sock.Send, small, 1000)
    assert buffered(sock) == 0, "the kernel took it all"
    assert peer.read(mux, 1000) == bytes(small[:1000])
    mux.run_until(lambda: rec.sends_done == 1, what="the send result")
    shrink_sndbuf(sock)
    a = bytearray(os.urandom(BIG))
    a_copy = bytes(a)
    call(rec, sock.Send, a)
    assert 0 < buffered(sock) < BIG, "the kernel took part; the rest is in the transport"
    a[:] = bytes(BIG)  # reused at once: the transport holds a copy
    b = bytearray(os.urandom(5000))
    b_copy = bytes(b)
    call(rec, sock.Send, b)
    b[:] = bytes(len(b))
    assert rec.sends_done == 1
    assert sha(peer.read(mux, BIG)) == sha(a_copy)
    assert peer.read(mux, len(b_copy)) == b_copy
    mux.run_until(lambda: rec.sends_done == 3, what="the two send results")
    c = bytearray(b"direct again")
    call(rec, sock.Send, c)
    assert buffered(sock) == 0
    assert peer.read(mux, len(c)) == bytes(c)
    mux.run_until(lambda: rec.sends_done == 4, what="the last send result")
    assert rec.names() == ["connect", "send", "send", "send", "send"]
    sock.Delete()


def test_the_pure_builds_write_meets_a_peer_reset(mux: Mux, kind: str, peer: Peer) -> None:
    """The peer resets before the loop noticed: the `os.write` fails (EPIPE/ECONNRESET,
    no signal), the bytes go to the transport, which ends the socket with SOCKET_LOST,
    once, with no SocketSendResult."""
    clog, lines = captured_log(int(LogFlags.LOG_TCP | LogFlags.LOG_LDS))
    sock, rec = connected(mux, clog, kind, peer)
    peer.reset()
    time.sleep(0.05)  # the reset has arrived; the loop has not run
    call(rec, sock.Send, bytearray(b"into the void" * 100), 1000)
    assert direct_of(sock) is None and inside(sock)._dfd == -1, "no direct send after it"
    assert inside(sock)._dsend is None
    mux.run_until(lambda: rec.shutdown is not None, what="SocketShutdown")
    mux.run_for(0.05)
    ended_once(rec, R.SOCKET_LOST)
    assert rec.names() == ["connect", "shutdown"], "no SocketSendResult: the bytes never left"
    assert any(("ECONNRESET" in ln or "EPIPE" in ln) for ln in lines.lines), lines.lines
    sock.Delete()


def test_sigpipes_default_keeps_the_senders_msg_nosignal(
    mux: Mux, log: IInstanceLog, kind: str, peer: Peer
) -> None:
    """An app that restored SIGPIPE's default before connecting: `os.write` (no
    MSG_NOSIGNAL) is not used; Sends go through the sender's `send`, and arrive."""
    old = signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        sock, rec = connected(mux, log, kind, peer)
    finally:
        signal.signal(signal.SIGPIPE, old)
    assert inside(sock)._dfd == -1
    spy = spy_on(sock)
    x = bytearray(os.urandom(2000))
    call(rec, sock.Send, x, 1500)
    assert spy.calls == 1 and spy.took == [1500]
    assert peer.read(mux, 1500) == bytes(x[:1500])
    sock.Delete()


def test_the_pure_builds_view_path_writes_the_descriptor(
    mux: Mux, log: IInstanceLog, kind: str, peer: Peer
) -> None:
    """A view (an app sending slices of its buffer) and, on asyncio, a `bytes` go to the
    descriptor with `os.write` in the pure build too: whole, partly (the rest a copy in
    the transport, the result once the kernel has every byte), and direct again; the
    sender's `send` is not used."""
    sock, rec = connected(mux, log, kind, peer)
    if _direct.FAST:
        sock.Delete()
        return
    spy = Spy(direct_of(sock))
    inside(sock)._direct = spy  # `_dfd` stays: a view must not reach `send`
    big = bytearray(os.urandom(BIG))
    view = memoryview(big)
    call(rec, sock.Send, view[:1000])
    call(rec, sock.Send, bytes(view[1000:1024]))  # a bytes: os.write on asyncio
    assert buffered(sock) == 0, "the kernel took it all"
    assert peer.read(mux, 1024) == bytes(big[:1024])
    mux.run_until(lambda: rec.sends_done == 2, what="the send results")
    shrink_sndbuf(sock)
    copy = bytes(big)
    call(rec, sock.Send, view)
    assert 0 < buffered(sock) < BIG, "the kernel took part; the rest is in the transport"
    big[:] = bytes(BIG)  # reused at once: the transport holds a copy
    assert rec.sends_done == 2
    assert sha(peer.read(mux, BIG)) == sha(copy)
    mux.run_until(lambda: rec.sends_done == 3, what="the result once the kernel has it all")
    tail = memoryview(bytearray(b"direct again"))
    call(rec, sock.Send, tail)
    assert buffered(sock) == 0
    assert peer.read(mux, len(tail)) == bytes(tail)
    mux.run_until(lambda: rec.sends_done == 4, what="the last send result")
    assert spy.calls == 0, "every view went to the descriptor with os.write"
    assert rec.names() == ["connect", "send", "send", "send", "send"]
    sock.Delete()


def test_the_pure_builds_large_part_of_a_bytearray_is_not_copied(
    mux: Mux, log: IInstanceLog, kind: str, peer: Peer
) -> None:
    """A large part of a bytearray (`Send(buf, len)`, from `_stream._VIEW_FROM` bytes)
    goes to the descriptor from the app's buffer in the pure build: `Send` allocates no
    copy of the part, only of what the kernel did not take (tracemalloc's peak); no view
    of the buffer outlives the call (the app resizes it at once); the bytes arrive
    intact and the result comes once the kernel has them all. A `len` beyond the buffer
    raises and sends nothing."""
    sock, rec = connected(mux, log, kind, peer)
    if _direct.FAST:
        sock.Delete()
        return
    assert inside(sock)._dfd == os_socket(sock).fileno()
    with pytest.raises(ValueError, match="len=20000 but the buffer holds 10000 bytes"):
        sock.Send(bytearray(10_000), 20_000)
    buf = bytearray(os.urandom(300_000))
    part = 200_000
    want = bytes(buf[:part])
    tracemalloc.start()
    try:
        call(rec, sock.Send, buf, part)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rest = buffered(sock)
    assert part - rest > 8192, f"the kernel took {part - rest} bytes"
    assert peak < rest + 8192, f"Send allocated {peak} bytes; {rest} were left to copy"
    buf.extend(b"resized at once")  # no view of the buffer is left
    del buf[:1000]
    assert sha(peer.read(mux, part)) == sha(want), "bytes intact (and nothing before them)"
    mux.run_until(lambda: rec.sends_done == 1, what="the send result")
    assert rec.names() == ["connect", "send"]
    sock.Delete()
