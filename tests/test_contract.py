"""Gaps the contract audit found (tests/CONTRACT.md): one test per item and socket kind
that no other file checked. Every socket test runs on asyncio and uvloop (`mux`).
"""

from __future__ import annotations

import errno
import gc
import hashlib
import inspect
import os
import random
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from conftest import ALL_LOG_FLAGS, Mux, Recorder, free_port
from dtls_helpers import dtls_ctx
from tcp_helpers import captured_log, from_another_thread
from test_tls import Server, connect, delete, ended_once, make_ctx, pem_of

import usocket_asyncio as u
import usocket_asyncio._dtls as dtls_mod
import usocket_asyncio._tls as tls_mod
from usocket_asyncio import (
    LOG_DTLS,
    LOG_LDS,
    LOG_TCP,
    LOG_TLS,
    LOG_UDP,
    QOS_AUDIO_VIDEO,
    QOS_VOICE,
    CreateLocalSocketProvider,
    CreateTCPSocketProvider,
    CreateTLSSocketProvider,
    CreateUDPSocketProvider,
    IInstanceLog,
    ISocket,
    ISocketContext,
    ISocketProvider,
    LogFlags,
    ShutdownReason,
    SocketModeError,
)
from usocket_asyncio._base import LIVE
from usocket_asyncio._stream import HOLD_LIMIT

R = ShutdownReason


def inside(rec: Recorder, fn: Callable[..., Any], *args: Any) -> Any:
    """Call into the library from inside a callback, with `rec` marked as inside the call:
    a callback of `rec` that the call runs synchronously is then a violation."""
    was, rec.in_call = rec.in_call, True
    try:
        return fn(*args)
    finally:
        rec.in_call = was


def call(rec: Recorder, fn: Callable[..., Any], *args: Any) -> Any:
    return inside(rec, fn, *args)


@pytest.fixture
def prov() -> ISocketProvider:
    return CreateTLSSocketProvider(CreateTCPSocketProvider())


def udp_bound(mux: Mux, log: IInstanceLog, rec: Recorder) -> tuple[ISocket, int]:
    sock = CreateUDPSocketProvider().CreateSocket(mux, rec, log)
    call(rec, sock.Bind, "127.0.0.1", 0)
    mux.run_until(lambda: bool(rec.events), what="bind")
    assert rec.names() == ["bind"], rec.events
    return sock, int(rec.events[0][2])


def dtls_pair(
    mux: Mux, log: IInstanceLog, prov: ISocketProvider, crec: Recorder | None = None
) -> tuple[Server, ISocket, Recorder]:
    srv = Server(mux, log, prov, dtls_ctx(prov, log))
    cli, crec = connect(mux, log, prov, dtls_ctx(prov, log, verify=False), srv.port, None, crec)
    return srv, cli, crec


def wait_pair(mux: Mux, srv: Server, crec: Recorder) -> tuple[ISocket, Recorder]:
    mux.run_until(
        lambda: crec.shutdown is not None or ("connect" in crec.names() and 0 in srv.socks),
        what="the handshake",
    )
    assert "connect" in crec.names(), crec.events
    return srv.socks[0], srv.recs[0]


# --------------------------------------------------------------------------- item 1


def test_udp_calls_inside_callbacks_call_back_later(mux: Mux, log: IInstanceLog) -> None:
    """SendTo, Send, Recv and Shutdown made inside UDP callbacks never run a callback
    inside themselves; an echo through a connected socket keeps its order."""
    arec, brec = Recorder("a"), Recorder("b")
    a, aport = udp_bound(mux, log, arec)
    b = CreateUDPSocketProvider().CreateSocket(mux, brec, log)
    n = 20
    payloads = [bytes([i]) * (i + 1) for i in range(n)]

    def b_connected(s: ISocket) -> None:
        for p in payloads:
            inside(brec, s.Send, p)
        for _ in range(n):
            inside(brec, s.Recv, bytearray(64))

    def a_got(s: ISocket, buf: Any, n_: int, addr: Any, port: int) -> None:
        inside(arec, s.SendTo, bytes(memoryview(buf)[:n_]), None, addr, port)
        inside(arec, s.Recv, bytearray(64))

    def b_got(s: ISocket, buf: Any, n_: int) -> None:
        if len(brec.received) == sum(map(len, payloads)):
            inside(brec, s.Shutdown)

    brec.hooks["connect"] = b_connected
    brec.hooks["recv"] = b_got
    arec.hooks["recvfrom"] = a_got
    call(arec, a.Recv, bytearray(64))
    call(brec, b.Connect, f"127.0.0.1:{aport}")
    mux.run_until(lambda: brec.shutdown is not None, what="the echo")
    assert bytes(brec.received) == b"".join(payloads)
    assert arec.sends_done == n and brec.sends_done == n
    ended_once(brec, R.SOCKET_SHUTDOWN_NORMAL)
    assert not arec.violations, arec.violations
    delete(a, b)


def test_dtls_calls_inside_callbacks_call_back_later(
    mux: Mux, log: IInstanceLog, prov: ISocketProvider
) -> None:
    """Send, Recv, RecvCancel and Shutdown made inside DTLS callbacks (connect, accept,
    recv, send) never run a callback inside themselves."""
    n = 12
    payloads = [bytes([65 + i]) * (10 + i) for i in range(n)]
    crec = Recorder("client")

    def c_connected(s: ISocket) -> None:
        for p in payloads:
            inside(crec, s.Send, p)
        for _ in range(n):
            inside(crec, s.Recv, bytearray(100))

    def c_got(s: ISocket, buf: Any, k: int) -> None:
        if len(crec.received) == sum(map(len, payloads)):
            inside(crec, s.Recv, bytearray(10))
            inside(crec, s.RecvCancel)
            inside(crec, s.Shutdown)

    crec.hooks["connect"] = c_connected
    crec.hooks["recv"] = c_got
    srv = Server(mux, log, prov, dtls_ctx(prov, log))
    orig = srv._on_listen

    def on_listen(sock: ISocket, addr: str, port: int) -> None:
        orig(sock, addr, port)
        rec = srv.recs[-1]
        keep = rec.hooks["accept"]

        def accepted(s: ISocket) -> None:
            keep(s)
            inside(rec, s.Recv, bytearray(100))

        def echo(s: ISocket, buf: Any, k: int) -> None:
            inside(rec, s.Send, bytes(memoryview(buf)[:k]))
            inside(rec, s.Recv, bytearray(100))

        rec.hooks["accept"] = accepted
        rec.hooks["recv"] = echo

    srv.lrec.hooks["listen"] = on_listen
    cli, _ = connect(mux, log, prov, dtls_ctx(prov, log, verify=False), srv.port, None, crec)
    mux.run_until(lambda: crec.shutdown is not None, what="the echo")
    assert bytes(crec.received) == b"".join(payloads)
    assert [e[1] for e in crec.events if e[0] == "recv"] == [len(p) for p in payloads]
    assert crec.sends_done == n and crec.names().count("canceled") == 1
    ended_once(crec, R.SOCKET_SHUTDOWN_NORMAL)
    mux.run_until(lambda: srv.recs[0].shutdown is not None)
    ended_once(srv.recs[0], R.SOCKET_SHUTDOWN_BY_PEER)
    assert srv.recs[0].sends_done == n
    delete(cli)
    srv.close()


# --------------------------------------------------------------------------- item 3


def test_dtls_send_before_connect_complete_is_cached_in_order(
    mux: Mux, log: IInstanceLog, prov: ISocketProvider
) -> None:
    """Send right after Connect (the handshake still running) is cached and sent after
    SocketConnectComplete; the caller's buffer is free at once; one SocketSendResult per
    Send, all after the connect, in Send order."""
    srv = Server(mux, log, prov, dtls_ctx(prov, log))
    crec = Recorder("client")
    cli = prov.CreateSocket(mux, crec, log, False, dtls_ctx(prov, log, verify=False))
    call(crec, cli.Connect, f"127.0.0.1:{srv.port}")
    rng = random.Random(3)
    sent = [rng.randbytes(rng.randint(1, 900)) for _ in range(10)]
    buf = bytearray(1000)
    for p in sent:
        buf[: len(p)] = p
        call(crec, cli.Send, buf, len(p))
        buf[:] = bytes(1000)  # reused at once
    assert crec.events == []
    peer, prec = wait_pair(mux, srv, crec)
    for _ in sent:
        call(prec, peer.Recv, bytearray(1000))
    mux.run_until(lambda: prec.names().count("recv") == len(sent) and crec.sends_done == 10)
    assert crec.names() == ["connect"] + ["send"] * 10
    assert [e[1] for e in prec.events if e[0] == "recv"] == [len(p) for p in sent]
    assert hashlib.sha256(prec.received).digest() == hashlib.sha256(b"".join(sent)).digest()
    delete(cli)
    srv.close()


# --------------------------------------------------------------------------- item 6


@pytest.mark.parametrize("where", ["bind", "send", "recvfrom", "canceled", "shutdown"])
def test_udp_delete_inside_each_callback(mux: Mux, log: IInstanceLog, where: str) -> None:
    """Delete inside any UDP callback: nothing after it, not even what was already due."""
    rec = Recorder("udp")
    sock = CreateUDPSocketProvider().CreateSocket(mux, rec, log)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    try:
        seen: list[str] = []

        def deleter(s: ISocket, *args: Any) -> None:
            seen.append(where)
            s.Delete()
            with pytest.raises(SocketModeError):
                s.Recv(bytearray(4))

        rec.hooks[where] = deleter
        dst = peer.getsockname()
        if where != "bind":
            rec.hooks["bind"] = lambda s, a, p: None
        call(rec, sock.Bind, "127.0.0.1", 0)
        if where == "bind":
            call(rec, sock.SendTo, b"x", None, "127.0.0.1", dst[1])
        mux.run_until(lambda: bool(rec.events))
        port = sock.GetLocalAddress()[1] if where != "bind" else 0
        if where in ("send", "recvfrom", "canceled"):
            for i in range(3):
                call(rec, sock.SendTo, b"s%d" % i, None, "127.0.0.1", dst[1])
                peer.sendto(b"r%d" % i, ("127.0.0.1", port))
            for _ in range(3):
                call(rec, sock.Recv, bytearray(4))
            if where == "canceled":
                call(rec, sock.RecvCancel)
        elif where == "shutdown":
            call(rec, sock.Recv, bytearray(4))
            call(rec, sock.Shutdown)
        mux.run_until(lambda: bool(seen), what=where)
        mux.run_for(0.05)
        assert seen == [where]
        assert rec.names()[-1] == where, rec.events
        assert rec.names().count(where) == 1, rec.events
        assert not rec.violations, rec.violations
    finally:
        peer.close()


@pytest.mark.parametrize("where", ["connect", "send", "recv", "canceled", "shutdown"])
def test_dtls_delete_inside_each_client_callback(
    mux: Mux, log: IInstanceLog, prov: ISocketProvider, where: str
) -> None:
    """Delete inside any DTLS client callback: nothing after it, not even what was due."""
    crec = Recorder("client")
    seen: list[str] = []

    def deleter(s: ISocket, *args: Any) -> None:
        seen.append(where)
        s.Delete()

    srv, cli, crec = dtls_pair(mux, log, prov, crec)
    peer, prec = wait_pair(mux, srv, crec)
    crec.hooks[where] = deleter
    if where == "connect":
        # a second client that deletes itself in SocketConnectComplete
        rec2 = Recorder("client2")
        rec2.hooks["connect"] = deleter
        c2, _ = connect(mux, log, prov, dtls_ctx(prov, log, verify=False), srv.port, None, rec2)
        call(rec2, c2.Send, b"cached")
        mux.run_until(lambda: bool(seen))
        mux.run_for(0.1)
        assert rec2.names() == ["connect"] and not rec2.violations
    else:
        for i in range(3):
            call(crec, cli.Send, b"c%d" % i)
            call(prec, peer.Send, b"p%d" % i)
        for _ in range(3):
            call(crec, cli.Recv, bytearray(8))
        if where == "canceled":
            call(crec, cli.RecvCancel)
        elif where == "shutdown":
            call(crec, cli.Shutdown)
        mux.run_until(lambda: bool(seen), what=where)
        mux.run_for(0.1)
        assert crec.names()[-1] == where and crec.names().count(where) == 1, crec.events
        assert not crec.violations, crec.violations
    assert seen == [where]
    srv.close()


@pytest.mark.parametrize("where", ["listen", "accept"])
def test_dtls_delete_inside_server_callbacks(
    mux: Mux, log: IInstanceLog, prov: ISocketProvider, where: str
) -> None:
    """Delete of the listener inside SocketListenResult, or of the new peer socket inside
    SocketAcceptComplete: nothing after it on that socket; the client ends."""
    srv = Server(mux, log, prov, dtls_ctx(prov, log))
    seen: list[str] = []
    orig = srv._on_listen

    def on_listen(sock: ISocket, addr: str, port: int) -> None:
        if where == "listen":
            seen.append(where)
            sock.Delete()
            return
        orig(sock, addr, port)

        def accepted(s: ISocket) -> None:
            seen.append(where)
            s.Delete()

        srv.recs[-1].hooks["accept"] = accepted

    srv.lrec.hooks["listen"] = on_listen
    cli, _crec = connect(mux, log, prov, dtls_ctx(prov, log, verify=False), srv.port, None)
    mux.run_until(lambda: bool(seen), what=where)
    mux.run_for(0.2)
    assert seen == [where]
    if where == "listen":
        assert srv.lrec.names() == ["bind", "listen"]
    else:
        assert srv.recs[0].names() == ["accept"]
        assert srv.lrec.names() == ["bind", "listen"]
    assert not srv.lrec.violations and all(not r.violations for r in srv.recs)
    delete(cli)
    srv.socks.clear()
    srv.close()


# --------------------------------------------------------------------------- item 7


def test_dtls_raising_callback_goes_to_the_loop(
    mux: Mux, log: IInstanceLog, prov: ISocketProvider
) -> None:
    """An exception in a DTLS callback reaches the loop's exception handler; the socket
    carries on delivering and sending."""
    srv, cli, crec = dtls_pair(mux, log, prov)
    peer, prec = wait_pair(mux, srv, crec)

    def boom(*args: Any) -> None:
        raise RuntimeError("app bug")

    crec.hooks["recv"] = boom
    crec.hooks["send"] = boom
    for i in range(3):
        call(crec, cli.Recv, bytearray(8))
        call(prec, peer.Send, b"m%d" % i)
    call(crec, cli.Send, b"x")
    mux.run_until(lambda: len(mux.errors) == 4, what="4 errors")
    errs = mux.take_errors()
    assert all(isinstance(e["exception"], RuntimeError) for e in errs)
    assert crec.received == b"m0m1m2" and crec.shutdown is None
    call(prec, peer.Recv, bytearray(8))
    mux.run_until(lambda: prec.received == b"x")
    call(crec, cli.Shutdown)
    mux.run_until(lambda: crec.shutdown is not None and prec.shutdown is not None)
    ended_once(crec, R.SOCKET_SHUTDOWN_NORMAL)
    ended_once(prec, R.SOCKET_SHUTDOWN_BY_PEER)
    delete(cli)
    srv.close()


# --------------------------------------------------------------------------- item 8


def secure_sock(
    mux: Mux, kind: str, flags: int = int(LOG_TLS | LOG_DTLS)
) -> tuple[ISocket, Recorder, Any]:
    """A TLS or DTLS socket with a log whose lines are kept."""
    log, lines = captured_log(flags)
    prov = CreateTLSSocketProvider(None)
    ctx = prov.CreateSocketContext(log)
    if kind == "dtls":
        ctx.EnableDTLS(False)
    rec = Recorder(kind)
    return prov.CreateSocket(mux, rec, log, False, ctx), rec, lines


def ends_with(mux: Mux, rec: Recorder, reason: ShutdownReason) -> None:
    mux.run_until(lambda: rec.shutdown is not None, what=str(reason))
    assert rec.events == [("shutdown", reason)], rec.events
    assert not rec.violations, rec.violations


@pytest.mark.parametrize("kind", ["tls", "dtls"])
@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.1:99999", "[::1", "bad name:5", ""])
def test_secure_connect_address_invalid(mux: Mux, kind: str, address: str) -> None:
    sock, rec, lines = secure_sock(mux, kind)
    call(rec, sock.Connect, address)
    ends_with(mux, rec, R.SOCKET_ADDRESS_INVALID)
    assert lines.text(), "the reason's detail is logged"
    sock.Delete()


@pytest.mark.parametrize("kind", ["tls", "dtls"])
@pytest.mark.parametrize(("addr", "port"), [("999.1.1.1", 0), ("127.0.0.1", 70000), ("[::1", 0)])
def test_secure_bind_address_invalid(mux: Mux, kind: str, addr: str, port: int) -> None:
    sock, rec, lines = secure_sock(mux, kind)
    call(rec, sock.Bind, addr, port)
    ends_with(mux, rec, R.SOCKET_ADDRESS_INVALID)
    assert lines.text(), "the reason's detail is logged"
    sock.Delete()


@pytest.mark.parametrize("kind", ["tls", "dtls"])
def test_secure_bind_addr_in_use_and_bind_failed(mux: Mux, kind: str) -> None:
    """A port someone holds: SOCKET_ADDR_IN_USE; an address on no interface (TEST-NET-1,
    nothing is sent): SOCKET_BIND_FAILED; both with the errno's text logged."""
    stype = socket.SOCK_DGRAM if kind == "dtls" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, stype) as holder:
        holder.bind(("127.0.0.1", 0))
        if stype == socket.SOCK_STREAM:
            holder.listen(1)
        sock, rec, lines = secure_sock(mux, kind)
        call(rec, sock.Bind, "127.0.0.1", holder.getsockname()[1])
        ends_with(mux, rec, R.SOCKET_ADDR_IN_USE)
        assert "Address already in use" in lines.text()
        sock.Delete()
    sock, rec, lines = secure_sock(mux, kind)
    call(rec, sock.Bind, "192.0.2.1", 0)
    ends_with(mux, rec, R.SOCKET_BIND_FAILED)
    assert "Cannot assign requested address" in lines.text()
    sock.Delete()


def test_tls_connect_rejected_by_a_closed_port(mux: Mux) -> None:
    sock, rec, lines = secure_sock(mux, "tls")
    call(rec, sock.Connect, f"127.0.0.1:{free_port()}")
    ends_with(mux, rec, R.SOCKET_CONNECT_REJECTED)
    assert "refused" in lines.text().lower()
    sock.Delete()


@pytest.mark.pure_only
@pytest.mark.parametrize("kind", ["tls", "dtls"])
def test_secure_open_failed(mux: Mux, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """socket() itself fails (EMFILE): SOCKET_OPEN_FAILED with the errno logged."""
    import usocket_asyncio._datagram as datagram
    import usocket_asyncio._stream as stream

    class NoSocket:
        def __getattr__(self, name: str) -> Any:
            return getattr(socket, name)

        @staticmethod
        def socket(*args: Any, **kw: Any) -> socket.socket:
            raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(datagram if kind == "dtls" else stream, "socket", NoSocket())
    sock, rec, lines = secure_sock(mux, kind)
    call(rec, sock.Bind, "127.0.0.1", 0)
    ends_with(mux, rec, R.SOCKET_OPEN_FAILED)
    assert "Too many open files" in lines.text()
    sock.Delete()


# --------------------------------------------------------------------------- item 5


def test_tls_bytes_before_close_notify_reach_recv_then_by_peer(
    mux: Mux, log: IInstanceLog, ca: Any, prov: ISocketProvider
) -> None:
    """The peer sends more than the hold limit and shuts down while no Recv is pending:
    the end waits for the bytes; an exact Recv that can no longer be filled gets what
    there is, shorter; then SOCKET_SHUTDOWN_BY_PEER."""
    srv = Server(mux, log, prov, make_ctx(prov, log, cert=pem_of(ca, "localhost")))
    cli, crec = connect(mux, log, prov, make_ctx(prov, log, trust=ca.cert_pem.bytes()), srv.port)
    mux.run_until(lambda: "connect" in crec.names() and bool(srv.socks))
    peer, prec = srv.socks[0], srv.recs[0]
    payload = random.Random(9).randbytes(100_000)
    call(prec, peer.Send, payload + b"tail")
    call(prec, peer.Shutdown)
    mux.run_for(0.2)  # within the peer's bounded wait for our close_notify
    assert crec.names() == ["connect"]  # held, not ended
    call(crec, cli.Recv, bytearray(len(payload)))
    call(crec, cli.Recv, bytearray(100))
    mux.run_until(lambda: crec.shutdown is not None and prec.shutdown is not None)
    ended_once(prec, R.SOCKET_SHUTDOWN_NORMAL)
    assert crec.events[1:] == [
        ("recv", len(payload)),
        ("recv", 4),
        ("shutdown", R.SOCKET_SHUTDOWN_BY_PEER),
    ]
    assert hashlib.sha256(crec.received).digest() == hashlib.sha256(payload + b"tail").digest()
    delete(cli)
    srv.close()


# --------------------------------------------------------------------------- kinds


class Kind:
    """How to make a listening and a connecting socket of one kind."""

    def __init__(self, name: str, tmp: str, ca: Any) -> None:
        self.name = name
        self.tmp = tmp
        self.ca = ca
        self.flag = {
            "tcp": LOG_TCP,
            "local": LOG_LDS,
            "tls": LOG_TLS,
            "dtls": LOG_DTLS,
            "udp": LOG_UDP,
        }[name]

    def provider(self) -> ISocketProvider:
        if self.name in ("tls", "dtls"):
            return CreateTLSSocketProvider(CreateTCPSocketProvider())
        if self.name == "local":
            return CreateLocalSocketProvider()
        if self.name == "udp":
            return CreateUDPSocketProvider()
        return CreateTCPSocketProvider()

    def contexts(
        self, prov: ISocketProvider, log: IInstanceLog
    ) -> tuple[ISocketContext | None, ISocketContext | None]:
        if self.name not in ("tls", "dtls"):
            return None, None
        sctx = make_ctx(prov, log, cert=pem_of(self.ca, "localhost", "127.0.0.1"))
        cctx = make_ctx(prov, log, trust=self.ca.cert_pem.bytes())
        if self.name == "dtls":
            sctx.EnableDTLS(False)
            cctx.EnableDTLS(False)
        return sctx, cctx

    def bind_args(self) -> tuple[str, int]:
        return (os.path.join(self.tmp, "s"), 0) if self.name == "local" else ("127.0.0.1", 0)

    def address(self, port: int) -> str:
        return os.path.join(self.tmp, "s") if self.name == "local" else f"127.0.0.1:{port}"


STREAMISH = ["tcp", "local", "tls", "dtls"]


@pytest.mark.parametrize("name", STREAMISH)
def test_nothing_kept_calls_before_run_provider_and_context_deleted(
    mux: Mux, log: IInstanceLog, ca: Any, short_tmp: str, name: str
) -> None:
    """Item 0 and provider.Delete() / ISocketContext.Delete(): the app keeps no reference
    to any socket, makes every call before the loop runs, and deletes the provider and
    the contexts at once; the sockets live on and the exchange completes."""
    kind = Kind(name, short_tmp, ca)
    prov = kind.provider()
    sctx, cctx = kind.contexts(prov, log)
    port = (
        0
        if name == "local"
        else free_port(socket.AF_INET, socket.SOCK_DGRAM if name == "dtls" else socket.SOCK_STREAM)
    )
    lrec, srec, crec = Recorder("listener"), Recorder("server"), Recorder("client")
    lrec.hooks["listen"] = lambda s, a, p: s.Accept(srec)
    srec.hooks["accept"] = lambda s: s.Recv(bytearray(11))
    srec.hooks["recv"] = lambda s, b, n: s.Send(b"pong")
    lsock = prov.CreateSocket(mux, lrec, log, False, sctx)
    lsock.Bind(kind.bind_args()[0], port)
    lsock.Listen()  # while still binding: listens once bound
    csock = prov.CreateSocket(mux, crec, log, False, cctx)
    csock.Connect(kind.address(port), "localhost" if name in ("tls", "dtls") else None)
    csock.Send(b"before loop")
    csock.Recv(bytearray(4))
    crec.hooks["recv"] = lambda s, b, n: s.Shutdown()
    prov.Delete()
    for ctx in (sctx, cctx):
        if ctx is not None:
            ctx.Delete()
    del lsock, csock, prov, sctx, cctx
    gc.collect()
    assert lrec.events == [] and crec.events == []
    mux.run_until(lambda: crec.shutdown is not None and srec.shutdown is not None)
    gc.collect()
    assert lrec.names() == ["bind", "listen"]
    assert crec.names() == ["connect", "send", "recv", "shutdown"], crec.events
    assert crec.received == b"pong" and srec.received == b"before loop"
    ended_once(crec, R.SOCKET_SHUTDOWN_NORMAL)
    ended_once(srec, R.SOCKET_SHUTDOWN_BY_PEER)
    live = [s for s in LIVE if getattr(s, "_loop", None) is mux.loop]
    assert len(live) == 3, live
    delete(*live)
    mux.run_for(0.05)
    assert not lrec.violations


def test_deleted_context_makes_no_more_sockets(
    mux: Mux, log: IInstanceLog, prov: ISocketProvider
) -> None:
    """ISocketContext.Delete(): using the context afterwards is a caller's mistake."""
    ctx = prov.CreateSocketContext(log)
    ctx.Delete()
    with pytest.raises(SocketModeError, match="deleted"):
        prov.CreateSocket(mux, Recorder(), log, False, ctx)
    with pytest.raises(SocketModeError, match="deleted"):
        ctx.SetALPNProtocols(["h2"])


@pytest.mark.parametrize("name", ["tls", "dtls"])
def test_secure_bind_none_local_address_qos_and_connect_by_name(
    mux: Mux, log: IInstanceLog, ca: Any, short_tmp: str, name: str
) -> None:
    """Bind(None) reports "0.0.0.0"; GetLocalAddress agrees; SetQoS before Bind applies
    to the listener's socket; a client connects by name ("localhost:port") and marks its
    packets after SetQoS."""
    kind = Kind(name, short_tmp, ca)
    prov = kind.provider()
    sctx, cctx = kind.contexts(prov, log)
    srv_rec = Recorder("listener")
    srv_rec.hooks["bind"] = lambda s, a, p: s.Listen()
    srv_rec.hooks["listen"] = lambda s, a, p: s.Accept(Recorder("server"))
    lsock = prov.CreateSocket(mux, srv_rec, log, False, sctx)
    lsock.SetQoS(QOS_VOICE)
    call(srv_rec, lsock.Bind, None, 0)
    mux.run_until(lambda: bool(srv_rec.events))
    assert srv_rec.events[0][:2] == ("bind", "0.0.0.0"), srv_rec.events
    port = int(srv_rec.events[0][2])
    assert lsock.GetLocalAddress() == ("0.0.0.0", port)
    assert tos(lsock) == 46 << 2
    crec = Recorder("client")
    csock = prov.CreateSocket(mux, crec, log, False, cctx)
    call(crec, csock.Connect, f"localhost:{port}", "localhost")
    mux.run_until(lambda: crec.shutdown is not None or "connect" in crec.names())
    assert crec.names() == ["connect"], crec.events
    host, cport = csock.GetLocalAddress()
    assert host in ("127.0.0.1", "::1") and cport > 0
    csock.SetQoS(QOS_AUDIO_VIDEO)
    assert tos(csock) == 34 << 2
    delete(csock, lsock)


def tos(sock: ISocket) -> int:
    """The DSCP bits of the kernel socket under a TLS or DTLS socket."""
    s: Any = sock
    ep = getattr(s, "_ep", None)
    raw = ep.qos_sock if ep is not None else (s._lsock or s._tr.get_extra_info("socket"))
    if raw.family == socket.AF_INET6:
        return int(raw.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS))
    return int(raw.getsockopt(socket.IPPROTO_IP, socket.IP_TOS))


@pytest.mark.parametrize("name", STREAMISH)
def test_sendto_is_ignored_on_connected_sockets(
    mux: Mux, log: IInstanceLog, ca: Any, short_tmp: str, name: str
) -> None:
    """SendTo is UDP only and ignored elsewhere: no exception, no callback, no byte."""
    kind = Kind(name, short_tmp, ca)
    prov = kind.provider()
    sctx, cctx = kind.contexts(prov, log)
    lrec, srec, crec = Recorder("listener"), Recorder("server"), Recorder("client")
    lrec.hooks["bind"] = lambda s, a, p: s.Listen()
    lrec.hooks["listen"] = lambda s, a, p: s.Accept(srec)
    srec.hooks["accept"] = lambda s: s.Recv(bytearray(64), None, True)
    lsock = prov.CreateSocket(mux, lrec, log, False, sctx)
    call(lrec, lsock.Bind, *kind.bind_args())
    mux.run_until(lambda: bool(lrec.events))
    csock = prov.CreateSocket(mux, crec, log, False, cctx)
    call(crec, csock.Connect, kind.address(int(lrec.events[0][2])), "localhost")
    mux.run_until(lambda: "connect" in crec.names() and "accept" in srec.names())
    call(crec, csock.SendTo, b"not sent", None, "127.0.0.1", 9)
    call(crec, csock.Send, b"sent")
    mux.run_until(lambda: srec.received != b"" and crec.sends_done == 1)
    mux.run_for(0.05)
    assert srec.received == b"sent" and crec.names() == ["connect", "send"]
    delete(csock, lsock, *[s for s in LIVE if getattr(s, "_user", None) is srec])


@pytest.mark.parametrize("name", ["tls", "dtls"])
def test_secure_sockets_log_under_their_flag(mux: Mux, ca: Any, short_tmp: str, name: str) -> None:
    """TLS logs under LOG_TLS only and DTLS under LOG_DTLS only; a failure's detail too."""
    kind = Kind(name, short_tmp, ca)

    def run(flags: int) -> list[str]:
        log, lines = captured_log(flags)
        prov = kind.provider()
        _, cctx = kind.contexts(prov, IInstanceLog())  # the socket's lines only
        rec = Recorder()
        sock = prov.CreateSocket(mux, rec, log, False, cctx)
        sock.Connect(f"127.0.0.1:{free_port(socket.AF_INET, socket.SOCK_DGRAM)}")
        mux.run_until(lambda: rec.shutdown is not None)
        assert rec.shutdown is R.SOCKET_CONNECT_REJECTED
        sock.Delete()
        return list(lines.lines)

    assert run(ALL_LOG_FLAGS & ~kind.flag) == []
    on = run(kind.flag)
    assert on and all(line.startswith(LogFlags(kind.flag).name or "") for line in on), on
    assert any("refused" in line.lower() for line in on), on


# --------------------------------------------------------------------------- item 4: bounded


def test_tls_without_recv_holds_a_bounded_amount(
    mux: Mux, log: IInstanceLog, ca: Any, prov: ISocketProvider
) -> None:
    """A library TLS client sends 256 KiB after each SocketSendResult to a TLS socket
    that has no Recv pending: the receiver holds at most its hold limit, the sender's
    results stop coming (the kernel buffers are full) well before 64 MiB; then every
    byte is read, intact."""
    log.SetLogFlags(0)
    srv = Server(mux, log, prov, make_ctx(prov, log, cert=pem_of(ca, "localhost")))
    cli, crec = connect(mux, log, prov, make_ctx(prov, log, trust=ca.cert_pem.bytes()), srv.port)
    mux.run_until(lambda: "connect" in crec.names() and bool(srv.socks))
    peer, prec = srv.socks[0], srv.recs[0]
    chunk = random.Random(4).randbytes(256 * 1024)
    limit = 64 * 1024 * 1024
    sent = [0]
    last = [time.monotonic()]

    def more(s: ISocket) -> None:
        last[0] = time.monotonic()
        if sent[0] < limit:
            inside(crec, s.Send, chunk)
            sent[0] += len(chunk)

    crec.hooks["send"] = more
    more(cli)
    mux.run_until(lambda: time.monotonic() - last[0] > 0.5 or sent[0] >= limit, 30)
    assert sent[0] < limit, "the sender was never held back"
    held = peer._hend - peer._hstart  # type: ignore[attr-defined]
    assert held <= HOLD_LIMIT + 64 * 1024, held  # the limit plus one TLS read
    assert prec.names() == ["accept"]
    total = sent[0]
    crec.hooks.pop("send")
    h = hashlib.sha256()
    got = [0]
    buf = bytearray(1 << 20)

    def on_recv(s: ISocket, b: Any, n: int) -> None:
        h.update(memoryview(b)[:n])
        got[0] += n
        if got[0] < total:
            inside(prec, s.Recv, buf, None, True)

    prec.hooks["recv"] = on_recv
    prec.received = bytearray()
    call(prec, peer.Recv, buf, None, True)
    mux.run_until(lambda: got[0] >= total, 30, "draining")
    want = hashlib.sha256()
    for _ in range(total // len(chunk)):
        want.update(chunk)
    assert got[0] == total and h.digest() == want.digest()
    delete(cli)
    srv.close()


def test_dtls_without_recv_holds_a_bounded_number_of_records(
    mux: Mux, log: IInstanceLog, prov: ISocketProvider, caplog: pytest.LogCaptureFixture
) -> None:
    """Records that arrive with no Recv pending are held up to HOLD_RECORDS; the rest are
    dropped and the drop logged; the held ones are delivered in order afterwards."""
    monkey = pytest.MonkeyPatch()
    monkey.setattr(dtls_mod, "HOLD_RECORDS", 16)
    try:
        srv, cli, crec = dtls_pair(mux, log, prov)
        peer, prec = wait_pair(mux, srv, crec)
        with caplog.at_level("INFO", logger="usocket_asyncio"):
            for i in range(48):
                call(crec, cli.Send, i.to_bytes(2, "big") * 20)
            mux.run_until(lambda: crec.sends_done == 48)
            mux.run_for(0.1)
        assert "records held: dropping" in caplog.text
        assert prec.names() == ["accept"]
        for _ in range(17):
            call(prec, peer.Recv, bytearray(64))
        mux.run_until(lambda: prec.names().count("recv") == 16)
        mux.run_for(0.05)
        assert prec.received == b"".join(i.to_bytes(2, "big") * 20 for i in range(16))
        call(crec, cli.Send, b"fresh")
        mux.run_until(lambda: prec.received.endswith(b"fresh"))
        delete(cli)
        srv.close()
    finally:
        monkey.undo()


# --------------------------------------------------------------------------- item 11


@pytest.mark.parametrize("name", ["tls", "dtls"])
@pytest.mark.parametrize("cert_for", ["alt.example", "other.example", "sni"])
def test_upgrade_checks_the_name_given_to_connect(
    mux: Mux, log: IInstanceLog, ca: Any, prov: ISocketProvider, name: str, cert_for: str
) -> None:
    """The client's plain socket connected with serverName "alt.example": its upgrade
    checks the server's certificate against that name (not the IP literal); a
    certificate for another name fails with SOCKET_TLS_HANDSHAKE_FAILED; the name is
    sent by SNI ("sni": the server's default certificate is for another name, the
    one for "alt.example" is chosen by SNI)."""
    plain = CreateUDPSocketProvider() if name == "dtls" else CreateTCPSocketProvider()
    sctx = make_ctx(prov, log, cert=pem_of(ca, "other.example" if cert_for == "sni" else cert_for))
    if cert_for == "sni":
        sctx.SetServerCertificate(pem_of(ca, "alt.example"), None, "alt.example")
    cctx = make_ctx(prov, log, trust=ca.cert_pem.bytes())
    if name == "dtls":
        sctx.EnableDTLS(False)
        cctx.EnableDTLS(False)
    srv = Server(mux, log, prov if name == "dtls" else plain, sctx if name == "dtls" else None)
    if name == "tls":  # a plain TCP server that upgrades each accepted connection
        tls_srec = Recorder("tls-server")

        def upgrade(s: ISocket) -> None:
            srv.socks[99] = prov.UpgradeToTLSSocket(s, mux, tls_srec, log, True, sctx)

        orig = srv._on_listen

        def on_listen(sock: ISocket, addr: str, port: int) -> None:
            orig(sock, addr, port)
            srv.recs[-1].hooks["accept"] = upgrade

        srv.lrec.hooks["listen"] = on_listen
    urec = Recorder("plain-client")
    usock = plain.CreateSocket(mux, urec, log)
    call(urec, usock.Connect, f"127.0.0.1:{srv.port}", "alt.example")
    mux.run_until(lambda: "connect" in urec.names())
    crec = Recorder("client")
    csock = call(urec, prov.UpgradeToTLSSocket, usock, mux, crec, log, False, cctx)
    mux.run_until(lambda: bool(crec.events), what="the client's handshake")
    if cert_for != "other.example":
        assert crec.names() == ["upgraded"], crec.events
    else:
        ended_once(crec, R.SOCKET_TLS_HANDSHAKE_FAILED)
        assert crec.names() == ["shutdown"]
    assert urec.names() == ["connect"] and not urec.violations
    delete(csock, *srv.socks.values())
    srv.socks.clear()
    srv.close()


@pytest.mark.parametrize("name", ["tls", "dtls"])
def test_upgrade_inside_connect_and_accept_complete(
    mux: Mux, log: IInstanceLog, ca: Any, prov: ISocketProvider, name: str
) -> None:
    """UpgradeToTLSSocket straight from SocketConnectComplete (and, for TLS, from the
    server's SocketAcceptComplete): the handshake completes on both sides, data flows,
    and the plain sockets' users hear nothing more."""
    plain = CreateUDPSocketProvider() if name == "dtls" else CreateTCPSocketProvider()
    sctx = make_ctx(prov, log, cert=pem_of(ca, "localhost", "127.0.0.1"))
    cctx = make_ctx(prov, log, trust=ca.cert_pem.bytes())
    if name == "dtls":
        sctx.EnableDTLS(False)
        cctx.EnableDTLS(False)
    srec = Recorder("tls-server")
    srv = Server(mux, log, prov if name == "dtls" else plain, sctx if name == "dtls" else None)
    if name == "tls":
        orig = srv._on_listen

        def on_listen(sock: ISocket, addr: str, port: int) -> None:
            orig(sock, addr, port)
            prec = srv.recs[-1]
            prec.hooks["accept"] = lambda s: srv.socks.__setitem__(
                0, inside(prec, prov.UpgradeToTLSSocket, s, mux, srec, log, True, sctx)
            )

        srv.lrec.hooks["listen"] = on_listen
    crec = Recorder("client")
    urec = Recorder("plain-client")
    got: list[ISocket] = []
    urec.hooks["connect"] = lambda s: got.append(
        inside(urec, prov.UpgradeToTLSSocket, s, mux, crec, log, False, cctx)
    )
    usock = plain.CreateSocket(mux, urec, log)
    call(urec, usock.Connect, f"127.0.0.1:{srv.port}")
    server_up = "upgraded" if name == "tls" else "accept"
    peer_rec = srec if name == "tls" else None
    mux.run_until(
        lambda: (
            crec.shutdown is not None
            or ("upgraded" in crec.names() and 0 in srv.socks and bool(srv.recs))
        ),
        what="both handshakes",
    )
    peer_rec = peer_rec or srv.recs[0]
    mux.run_until(lambda: server_up in peer_rec.names() or peer_rec.shutdown is not None)
    assert crec.names() == ["upgraded"], crec.events
    assert peer_rec.names() == [server_up], peer_rec.events
    peer = srv.socks[0]
    call(peer_rec, peer.Recv, bytearray(5))
    call(crec, got[0].Send, b"hello")
    mux.run_until(lambda: peer_rec.received == b"hello")
    assert urec.names() == ["connect"] and not urec.violations
    if name == "tls":
        assert srv.recs[0].names() == ["accept"]
    delete(got[0], peer)
    srv.socks.clear()
    srv.close()


# --------------------------------------------------------------------------- signatures

API_SIGNATURES: dict[str, dict[str, str]] = {
    "ISocketProvider": {
        "CreateSocketContext": "(self, log)",
        "CreateSocket": "(self, iomux, user, log, useIPv6=False, socketContext=None)",
        "UpgradeToTLSSocket": (
            "(self, fromTCPSocket, iomux, user, log, initServerSide=False, socketContext=None)"
        ),
        "Delete": "(self)",
    },
    "ISocketContext": {
        "SetServerCertificate": "(self, cert, certLen=None, hostName=None)",
        "SetClientCertificate": "(self, cert, certLen=None, hostName=None)",
        "DisableClientCertificate": "(self)",
        "GetCertificateFingerprint": "(self)",
        "SetALPNProtocols": "(self, alpnList)",
        "SetALPNProcotols": "(self, alpnList)",
        "EnableDTLS": "(self, useSrtp)",
        "SetTrustedCertificates": "(self, pem)",
        "DisableCertificateVerification": "(self)",
        "Delete": "(self)",
    },
    "ISocket": {
        "Connect": "(self, address, serverName=None)",
        "Bind": "(self, localAddr=None, localPort=0, reuseAddr=False)",
        "Listen": "(self)",
        "Accept": "(self, remoteUser)",
        "Shutdown": "(self)",
        "Send": "(self, buf, len=None)",
        "SendTo": "(self, buf, len, dstAddr, dstPort)",
        "Recv": "(self, buf, len=None, recvPartial=False)",
        "RecvCancel": "(self)",
        "SetUser": "(self, user)",
        "GetLocalAddress": "(self)",
        "SetQoS": "(self, traffic)",
        "Delete": "(self)",
        "GetSrtpProfile": "(self)",
        "GetSrtpKeys": "(self)",
    },
    "USocket": {
        "SocketConnectComplete": "(self, socket)",
        "SocketBindResult": "(self, socket, localAddr, localPort)",
        "SocketListenResult": "(self, socket, remoteAddr, remotePort)",
        "SocketAcceptComplete": "(self, socket)",
        "SocketShutdown": "(self, socket, reason)",
        "SocketSendResult": "(self, socket)",
        "SocketRecvResult": "(self, socket, buf, len)",
        "SocketRecvFromResult": "(self, socket, buf, len, srcAddr, srcPort)",
        "SocketRecvCanceled": "(self, socket, buf)",
        "SocketUpgradeToTLSComplete": "(self, socket)",
        "SocketAcceptSelectedALPNProtocol": "(self, socket, protocol)",
    },
    "IIoMux": {
        "Create": "(*, uvloop=False)",
        "FromLoop": "(loop=None)",
        "Run": "(self)",
        "Terminate": "(self)",
    },
    "ITimer": {
        "__init__": "(self, iomux, user)",
        "Start": "(self, ms)",
        "Cancel": "(self)",
        "IsRunning": "(self)",
    },
    "UTimer": {"TimerOnTimeout": "(self, timer)"},
    "IInstanceLog": {
        "__init__": "(self, logFlags=0, logger=None)",
        "Log": "(self, flag, fmt, *args)",
        "HexDump": "(self, flag, buf, len=None)",
        "LogFlagSet": "(self, flag)",
        "SetLogFlags": "(self, flags)",
    },
}
FACTORIES = {
    "CreateTCPSocketProvider": "()",
    "CreateTLSSocketProvider": "(tcpSocketProvider=None)",
    "CreateUDPSocketProvider": "()",
    "CreateLocalSocketProvider": "()",
}


def plain_signature(fn: Any) -> str:
    """A signature as API.md writes it: names, defaults and markers, no annotations."""
    sig = inspect.signature(fn)
    # the compiled build's methods take `self` positionally only: `(self, /, ...)`
    return str(sig.replace(
        parameters=[
            p.replace(annotation=p.empty, kind=p.POSITIONAL_OR_KEYWORD)
            if p.name == "self" else p.replace(annotation=p.empty)
            for p in sig.parameters.values()
        ],
        return_annotation=sig.empty,
    ))  # fmt: skip


def test_the_public_signatures_are_api_md() -> None:
    """Every name API.md lists, with its parameter names and defaults (apps pass them by
    keyword: useIPv6=, socketContext=, recvPartial=, len=)."""
    got = {
        cls: {name: plain_signature(getattr(getattr(u, cls), name)) for name in methods}
        for cls, methods in API_SIGNATURES.items()
    }
    assert got == API_SIGNATURES
    assert {name: plain_signature(getattr(u, name)) for name in FACTORIES} == FACTORIES
    assert u.shutdownreason_t is u.ShutdownReason
    assert isinstance(u.IIoMux.loop, property)


@pytest.mark.parametrize("name", ["tcp", "local", "tls", "dtls", "udp"])
def test_each_kinds_classes_keep_the_signatures(
    mux: Mux, log: IInstanceLog, ca: Any, short_tmp: str, name: str
) -> None:
    """The concrete provider, socket and context classes of each kind keep the
    parameter names and defaults of the documented ones."""
    kind = Kind(name, short_tmp, ca)
    prov = kind.provider()
    _, ctx = kind.contexts(prov, log)
    sock = prov.CreateSocket(mux, Recorder(), log, False, ctx)
    pairs: list[tuple[Any, str]] = [(prov, "ISocketProvider"), (sock, "ISocket")]
    if ctx is not None:
        pairs.append((ctx, "ISocketContext"))
    for obj, api in pairs:
        for meth, want in API_SIGNATURES[api].items():
            assert plain_signature(getattr(type(obj), meth)) == want, (type(obj), meth)
    sock.Delete()


# --------------------------------------------------------------------------- ALPN callbacks


@pytest.mark.parametrize("name", ["tls", "dtls"])
@pytest.mark.parametrize("action", ["delete", "raise"])
def test_alpn_callback_deletes_or_raises(
    mux: Mux, log: IInstanceLog, ca: Any, short_tmp: str, name: str, action: str
) -> None:
    """Delete inside SocketAcceptSelectedALPNProtocol: nothing after it on that socket.
    An exception in it goes to the loop's exception handler, and the connection goes on
    as if it had returned True (the default)."""
    kind = Kind(name, short_tmp, ca)
    prov = kind.provider()
    sctx, cctx = kind.contexts(prov, log)
    assert sctx is not None and cctx is not None
    sctx.SetALPNProtocols(["b", "a"])
    cctx.SetALPNProtocols(["a", "b"])
    srv = Server(mux, log, prov, sctx)  # type: ignore[arg-type]
    crec = Recorder("client")

    def on_alpn(s: ISocket, protocol: str) -> bool:
        if action == "delete":
            s.Delete()
            return False
        raise RuntimeError("app bug")

    crec.hooks["alpn"] = on_alpn
    cli, _ = connect(mux, log, prov, cctx, srv.port, "localhost", crec)  # type: ignore[arg-type]
    if action == "delete":
        mux.run_until(lambda: bool(crec.events))
        mux.run_for(0.2)
        assert crec.events == [("alpn", "b")] and not crec.violations
    else:
        mux.run_until(lambda: crec.shutdown is not None or "connect" in crec.names())
        assert crec.names() == ["alpn", "connect"], crec.events
        errs = mux.take_errors()
        assert len(errs) == 1 and isinstance(errs[0]["exception"], RuntimeError)
        mux.run_until(lambda: 0 in srv.socks)
        peer, prec = srv.socks[0], srv.recs[0]
        call(prec, peer.Recv, bytearray(4))
        call(crec, cli.Send, b"data")
        mux.run_until(lambda: prec.received == b"data")
        delete(cli)
    srv.close()


@pytest.mark.parametrize("partial", [False, True])
def test_dtls_recv_partial_makes_no_difference(
    mux: Mux, log: IInstanceLog, prov: ISocketProvider, partial: bool
) -> None:
    """One record per Recv whatever recvPartial says: a shorter record completes a Recv
    with its own length, a longer one delivers the first `len` bytes."""
    srv, cli, crec = dtls_pair(mux, log, prov)
    peer, prec = wait_pair(mux, srv, crec)
    bufs = [bytearray(64) for _ in range(3)]
    for b in bufs:
        call(crec, cli.Recv, b, 10, partial)
    for msg in (b"abc", b"0123456789ABCDEF", b"xy"):
        call(prec, peer.Send, msg)
    mux.run_until(lambda: crec.names().count("recv") == 3)
    assert [e[1] for e in crec.events if e[0] == "recv"] == [3, 10, 2]
    assert crec.received == b"abc0123456789xy"
    assert bytes(bufs[1][10:12]) == b"\0\0"  # nothing written past len
    delete(cli)
    srv.close()


# --------------------------------------------------------------------------- item 5: DTLS lost


def test_udp_and_dtls_calls_from_another_thread_raise(
    mux: Mux, log: IInstanceLog, prov: ISocketProvider
) -> None:
    """Send, SendTo and Recv of UDP sockets (their fast paths too) and the DTLS socket's
    calls, made from a thread other than the loop's while it runs, raise SocketModeError
    and change nothing: the sockets work afterwards from the loop's thread."""
    arec, brec = Recorder("a"), Recorder("b")
    a, aport = udp_bound(mux, log, arec)
    b = CreateUDPSocketProvider().CreateSocket(mux, brec, log)
    call(brec, b.Connect, f"127.0.0.1:{aport}")
    mux.run_until(lambda: "connect" in brec.names(), what="connect")
    srv, cli, crec = dtls_pair(mux, log, prov)
    peer, prec = wait_pair(mux, srv, crec)
    calls: dict[str, Callable[[], object]] = {
        "udp SendTo": lambda: a.SendTo(b"x", None, "127.0.0.1", aport),
        "udp Recv": lambda: a.Recv(bytearray(8)),
        "udp Send": lambda: b.Send(b"x"),
        "udp Recv connected": lambda: b.Recv(bytearray(8)),
        "dtls Send": lambda: cli.Send(b"x"),
        "dtls Recv": lambda: cli.Recv(bytearray(8)),
        "dtls RecvCancel": cli.RecvCancel,
        "dtls Shutdown": cli.Shutdown,
        "dtls listener Shutdown": srv.listener.Shutdown,
    }
    said = from_another_thread(mux, calls)
    for name in calls:
        assert "call_soon_threadsafe" in said.get(name, ""), (name, said.get(name))
    mux.run_for(0.05)
    assert arec.names() == ["bind"] and brec.names() == ["connect"]
    assert crec.names() == ["connect"] and prec.names() == ["accept"]
    call(arec, a.Recv, bytearray(8))
    call(brec, b.Send, b"udp ok")
    call(prec, peer.Recv, bytearray(16))
    call(crec, cli.Send, b"dtls ok")
    mux.run_until(lambda: "recvfrom" in arec.names() and "recv" in prec.names())
    assert arec.received == b"udp ok" and prec.received == b"dtls ok"
    for s in (a, b):
        s.Delete()
    delete(cli)
    srv.close()


def test_dtls_records_already_read_reach_recv_before_lost(
    mux: Mux, log: IInstanceLog, prov: ISocketProvider
) -> None:
    """The UDP transport under a connected DTLS socket is lost (closed under it, as a
    fatal socket error would) while records are held: the held records still go to
    the Recvs posted afterwards, an exact one included, then SOCKET_LOST, once."""
    srv, cli, crec = dtls_pair(mux, log, prov)
    peer, prec = wait_pair(mux, srv, crec)
    for i in range(3):
        call(prec, peer.Send, bytes([65 + i]) * 50)
    mux.run_until(lambda: len(cli._q.held) == 3)  # type: ignore[attr-defined]
    cli._ep.tr.abort()  # type: ignore[attr-defined]
    mux.run_for(0.05)
    assert crec.names() == ["connect"]  # held, not ended
    for _ in range(4):
        call(crec, cli.Recv, bytearray(50))
    mux.run_until(lambda: crec.shutdown is not None)
    assert crec.events[1:] == [("recv", 50)] * 3 + [("shutdown", R.SOCKET_LOST)]
    assert crec.received == b"A" * 50 + b"B" * 50 + b"C" * 50
    mux.run_for(0.05)
    ended_once(crec, R.SOCKET_LOST)
    delete(cli)
    srv.close()


# --------------------------------------------------------------------------- item 8: no network

NO_NETWORK_CHILD = """
import asyncio, logging, sys
from usocket_asyncio import *

class U(USocket):
    reason = None
    def SocketShutdown(self, socket, reason):
        self.reason = reason

logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
kind, loop = sys.argv[1], sys.argv[2]
log = IInstanceLog(LOG_TLS | LOG_DTLS | LOG_UDP)
mux = IIoMux.Create(uvloop=loop == "uvloop")
for call in ("Connect", "Bind", "Unreachable"):
    u = U()
    if kind == "udp":
        s = CreateUDPSocketProvider().CreateSocket(mux, u, log)
    else:
        prov = CreateTLSSocketProvider(None)
        ctx = prov.CreateSocketContext(log)
        if kind == "dtls":
            ctx.EnableDTLS(False)
        s = prov.CreateSocket(mux, u, log, False, ctx)
    if call == "Connect":
        s.Connect("no-such-host.invalid:80")
    elif call == "Bind":
        s.Bind("no-such-host.invalid", 0)
    else:  # the namespace's loopback is down: connect() fails with ENETUNREACH
        s.Connect("127.0.0.1:80")
    for _ in range(500):
        if u.reason is not None:
            break
        mux.loop.run_until_complete(asyncio.sleep(0.01))
    print("RESULT", call, u.reason.name if u.reason is not None else None)
    s.Delete()
mux.Close()
"""


@pytest.mark.parametrize("name", ["tls", "dtls", "udp"])
def test_unresolvable_and_unreachable(mux: Mux, name: str) -> None:
    """In a network namespace of its own (nothing leaves the machine): an unresolvable
    name is SOCKET_CONNECT_FAILED for Connect and SOCKET_BIND_FAILED for Bind; an
    unreachable network is SOCKET_CONNECT_FAILED (for UDP too: connect() itself fails),
    with the errno logged."""
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "-n", "true"], capture_output=True).returncode:
        pytest.skip("needs unshare -n (a private network namespace) to resolve nothing")
    r = subprocess.run(
        [unshare, "-n", sys.executable, "-c", NO_NETWORK_CHILD, name, mux.kind],
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "RESULT Connect SOCKET_CONNECT_FAILED" in r.stdout, r.stdout + r.stderr
    assert "RESULT Bind SOCKET_BIND_FAILED" in r.stdout, r.stdout + r.stderr
    assert "RESULT Unreachable SOCKET_CONNECT_FAILED" in r.stdout, r.stdout + r.stderr
    assert "Network is unreachable" in r.stdout


# --------------------------------------------------------------------------- item 2


@pytest.mark.parametrize("name", ["tcp", "local", "tls", "dtls", "udp"])
def test_second_bind_or_connect_raises_and_accept_returns_none(
    mux: Mux, log: IInstanceLog, ca: Any, short_tmp: str, name: str
) -> None:
    """Bind or Connect a second time, or the other mode's call, raises SocketModeError
    at once with a sentence and changes nothing; Accept returns None. The UDP provider
    deleted at once leaves its sockets working."""
    kind = Kind(name, short_tmp, ca)
    prov = kind.provider()
    sctx, cctx = kind.contexts(prov, log)
    lrec, crec = Recorder("listener"), Recorder("client")
    accepted: list[Any] = []
    if name != "udp":
        lrec.hooks["bind"] = lambda s, a, p: s.Listen()
        lrec.hooks["listen"] = lambda s, a, p: accepted.append(s.Accept(Recorder("server")))
    lsock = prov.CreateSocket(mux, lrec, log, False, sctx)
    call(lrec, lsock.Bind, *kind.bind_args())
    mux.run_until(lambda: bool(lrec.events))
    port = int(lrec.events[0][2])
    csock = prov.CreateSocket(mux, crec, log, False, cctx)
    call(crec, csock.Connect, kind.address(port), "localhost")
    prov.Delete()
    for fn, args in (
        (lsock.Bind, kind.bind_args()),
        (lsock.Connect, (kind.address(port),)),
        (csock.Connect, (kind.address(port),)),
        (csock.Bind, kind.bind_args()),
    ):
        with pytest.raises(SocketModeError) as e:
            fn(*args)
        assert str(e.value).strip().count(" ") >= 3, e.value  # a sentence, not a code
    if name == "udp":
        call(lrec, lsock.Recv, bytearray(8))
        call(crec, csock.Send, b"still")
        mux.run_until(lambda: lrec.received == b"still")
    else:
        mux.run_until(lambda: "connect" in crec.names() and bool(accepted))
        assert accepted == [None]
    assert lrec.shutdown is None and crec.shutdown is None
    delete(csock, lsock, *[s for s in LIVE if getattr(s, "_loop", None) is mux.loop])


# --------------------------------------------------------------------------- item 5: TLS close


def test_tls_shutdown_waits_a_bounded_time_for_close_notify(
    mux: Mux, ca: Any, prov: ISocketProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Our Shutdown sends close_notify; a peer that never answers it (a stdlib TLS server
    that stops reading after its handshake) does not keep the socket open: after the
    bounded wait it ends with SOCKET_SHUTDOWN_NORMAL, once, and the wait is logged."""
    monkeypatch.setattr(tls_mod, "SHUTDOWN_TIMEOUT", 0.5)
    log, lines = captured_log(LOG_TLS)
    sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(sctx)
    release = threading.Event()
    with socket.socket() as lsock:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1)
        lsock.settimeout(10)

        def serve() -> None:
            conn, _ = lsock.accept()
            conn.settimeout(10)
            with sctx.wrap_socket(conn, server_side=True):
                release.wait(10)  # never reads: our close_notify stays unanswered

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        try:
            cctx = make_ctx(prov, log, trust=ca.cert_pem.bytes())
            cli, crec = connect(mux, log, prov, cctx, lsock.getsockname()[1])
            mux.run_until(lambda: bool(crec.events), what="the handshake")
            assert crec.names() == ["connect"], crec.events
            call(crec, cli.Shutdown)
            mux.run_until(lambda: crec.shutdown is not None, 10, "the bounded close")
            assert t.is_alive() and not release.is_set()  # the peer never answered
            ended_once(crec, R.SOCKET_SHUTDOWN_NORMAL)
            assert "timed out" in lines.text(), lines.text()
            delete(cli)
        finally:
            release.set()
            t.join(10)


# --------------------------------------------------------------------------- item 0: after Run


@pytest.mark.parametrize("name", ["local", "tls", "dtls", "udp"])
def test_calls_after_run_returned_take_effect_when_it_runs_again(
    mux: Mux, log: IInstanceLog, ca: Any, short_tmp: str, name: str
) -> None:
    """A connection made while Run() was running; Run() returns (Terminate); Send, Recv
    and Shutdown made then take effect when the loop runs again."""
    kind = Kind(name, short_tmp, ca)
    prov = kind.provider()
    sctx, cctx = kind.contexts(prov, log)
    lrec, srec, crec = Recorder("listener"), Recorder("server"), Recorder("client")
    got: list[ISocket] = []
    if name == "udp":
        lrec.hooks["recvfrom"] = lambda s, b, n, a, p: s.SendTo(b"pong", None, a, p)
    else:
        lrec.hooks["bind"] = lambda s, a, p: s.Listen()
        lrec.hooks["listen"] = lambda s, a, p: s.Accept(srec)
        srec.hooks["accept"] = got.append
        srec.hooks["recv"] = lambda s, b, n: s.Send(b"pong")
    lsock = prov.CreateSocket(mux, lrec, log, False, sctx)
    call(lrec, lsock.Bind, *kind.bind_args())
    mux.run_until(lambda: bool(lrec.events))
    csock = prov.CreateSocket(mux, crec, log, False, cctx)
    crec.hooks["connect"] = lambda s: mux.Terminate()
    call(crec, csock.Connect, kind.address(int(lrec.events[0][2])), "localhost")
    mux.Run()  # returns once the client is connected
    assert crec.names() == ["connect"]
    if name == "udp":
        call(lrec, lsock.Recv, bytearray(8))
    else:
        mux.run_until(lambda: bool(got))
        call(srec, got[0].Recv, bytearray(4))
    crec.hooks["recv"] = lambda s, b, n: mux.Terminate()
    call(crec, csock.Send, b"ping")
    call(crec, csock.Recv, bytearray(4))
    assert crec.names() == ["connect"]
    mux.Run()
    assert crec.names() == ["connect", "send", "recv"] and crec.received == b"pong"
    call(crec, csock.Shutdown)
    assert crec.shutdown is None
    mux.run_until(lambda: crec.shutdown is not None)
    ended_once(crec, R.SOCKET_SHUTDOWN_NORMAL)
    delete(csock, lsock, *got)


def test_dtls_set_user_moves_later_callbacks(
    mux: Mux, log: IInstanceLog, prov: ISocketProvider
) -> None:
    """SetUser on a connected DTLS socket: later callbacks go to the new user only."""
    srv, cli, crec = dtls_pair(mux, log, prov)
    peer, prec = wait_pair(mux, srv, crec)
    call(crec, cli.Recv, bytearray(8))
    call(prec, peer.Send, b"one")
    mux.run_until(lambda: crec.received == b"one")
    other = Recorder("other")
    cli.SetUser(other)
    call(other, cli.Recv, bytearray(8))
    call(prec, peer.Send, b"two")
    call(other, cli.Send, b"back")
    call(prec, peer.Recv, bytearray(8))
    mux.run_until(lambda: prec.received == b"back" and other.received == b"two")
    call(prec, peer.Shutdown)
    mux.run_until(lambda: other.shutdown is not None)
    assert crec.names() == ["connect", "recv"]
    assert sorted(other.names()[:2]) == ["recv", "send"]
    ended_once(other, R.SOCKET_SHUTDOWN_BY_PEER)
    delete(cli)
    srv.close()


def test_udp_bind_none_reports_all_interfaces(mux: Mux, log: IInstanceLog) -> None:
    """UDP Bind(None) binds every IPv4 interface and reports "0.0.0.0"; a datagram sent
    to 127.0.0.1 arrives."""
    rec = Recorder("udp")
    sock = CreateUDPSocketProvider().CreateSocket(mux, rec, log)
    call(rec, sock.Bind, None, 0)
    mux.run_until(lambda: bool(rec.events))
    assert rec.events[0][:2] == ("bind", "0.0.0.0"), rec.events
    port = int(rec.events[0][2])
    assert sock.GetLocalAddress() == ("0.0.0.0", port)
    call(rec, sock.Recv, bytearray(8))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.sendto(b"hi", ("127.0.0.1", port))
        mux.run_until(lambda: rec.received == b"hi")
    assert rec.events[1][0] == "recvfrom" and str(rec.events[1][2]) == "127.0.0.1"
    sock.Delete()


# --------------------------------------------------------------------------- item 6: streams


@pytest.mark.parametrize("name", ["tcp", "local", "tls"])
@pytest.mark.parametrize("where", ["bind", "accept", "canceled"])
def test_stream_delete_inside_bind_accept_and_canceled(
    mux: Mux, log: IInstanceLog, ca: Any, short_tmp: str, name: str, where: str
) -> None:
    """Delete inside SocketBindResult, SocketAcceptComplete or SocketRecvCanceled (the
    callbacks the generic checker does not cover): nothing after it on that socket."""
    kind = Kind(name, short_tmp, ca)
    prov = kind.provider()
    sctx, cctx = kind.contexts(prov, log)
    lrec, srec, crec = Recorder("listener"), Recorder("server"), Recorder("client")
    seen: list[str] = []

    def deleter(s: ISocket, *args: Any) -> None:
        seen.append(where)
        s.Delete()

    lrec.hooks["bind"] = deleter if where == "bind" else (lambda s, a, p: s.Listen())
    lrec.hooks["listen"] = lambda s, a, p: s.Accept(srec)
    if where == "accept":
        srec.hooks["accept"] = deleter
    lsock = prov.CreateSocket(mux, lrec, log, False, sctx)
    call(lrec, lsock.Bind, *kind.bind_args())
    mux.run_until(lambda: bool(lrec.events))
    if where == "bind":
        mux.run_for(0.05)
        assert lrec.names() == ["bind"] and seen == ["bind"]
        return
    csock = prov.CreateSocket(mux, crec, log, False, cctx)
    call(crec, csock.Connect, kind.address(int(lrec.events[0][2])), "localhost")
    mux.run_until(lambda: "connect" in crec.names() or crec.shutdown is not None)
    if where == "accept":
        mux.run_until(lambda: bool(seen))
        call(crec, csock.Send, b"to nobody")
        mux.run_until(lambda: crec.shutdown is not None, what="the client's end")
        assert srec.names() == ["accept"]
    else:
        crec.hooks["canceled"] = deleter
        for _ in range(3):
            call(crec, csock.Recv, bytearray(8))
        call(crec, csock.RecvCancel)
        mux.run_until(lambda: bool(seen))
        mux.run_for(0.05)
        assert crec.names() == ["connect", "canceled"], crec.events
    assert seen == [where] and not crec.violations and not srec.violations
    delete(lsock)


def test_tls_delete_inside_upgrade_complete(
    mux: Mux, log: IInstanceLog, ca: Any, prov: ISocketProvider
) -> None:
    """Delete inside SocketUpgradeToTLSComplete: nothing after it; the peer ends."""
    tcp = CreateTCPSocketProvider()
    sctx = make_ctx(prov, log, cert=pem_of(ca, "127.0.0.1"))
    cctx = make_ctx(prov, log, trust=ca.cert_pem.bytes())
    lrec, trec, srec = Recorder("listener"), Recorder("tcp-server"), Recorder("tls-server")
    got: list[ISocket] = []
    lrec.hooks["bind"] = lambda s, a, p: s.Listen()
    lrec.hooks["listen"] = lambda s, a, p: s.Accept(trec)
    trec.hooks["accept"] = lambda s: got.append(
        prov.UpgradeToTLSSocket(s, mux, srec, log, True, sctx)
    )
    srec.hooks["upgraded"] = lambda s: s.Recv(bytearray(4))
    lsock = tcp.CreateSocket(mux, lrec, log)
    call(lrec, lsock.Bind, "127.0.0.1", 0)
    mux.run_until(lambda: bool(lrec.events))
    urec, crec = Recorder("tcp-client"), Recorder("tls-client")
    crec.hooks["upgraded"] = lambda s: (s.Send(b"late"), s.Delete())
    urec.hooks["connect"] = lambda s: got.append(
        prov.UpgradeToTLSSocket(s, mux, crec, log, False, cctx)
    )
    usock = tcp.CreateSocket(mux, urec, log)
    call(urec, usock.Connect, f"127.0.0.1:{lrec.events[0][2]}")
    mux.run_until(lambda: srec.shutdown is not None, what="the server's end")
    mux.run_for(0.05)
    assert crec.names() == ["upgraded"] and not crec.violations
    assert srec.names()[0] == "upgraded" and srec.names().count("shutdown") == 1
    delete(lsock, *got)


@pytest.mark.parametrize(
    "make", [CreateTCPSocketProvider, CreateUDPSocketProvider, CreateLocalSocketProvider]
)
def test_tls_only_calls_on_other_providers_raise(
    mux: Mux, log: IInstanceLog, make: Callable[[], ISocketProvider]
) -> None:
    """UpgradeToTLSSocket belongs to the TLS provider: elsewhere it is a caller's mistake
    (SocketModeError naming the right provider), and the socket passed in is left as it
    was."""
    prov = make()
    rec = Recorder()
    sock = CreateTCPSocketProvider().CreateSocket(mux, rec, log)
    with pytest.raises(SocketModeError, match="CreateTLSSocketProvider"):
        prov.UpgradeToTLSSocket(sock, mux, Recorder(), log)
    sock.Connect(f"127.0.0.1:{free_port()}")
    mux.run_until(lambda: rec.shutdown is not None)
    assert rec.events == [("shutdown", ShutdownReason.SOCKET_CONNECT_REJECTED)]
    sock.Delete()
