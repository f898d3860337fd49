"""Callback dispatch: a callback the user does not have is never called (and a
`SocketSendResult` it lacks costs nothing), and a socket made with user None holds its
callbacks until `SetUser`. (Callbacks however the app writes them: test_callbacks_anyway.)

- an echo whose user writes no `SocketSendResult` moves every byte intact, ends with
  exactly one `SocketShutdown`, and `Shutdown` still sends every byte first;
- a user switched by `SetUser` gets the send results only if its class writes them;
- a user without `SocketRecvCanceled` loses nothing by `RecvCancel`;
- `CreateSocket(iomux, None, ...)` on TCP, local, TLS and UDP: the calls work meanwhile,
  and `SetUser` delivers what was held, in order, then the rest.
"""

from __future__ import annotations

import hashlib
import os
import random
import socket
from typing import Any

import pytest
from kit.certs import Server
from kit.dtls import dtls_ctx
from kit.loop import Mux, Recorder
from kit.streams import bound_port, listener

from usocket_asyncio import (
    CreateLocalSocketProvider,
    CreateTCPSocketProvider,
    CreateTLSSocketProvider,
    CreateUDPSocketProvider,
    IInstanceLog,
    ISocket,
    ShutdownReason,
    USocket,
)
from usocket_asyncio._base import writes

R = ShutdownReason


class Minimal(USocket):
    """Writes only SocketRecvResult and SocketShutdown: echoes what comes, counts it."""

    def __init__(self) -> None:
        self.buf = bytearray(4096)
        self.got = hashlib.sha256()
        self.events: list[Any] = []

    def SocketRecvResult(self, socket: ISocket, buf: Any, len: int) -> None:
        self.got.update(memoryview(buf)[:len])
        self.events.append(("recv", len))
        socket.Send(buf, len)
        socket.Recv(self.buf, None, True)

    def SocketShutdown(self, socket: ISocket, reason: ShutdownReason) -> None:
        self.events.append(("shutdown", reason))


class CountsSends(Minimal):
    def __init__(self) -> None:
        super().__init__()
        self.sends = 0

    def SocketSendResult(self, socket: ISocket) -> None:
        self.sends += 1


def test_what_a_user_writes_is_looked_up_on_the_user() -> None:
    assert not writes(Minimal(), "SocketSendResult")
    assert writes(CountsSends(), "SocketSendResult")
    assert not writes(CountsSends(), "SocketRecvCanceled")
    assert all(writes(Recorder(), n) for n in ("SocketSendResult", "SocketRecvCanceled"))
    user = Minimal()
    user.SocketSendResult = lambda s: None  # type: ignore[method-assign,assignment]
    assert writes(user, "SocketSendResult") and not writes(Minimal(), "SocketSendResult")


class SlottedEcho(USocket):
    """An app class that declares its slots, as a lean server's would."""

    __slots__ = ("buf", "ended", "got")

    def __init__(self) -> None:
        self.buf = bytearray(4096)
        self.got = hashlib.sha256()
        self.ended: list[ShutdownReason] = []

    def SocketAcceptComplete(self, socket: ISocket) -> None:
        socket.Recv(self.buf, None, True)

    def SocketRecvResult(self, socket: ISocket, buf: Any, len: int) -> None:
        self.got.update(memoryview(buf)[:len])
        socket.Send(buf, len)
        socket.Recv(buf, None, True)

    def SocketShutdown(self, socket: ISocket, reason: ShutdownReason) -> None:
        self.ended.append(reason)


def test_an_app_class_with_slots_has_no_instance_dict(mux: Mux, log: IInstanceLog) -> None:
    """`USocket` declares no instance dict of its own (`__slots__ = ()`), as
    `asyncio.Protocol` does: an app class that declares its slots gets none, so each
    callback's look-up on it (made when the callback is due) finds no instance dict to
    search. An app class without slots keeps its dict, and a callback set on its
    instance is still called (the conformance checks). The slotted echo moves every
    byte and ends once."""
    user = SlottedEcho()
    assert not hasattr(user, "__dict__")
    assert hasattr(Minimal(), "__dict__")
    lsock, _, port = _server(mux, log, user)
    data = random.Random(5).randbytes(100_000)
    back = _echo_through(mux, port, data)
    assert hashlib.sha256(back).digest() == user.got.digest() == hashlib.sha256(data).digest()
    mux.run_until(lambda: bool(user.ended), what="shutdown")
    assert user.ended == [R.SOCKET_SHUTDOWN_BY_PEER]
    lsock.Delete()


def _echo_through(mux: Mux, port: int, data: bytes) -> bytearray:
    """Send `data` to the echo server at `port` from a plain client while reading what
    comes back, until as much came back; then close the client (the server's peer
    goes). What came back."""
    c = socket.create_connection(("127.0.0.1", port))
    c.setblocking(False)
    back = bytearray()
    sent = 0

    def step() -> bool:
        nonlocal sent
        if sent < len(data):
            try:
                sent += c.send(data[sent : sent + 65536])
            except BlockingIOError:
                pass
        try:
            back.extend(c.recv(65536))
        except BlockingIOError:
            pass
        return len(back) == len(data)

    try:
        mux.run_until(step, timeout=30, what="echo")
    finally:
        c.close()
    return back


def _server(mux: Mux, log: IInstanceLog, user: USocket) -> tuple[ISocket, list[ISocket], int]:
    accepted: list[ISocket] = []
    lrec = Recorder("listener")

    def on_listen(sock: ISocket, a: str, p: int) -> None:
        sock.Accept(user)

    lrec.hooks["bind"] = lambda s, a, p: s.Listen()
    lrec.hooks["listen"] = on_listen
    lsock = CreateTCPSocketProvider().CreateSocket(mux, lrec, log)
    lsock.Bind("127.0.0.1", 0)
    mux.run_until(lambda: bool(lrec.events), what="bind")
    return lsock, accepted, bound_port(lrec)


class Starts(Minimal):
    def SocketAcceptComplete(self, socket: ISocket) -> None:
        self.events.append(("accept",))
        socket.Recv(self.buf, None, True)


def test_echo_without_send_results_moves_every_byte(mux: Mux, log: IInstanceLog) -> None:
    user = Starts()
    lsock, _, port = _server(mux, log, user)
    rng = random.Random(13)
    data = rng.randbytes(300_000)
    back = _echo_through(mux, port, data)
    assert hashlib.sha256(back).digest() == hashlib.sha256(data).digest()
    assert user.got.digest() == hashlib.sha256(data).digest()
    mux.run_until(lambda: user.events[-1][0] == "shutdown", what="shutdown")
    ends = [e for e in user.events if e[0] == "shutdown"]
    assert ends == [("shutdown", R.SOCKET_SHUTDOWN_BY_PEER)]
    assert user.events[0] == ("accept",)
    lsock.Delete()


def test_shutdown_sends_everything_first_without_send_results(mux: Mux, log: IInstanceLog) -> None:
    """A user without SocketSendResult: a big Send, then Shutdown; the peer gets every
    byte, then the end; SocketShutdown(NORMAL) once."""
    payload = random.Random(7).randbytes(2_000_000)

    class Sender(Minimal):
        def SocketAcceptComplete(self, socket: ISocket) -> None:
            socket.Send(payload)
            socket.Shutdown()

    user = Sender()
    lsock, _, port = _server(mux, log, user)
    c = socket.create_connection(("127.0.0.1", port))
    c.setblocking(False)
    got = bytearray()
    eof = False

    def step() -> bool:
        nonlocal eof
        while not eof:
            try:
                chunk = c.recv(1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                eof = True
                c.close()  # the peer closes at the end of the stream, as peers do
            got.extend(chunk)
        return eof and bool(user.events)

    mux.run_until(step, timeout=30, what="all bytes, then the end")
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    assert user.events == [("shutdown", R.SOCKET_SHUTDOWN_NORMAL)]
    lsock.Delete()


def test_set_user_picks_the_new_users_send_results(mux: Mux, log: IInstanceLog) -> None:
    """Sends made for a user that writes no SocketSendResult get none; after SetUser to
    one that does, each later Send gets its result."""
    first = Starts()
    lsock, _, port = _server(mux, log, first)
    c = socket.create_connection(("127.0.0.1", port))
    c.sendall(b"x" * 10)
    mux.run_until(lambda: sum(e[1] for e in first.events if e[0] == "recv") == 10)
    server: Any = next(s for s in list(_live()) if s._user is first)
    second = CountsSends()
    server.SetUser(second)
    server.Send(b"abc")
    server.Send(b"def")
    mux.run_until(lambda: second.sends == 2, what="two send results")
    c.settimeout(10)
    got = b""
    while len(got) < 16:
        got += c.recv(16 - len(got))
    assert got == b"x" * 10 + b"abcdef"
    c.close()
    mux.run_until(lambda: bool(second.events), what="shutdown")
    assert second.events[-1] == ("shutdown", R.SOCKET_SHUTDOWN_BY_PEER)
    server.Delete()
    lsock.Delete()


def _live() -> Any:
    from usocket_asyncio._base import LIVE

    return LIVE


def test_recv_cancel_without_the_callback_loses_nothing(mux: Mux, log: IInstanceLog) -> None:
    """RecvCancel for a user without SocketRecvCanceled: no call, and the bytes of a
    cancelled partly filled Recv go to the next one."""

    class Exact(Minimal):
        def SocketAcceptComplete(self, socket: ISocket) -> None:
            self.events.append(("accept",))
            socket.Recv(self.buf, 8)  # exact: 8 bytes

        def SocketRecvResult(self, socket: ISocket, buf: Any, len: int) -> None:
            self.events.append(("recv", bytes(memoryview(buf)[:len])))

    user = Exact()
    lsock, _, port = _server(mux, log, user)
    c = socket.create_connection(("127.0.0.1", port))
    mux.run_until(lambda: bool(user.events), what="accept")
    c.sendall(b"abc")
    mux.run_for(0.05)
    server: Any = next(s for s in list(_live()) if s._user is user)
    server.RecvCancel()
    mux.run_for(0.02)
    assert user.events == [("accept",)]
    server.Recv(bytearray(8), 8)
    c.sendall(b"defgh")
    mux.run_until(lambda: len(user.events) == 2, what="recv")
    assert user.events[1] == ("recv", b"abcdefgh")
    c.close()
    mux.run_until(lambda: user.events[-1][0] == "shutdown", what="shutdown")
    server.Delete()
    lsock.Delete()


# ----------------------------------------------------------------------- user None


@pytest.fixture
def tls_ctx(ca: Any) -> tuple[Any, Any]:
    """A server context with a certificate for localhost, a client one trusting it."""
    prov = CreateTLSSocketProvider(None)
    log = IInstanceLog(0)
    server = prov.CreateSocketContext(log)
    server.SetServerCertificate(
        ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.bytes()
    )
    client = prov.CreateSocketContext(log)
    client.SetTrustedCertificates(ca.cert_pem.bytes())
    return server, client


def _stream_provider(kind: str) -> Any:
    if kind == "tcp":
        return CreateTCPSocketProvider()
    if kind == "local":
        return CreateLocalSocketProvider()
    return CreateTLSSocketProvider(None)


@pytest.mark.parametrize("kind", ["tcp", "local", "tls"])
def test_client_made_with_no_user_gets_its_callbacks_after_set_user(
    mux: Mux, log: IInstanceLog, kind: str, short_tmp: str, tls_ctx: Any
) -> None:
    """Connect and Recv with user None; the server greets; SetUser later: the connect,
    then the data, in order, then the rest goes straight to the user."""
    prov = _stream_provider(kind)
    greeting = b"hello, " + os.urandom(16).hex().encode()
    if kind == "local":
        addr: str | None = os.path.join(short_tmp, "srv")
    else:
        addr = "127.0.0.1"
    server_ctx = client_ctx = None
    if kind == "tls":
        server_ctx, client_ctx = tls_ctx
    lrec = Recorder("listener")

    def reads_on(s: ISocket, *_: Any) -> None:
        s.Recv(bytearray(64), None, True)

    def greets(s: ISocket) -> None:
        s.Send(greeting)
        reads_on(s)

    def on_listen(sock: ISocket, a: str, p: int) -> None:
        # the server greets, then reads until the client's end, and ends too (so the
        # client's Shutdown needs no wait for a peer that never closes)
        rec = Recorder("server")
        rec.hooks["accept"] = greets
        rec.hooks["recv"] = reads_on
        sock.Accept(rec)

    lrec.hooks["bind"] = lambda s, a, p: s.Listen()
    lrec.hooks["listen"] = on_listen
    lsock = prov.CreateSocket(mux, lrec, log, False, server_ctx)
    lsock.Bind(addr, 0)
    mux.run_until(lambda: bool(lrec.events), what="bind")
    target = addr if kind == "local" else f"127.0.0.1:{bound_port(lrec)}"

    sock = prov.CreateSocket(mux, None, log, False, client_ctx)
    sock.Connect(target, "localhost" if kind == "tls" else None)
    buf = bytearray(len(greeting))
    sock.Recv(buf, len(greeting))  # exact: the whole greeting in one result
    rec = take_held(mux, sock, "connect and data, held")
    assert bytes(rec.received) == greeting
    sock.Send(b"bye")
    mux.run_until(lambda: "send" in rec.names(), what="send result, directly")
    sock.Shutdown()
    mux.run_until(lambda: rec.shutdown is not None, what="shutdown")
    assert rec.names() == ["connect", "recv", "send", "shutdown"]
    assert rec.shutdown == R.SOCKET_SHUTDOWN_NORMAL
    assert not rec.violations
    sock.Delete()
    lsock.Delete()


def test_held_callbacks_skip_what_the_new_user_does_not_write(mux: Mux, log: IInstanceLog) -> None:
    """A Send made while the user is None: its result is held, and dropped for a user
    whose class writes no SocketSendResult; the ending is delivered once."""
    lsock, lrec, accepted = listener(mux, log, CreateTCPSocketProvider(), "127.0.0.1")
    sock = CreateTCPSocketProvider().CreateSocket(mux, None, log)
    sock.Connect(f"127.0.0.1:{bound_port(lrec)}")
    sock.Send(b"early")  # cached until connected
    held: Any = sock
    mux.run_until(lambda: len(held._user.calls) >= 2, what="connect and send result, held")
    assert [c[0] for c in held._user.calls] == ["SocketConnectComplete", "SocketSendResult"]
    user = Minimal()
    # the server reads until the client's end, and ends too (no wait for a peer that
    # never closes)
    mux.run_until(lambda: bool(accepted), what="accept")
    server, srec = accepted[0]
    srec.hooks["recv"] = lambda s, b, n: s.Recv(bytearray(64), None, True)
    server.Recv(bytearray(64), None, True)
    sock.Shutdown()
    mux.run_until(lambda: held._user.calls[-1][0] == "SocketShutdown", what="held end")
    sock.SetUser(user)
    mux.run_until(lambda: bool(user.events), what="the end")
    mux.run_for(0.02)
    assert user.events == [("shutdown", R.SOCKET_SHUTDOWN_NORMAL)]
    sock.Delete()
    server.Delete()
    lsock.Delete()


def take_held(mux: Mux, sock: ISocket, what: str) -> Recorder:
    """Once the user-less client holds its connect and one receive, SetUser: a Recorder
    that gets both after the call (nothing inside it), in order."""
    held: Any = sock
    mux.run_until(lambda: len(held._user.calls) >= 2, what=what)
    rec = Recorder("client")
    sock.SetUser(rec)
    assert rec.events == []  # nothing inside SetUser
    mux.run_until(lambda: len(rec.events) >= 2, what="the held callbacks")
    assert rec.names() == ["connect", "recv"]
    return rec


def _udp_bound_without_user(mux: Mux, log: IInstanceLog) -> ISocket:
    """A UDP socket made with user None and bound: its bind result is held."""
    sock = CreateUDPSocketProvider().CreateSocket(mux, None, log)
    sock.Bind("127.0.0.1", 0)
    held: Any = sock
    mux.run_until(lambda: bool(held._user.calls), what="bind result, held")
    return sock


def test_udp_bind_with_no_user_then_set_user(mux: Mux, log: IInstanceLog) -> None:
    sock = _udp_bound_without_user(mux, log)
    rec = Recorder("udp")
    sock.SetUser(rec)
    mux.run_until(lambda: bool(rec.events), what="the bind result")
    assert rec.names() == ["bind"]
    assert rec.events[0][1] == "127.0.0.1" and rec.events[0][2] > 0
    sock.Shutdown()
    mux.run_until(lambda: rec.shutdown is not None, what="shutdown")
    assert rec.names() == ["bind", "shutdown"]
    assert not rec.violations
    sock.Delete()


def test_set_user_twice_before_delivery_goes_to_the_last(mux: Mux, log: IInstanceLog) -> None:
    sock = _udp_bound_without_user(mux, log)
    a, b = Recorder("a"), Recorder("b")
    sock.SetUser(a)
    sock.SetUser(b)
    mux.run_until(lambda: bool(b.events), what="the bind result")
    assert a.events == [] and b.names() == ["bind"]
    sock.Delete()


def test_delete_before_delivery_drops_the_held_callbacks(mux: Mux, log: IInstanceLog) -> None:
    sock = _udp_bound_without_user(mux, log)
    rec = Recorder()
    sock.SetUser(rec)
    sock.Delete()
    mux.run_for(0.02)
    assert rec.events == []


def test_send_after_the_connection_was_lost_with_bytes_held(mux: Mux, log: IInstanceLog) -> None:
    """The peer resets the connection while bytes wait for the app's Recv: the app gets
    them, and a Send it makes in that SocketRecvResult is ignored (no exception, no
    SocketSendResult); then the SocketShutdown, once."""
    import struct

    rec = Recorder("server")
    rec.hooks["recv"] = lambda s, buf, n: s.Send(b"reply")
    lsock, lrec, accepted = listener(mux, log, CreateTCPSocketProvider(), "127.0.0.1")
    c = socket.create_connection(("127.0.0.1", bound_port(lrec)))
    mux.run_until(lambda: bool(accepted), what="accept")
    server, _ = accepted[0]
    server.SetUser(rec)
    c.sendall(b"held bytes")
    mux.run_for(0.05)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()  # RST
    held: Any = server
    mux.run_until(lambda: held._tr is None, what="connection lost")
    server.Recv(bytearray(64), None, True)
    mux.run_until(lambda: rec.shutdown is not None, what="the end")
    assert rec.names() == ["recv", "shutdown"]
    assert bytes(rec.received) == b"held bytes"
    assert not rec.violations
    server.Delete()
    lsock.Delete()


def test_dtls_client_with_no_user_then_set_user(mux: Mux, log: IInstanceLog) -> None:
    """A DTLS client made with user None completes its handshake meanwhile; SetUser then
    gets SocketConnectComplete first and the record the server sent after it."""
    prov = CreateTLSSocketProvider(None)
    srv = Server(mux, log, prov, dtls_ctx(prov, log, srtp=False))
    sock = prov.CreateSocket(mux, None, log, False, dtls_ctx(prov, log, srtp=False, verify=False))
    sock.Connect(f"127.0.0.1:{srv.port}")
    buf = bytearray(64)
    sock.Recv(buf)
    mux.run_until(lambda: 0 in srv.socks, what="the handshake, user still None")
    srv.socks[0].Send(b"to the held client")
    rec = take_held(mux, sock, "connect and record, held")
    assert bytes(rec.received) == b"to the held client"
    sock.Shutdown()
    mux.run_until(lambda: rec.shutdown is not None, what="shutdown")
    assert rec.names() == ["connect", "recv", "shutdown"]
    assert rec.shutdown == ShutdownReason.SOCKET_SHUTDOWN_NORMAL
    assert not rec.violations
    sock.Delete()
    for s in srv.socks.values():
        s.Delete()
    srv.listener.Delete()
