"""TCP sockets: every failure reason provoked for real, and the behaviour beyond the
generic checker (tests/kit/conformance.py): options, addresses, accept decisions, the
library holding sockets, calls made before the loop runs."""

from __future__ import annotations

import errno
import gc
import hashlib
import os
import random
import select
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
from kit.loop import Mux, R, Recorder, free_port, have_ipv6
from kit.streams import bound_port, captured_log, client, ended, expect_end, listener

from usocket_asyncio import (
    LOG_TCP,
    CreateTCPSocketProvider,
    IInstanceLog,
    ISocket,
    QosTrafficType,
    SocketModeError,
)
from usocket_asyncio._base import LIVE
from usocket_asyncio._stream import LISTEN_BACKLOG, StreamSocket
from usocket_asyncio._tcp import TCPSocket

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_ipv6 = pytest.mark.skipif(not have_ipv6(), reason="no IPv6 loopback")


def tcp(mux: Mux, log: IInstanceLog, use_ipv6: bool = False) -> Callable[[Recorder], ISocket]:
    prov = CreateTCPSocketProvider()
    return lambda rec: prov.CreateSocket(mux, rec, log, use_ipv6)


def raw(sock: ISocket) -> Any:
    """The kernel socket under a connected library socket (or its listening socket)."""
    s: Any = sock
    if s._lsock is not None:
        return s._lsock
    return s._tr.get_extra_info("socket")


def pair(mux: Mux, log: IInstanceLog, use_ipv6: bool = False) -> tuple[Any, ...]:
    prov = CreateTCPSocketProvider()
    host = "::1" if use_ipv6 else "127.0.0.1"
    lsock, lrec, accepted = listener(mux, log, prov, host, use_ipv6=use_ipv6)
    addr = f"[{host}]" if use_ipv6 else host
    csock, crec = client(mux, log, prov, f"{addr}:{bound_port(lrec)}", use_ipv6)
    mux.run_until(lambda: bool(accepted) and "connect" in crec.names(), what="connection")
    ssock, srec = accepted[0]
    return lsock, lrec, ssock, srec, csock, crec


def delete_all(*socks: ISocket) -> None:
    for s in socks:
        s.Delete()


# ----------------------------------------------------------------------- failure reasons


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",  # no port
        "[::1]",  # no port
        "localhost",  # no port
        "127.0.0.1:",  # empty port
        "127.0.0.1:http",  # not a number
        "127.0.0.1:65536",  # out of range
        "127.0.0.1:99999999999",
        "127.0.0.1:-1",
        "[::1:80",  # missing ]
        "[not-v6]:80",
        "::1:80",  # v6 without brackets
        "999.1.1.1:80",
        "1.2.3:80",
        "bad_name!:80",
        "",
        " ",
    ],
)
def test_connect_address_invalid(mux: Mux, address: str) -> None:
    log, lines = captured_log(LOG_TCP)
    expect_end(mux, tcp(mux, log), lambda s: s.Connect(address), R.SOCKET_ADDRESS_INVALID)
    assert "address invalid" in lines.text()


@pytest.mark.parametrize("args", [("127.0.0.1", 65536), (None, 70000), ("127.0.0.1", -1)])
def test_bind_port_out_of_range(mux: Mux, args: tuple[str | None, int]) -> None:
    log, lines = captured_log(LOG_TCP)
    expect_end(mux, tcp(mux, log), lambda s: s.Bind(*args), R.SOCKET_ADDRESS_INVALID)
    assert "out of range" in lines.text()


@pytest.mark.parametrize("addr", ["bad_name!", "127.0.0.1:99999", "[::1"])
def test_bind_address_syntax(mux: Mux, addr: str) -> None:
    log, lines = captured_log(LOG_TCP)
    expect_end(mux, tcp(mux, log), lambda s: s.Bind(addr, 0), R.SOCKET_ADDRESS_INVALID)
    assert "address invalid" in lines.text()


def test_connect_rejected_by_a_closed_port(mux: Mux) -> None:
    log, lines = captured_log(LOG_TCP)
    with socket.socket() as holder:  # bound, not listening: the port is ours and closed
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        expect_end(
            mux, tcp(mux, log), lambda s: s.Connect(f"127.0.0.1:{port}"), R.SOCKET_CONNECT_REJECTED
        )
    assert "Connect failed" in lines.text()


@needs_ipv6
def test_connect_rejected_ipv6(mux: Mux) -> None:
    log, _ = captured_log(LOG_TCP)
    with socket.socket(socket.AF_INET6) as holder:
        holder.bind(("::1", 0))
        port = holder.getsockname()[1]
        expect_end(
            mux,
            tcp(mux, log, True),
            lambda s: s.Connect(f"[::1]:{port}"),
            R.SOCKET_CONNECT_REJECTED,
        )


NO_NETWORK_CHILD = """
import sys
from usocket_asyncio import *
from usocket_asyncio._tcp import TCPSocket

class U(USocket):
    reason = None
    def SocketShutdown(self, socket, reason):
        self.reason = reason

log = IInstanceLog(LOG_TCP)
import logging
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
mux = IIoMux.Create(uvloop=sys.argv[1] == "uvloop")
for call in ("Connect", "Bind", "Unreachable"):
    u = U()
    s = CreateTCPSocketProvider().CreateSocket(mux, u, log)
    if call == "Connect":
        s.Connect("no-such-host.invalid:80")
    elif call == "Bind":
        s.Bind("no-such-host.invalid", 0)
    else:  # the namespace's loopback is down: connect() fails with ENETUNREACH
        s.Connect("127.0.0.1:80")
    for _ in range(500):
        if u.reason is not None:
            break
        mux.loop.run_until_complete(__import__("asyncio").sleep(0.01))
    print("RESULT", call, u.reason.name if u.reason is not None else None)
    s.Delete()
mux.Close()
"""


def test_unresolvable_name_connect_failed_and_bind_failed(mux: Mux) -> None:
    """A name that does not resolve: Connect gives SOCKET_CONNECT_FAILED, Bind
    SOCKET_BIND_FAILED; an unreachable network: SOCKET_CONNECT_FAILED. glibc here sends
    even `.invalid` names to the configured DNS server, so the lookup runs in a child
    process in a network namespace of its own (`unshare -n`), where it fails without
    anything leaving the machine."""
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "-n", "true"], capture_output=True).returncode:
        pytest.skip("needs unshare -n (a private network namespace) to resolve nothing")
    r = subprocess.run(
        [unshare, "-n", sys.executable, "-c", NO_NETWORK_CHILD, mux.kind],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "RESULT Connect SOCKET_CONNECT_FAILED" in r.stdout, r.stdout + r.stderr
    assert "RESULT Bind SOCKET_BIND_FAILED" in r.stdout, r.stdout + r.stderr
    assert "RESULT Unreachable SOCKET_CONNECT_FAILED" in r.stdout, r.stdout + r.stderr
    assert "Network is unreachable" in r.stdout
    assert "gaierror" in r.stdout and "cannot resolve" in r.stdout


def test_addr_in_use(mux: Mux) -> None:
    log, lines = captured_log(LOG_TCP)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        expect_end(mux, tcp(mux, log), lambda s: s.Bind("127.0.0.1", port), R.SOCKET_ADDR_IN_USE)
        # reuseAddr does not let a second socket take a listening port either
        expect_end(
            mux, tcp(mux, log), lambda s: s.Bind("127.0.0.1", port, True), R.SOCKET_ADDR_IN_USE
        )
    assert "Address already in use" in lines.text()


def test_bind_failed_for_an_address_not_on_this_host(mux: Mux) -> None:
    # 192.0.2.1 (TEST-NET-1) is on no interface: bind() fails with EADDRNOTAVAIL, and
    # nothing is sent anywhere.
    log, lines = captured_log(LOG_TCP)
    expect_end(mux, tcp(mux, log), lambda s: s.Bind("192.0.2.1", 0), R.SOCKET_BIND_FAILED)
    assert "Cannot assign requested address" in lines.text()


class _NoSocketModule:
    """Stands in for the `socket` module inside the stream engine: socket() fails."""

    def __getattr__(self, name: str) -> Any:
        return getattr(socket, name)

    @staticmethod
    def socket(*args: Any, **kw: Any) -> socket.socket:
        raise OSError(errno.EMFILE, "Too many open files")


@pytest.mark.pure_only
def test_open_failed(mux: Mux, monkeypatch: pytest.MonkeyPatch) -> None:
    import usocket_asyncio._stream as stream

    monkeypatch.setattr(stream, "socket", _NoSocketModule())
    log, lines = captured_log(LOG_TCP)
    expect_end(mux, tcp(mux, log), lambda s: s.Bind("127.0.0.1", 0), R.SOCKET_OPEN_FAILED)
    assert "Too many open files" in lines.text()


def test_listen_failed(mux: Mux) -> None:
    """Two sockets with SO_REUSEADDR may bind the same address, but only one may listen:
    the second listen() fails with EADDRINUSE, for real."""
    log, lines = captured_log(LOG_TCP)
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.bind(("127.0.0.1", 0))
        port = other.getsockname()[1]
        rec = Recorder("listener")
        sock = tcp(mux, log)(rec)
        sock.Bind("127.0.0.1", port, reuseAddr=True)
        mux.run_until(lambda: bool(rec.events))
        assert rec.events == [("bind", "127.0.0.1", port)]
        assert raw(sock).getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) != 0
        other.listen(1)
        rec.in_call = True
        sock.Listen()
        rec.in_call = False
        ended(mux, rec)
    assert rec.shutdown is R.SOCKET_LISTEN_FAILED
    assert "Listen failed" in lines.text()
    sock.Delete()


@pytest.mark.pure_only
def test_accept_failed(mux: Mux, monkeypatch: pytest.MonkeyPatch) -> None:
    """The accepted connection cannot be set up: its user hears SOCKET_ACCEPT_FAILED
    (and nothing else); the listener carries on."""

    async def broken(self: StreamSocket, conn: socket.socket) -> None:
        raise OSError(errno.ENOMEM, "Cannot allocate memory")

    monkeypatch.setattr(TCPSocket, "_open_accepted", broken)
    log, lines = captured_log(LOG_TCP)
    lsock, lrec, _accepted = listener(
        mux, log, CreateTCPSocketProvider(), "127.0.0.1", accept=False
    )
    users: list[Recorder] = []

    def on_listen(sock: ISocket, a: str, p: int) -> None:
        users.append(Recorder("accepted"))
        sock.Accept(users[-1])

    lrec.hooks["listen"] = on_listen
    with socket.create_connection(("127.0.0.1", bound_port(lrec)), timeout=5) as peer:
        mux.run_until(lambda: bool(users) and users[0].shutdown is not None)
        mux.run_for(0.02)
        assert users[0].events == [("shutdown", R.SOCKET_ACCEPT_FAILED)]
        peer.settimeout(5)
        assert peer.recv(10) == b""  # the connection was closed
    assert "Cannot allocate memory" in lines.text()
    assert lrec.shutdown is None
    lsock.Delete()


class _FlakyListener:
    """Wraps the listening socket: accept() raises `err` the first `n` times."""

    def __init__(self, real: socket.socket, err: int, n: int) -> None:
        self.real, self.err, self.left, self.raised = real, err, n, 0

    def accept(self) -> tuple[socket.socket, Any]:
        if self.left:
            self.left -= 1
            self.raised += 1
            raise OSError(self.err, errno.errorcode[self.err])
        return self.real.accept()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@pytest.mark.parametrize("err", [errno.EMFILE, errno.ENFILE, errno.ECONNABORTED, errno.EPERM])
def test_accept_errors_are_logged_and_the_listener_keeps_serving(mux: Mux, err: int) -> None:
    log, lines = captured_log(LOG_TCP)
    lsock, lrec, accepted = listener(mux, log, CreateTCPSocketProvider(), "127.0.0.1")
    flaky = _FlakyListener(raw(lsock), err, 3)
    setattr(lsock, "_lsock", flaky)  # noqa: B010 - the one narrow seam into the listener
    peers = [socket.create_connection(("127.0.0.1", bound_port(lrec)), timeout=5)]
    try:
        mux.run_until(lambda: len(accepted) == 1, what="accept after the errors")
        assert flaky.raised == 3
        peers.append(socket.create_connection(("127.0.0.1", bound_port(lrec)), timeout=5))
        mux.run_until(lambda: len(accepted) == 2, what="the next accept")
        assert lrec.shutdown is None and lrec.names().count("listen") == 2
        assert lines.text().count("accept failed") == 3
        assert errno.errorcode[err] in lines.text()
        # the accepted connections work
        srv, srec = accepted[1]
        srv.Recv(bytearray(5))
        peers[1].sendall(b"hello")
        mux.run_until(lambda: srec.received == b"hello")
    finally:
        for p in peers:
            p.close()
    for s, _ in accepted:
        s.Delete()
    lsock.Delete()


# ----------------------------------------------------------------------- accept decisions


def test_accept_outside_listen_result_raises(mux: Mux, log: IInstanceLog) -> None:
    lsock, lrec, _accepted = listener(mux, log, CreateTCPSocketProvider(), "127.0.0.1")
    with pytest.raises(SocketModeError, match="only allowed inside SocketListenResult"):
        lsock.Accept(Recorder())
    with pytest.raises(SocketModeError):
        lsock.Accept(None)
    # and twice inside one SocketListenResult
    errors: list[BaseException] = []

    def on_listen(sock: ISocket, a: str, p: int) -> None:
        sock.Accept(None)
        try:
            sock.Accept(Recorder())
        except SocketModeError as e:
            errors.append(e)

    lrec.hooks["listen"] = on_listen
    with socket.create_connection(("127.0.0.1", bound_port(lrec)), timeout=5) as peer:
        mux.run_until(lambda: bool(errors))
        assert peer.recv(10) == b""  # the first decision (deny) stands
    assert "already called" in str(errors[0])
    assert lrec.shutdown is None
    lsock.Delete()


def test_a_connection_neither_accepted_nor_denied_is_denied(mux: Mux, log: IInstanceLog) -> None:
    lsock, lrec, accepted = listener(mux, log, CreateTCPSocketProvider(), "127.0.0.1", accept=False)
    with socket.create_connection(("127.0.0.1", bound_port(lrec)), timeout=5) as peer:
        mux.run_until(lambda: "listen" in lrec.names())
        _, addr, port = lrec.events[-1]
        assert (addr, port) == peer.getsockname()
        assert peer.recv(10) == b""
    assert not accepted
    assert [s for s in LIVE if getattr(s, "_loop", None) is mux.loop] == [lsock]
    lsock.Delete()


def test_listen_backlog_is_at_least_128(mux: Mux, log: IInstanceLog) -> None:
    """With the loop stopped (nothing accepted), 129 peers all complete their handshake:
    the kernel's accept queue holds them all. Then each is reported and denied."""
    assert LISTEN_BACKLOG >= 128
    lsock, lrec, _ = listener(mux, log, CreateTCPSocketProvider(), "127.0.0.1", accept=False)
    port = bound_port(lrec)
    peers = []
    try:
        for _ in range(129):
            p = socket.socket()
            p.setblocking(False)
            peers.append(p)
            assert p.connect_ex(("127.0.0.1", port)) in (0, errno.EINPROGRESS)
        pending = set(peers)
        deadline = time.monotonic() + 5
        while pending and time.monotonic() < deadline:
            _, w, _ = select.select([], list(pending), [], 0.1)
            pending -= set(w)
        assert not pending, f"{len(pending)} handshakes did not complete"
        assert all(p.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0 for p in peers)
        mux.run_until(lambda: lrec.names().count("listen") == 129, what="129 reports")
    finally:
        for p in peers:
            p.close()
    assert lrec.shutdown is None
    lsock.Delete()


def test_set_user_on_the_listener(mux: Mux, log: IInstanceLog) -> None:
    lsock, lrec, accepted = listener(mux, log, CreateTCPSocketProvider(), "127.0.0.1")
    other = Recorder("other")
    other.hooks["listen"] = lambda s, a, p: s.Accept(None)
    lsock.SetUser(other)
    with socket.create_connection(("127.0.0.1", bound_port(lrec)), timeout=5) as peer:
        mux.run_until(lambda: "listen" in other.names())
        assert peer.recv(10) == b""
    assert "listen" not in lrec.names() and not accepted
    lsock.Shutdown()
    mux.run_until(lambda: other.shutdown is not None)
    assert other.shutdown is R.SOCKET_SHUTDOWN_NORMAL and lrec.shutdown is None
    lsock.Delete()


# ----------------------------------------------------------------------- addresses, options


def test_bind_none_reports_all_interfaces(mux: Mux, log: IInstanceLog) -> None:
    rec = Recorder()
    sock = tcp(mux, log)(rec)
    sock.Bind(None, 0)
    mux.run_until(lambda: bool(rec.events))
    assert rec.events[0][:2] == ("bind", "0.0.0.0") and rec.events[0][2] > 0
    assert sock.GetLocalAddress() == ("0.0.0.0", rec.events[0][2])
    sock.Delete()


@needs_ipv6
def test_bind_none_ipv6_reports_any(mux: Mux, log: IInstanceLog) -> None:
    rec = Recorder()
    sock = tcp(mux, log, True)(rec)
    sock.Bind(None, 0)
    mux.run_until(lambda: bool(rec.events))
    assert rec.events[0][:2] == ("bind", "::")
    assert raw(sock).family == socket.AF_INET6
    sock.Delete()


def test_bind_to_a_fixed_port_and_by_name(mux: Mux, log: IInstanceLog) -> None:
    port = free_port()
    rec = Recorder()
    sock = tcp(mux, log)(rec)
    sock.Bind("localhost", port)
    mux.run_until(lambda: bool(rec.events))
    assert rec.events == [("bind", "127.0.0.1", port)]
    sock.Delete()


@pytest.mark.parametrize("v6", [False, pytest.param(True, marks=needs_ipv6)])
def test_get_local_address(mux: Mux, log: IInstanceLog, v6: bool) -> None:
    rec = Recorder()
    fresh = tcp(mux, log, v6)(rec)
    assert fresh.GetLocalAddress() == ("", 0)
    fresh.Delete()
    lsock, lrec, ssock, _srec, csock, _crec = pair(mux, log, v6)
    host = "::1" if v6 else "127.0.0.1"
    assert lsock.GetLocalAddress() == (host, bound_port(lrec))
    assert ssock.GetLocalAddress() == (host, bound_port(lrec))
    caddr = csock.GetLocalAddress()
    assert caddr[0] == host and caddr == raw(csock).getsockname()[:2]
    assert raw(ssock).getpeername()[1] == caddr[1]
    delete_all(csock, ssock, lsock)
    with pytest.raises(SocketModeError):
        csock.GetLocalAddress()


def _tos(sock: ISocket) -> int:
    r = raw(sock)
    if r.family == socket.AF_INET6:
        return int(r.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS))
    return int(r.getsockopt(socket.IPPROTO_IP, socket.IP_TOS))


@pytest.mark.parametrize("v6", [False, pytest.param(True, marks=needs_ipv6)])
def test_set_qos(mux: Mux, log: IInstanceLog, v6: bool) -> None:
    lsock, _lrec, ssock, srec, csock, _crec = pair(mux, log, v6)
    assert _tos(csock) == 0 and _tos(ssock) == 0
    csock.SetQoS(QosTrafficType.QOS_VOICE)
    ssock.SetQoS(QosTrafficType.QOS_AUDIO_VIDEO)
    assert _tos(csock) == 46 << 2 and _tos(ssock) == 34 << 2
    csock.SetQoS(QosTrafficType.QOS_BEST_EFFORT)
    assert _tos(csock) == 0
    # the connection still carries data
    ssock.Recv(bytearray(3))
    csock.Send(b"qos")
    mux.run_until(lambda: srec.received == b"qos")
    delete_all(csock, ssock, lsock)


def test_set_qos_before_connect_and_on_the_listener(mux: Mux, log: IInstanceLog) -> None:
    """QoS set early applies once there is a socket: a client's before Connect, and a
    listener's to every connection it accepts."""
    prov = CreateTCPSocketProvider()
    lrec = Recorder("listener")
    accepted: list[ISocket] = []
    lrec.hooks["bind"] = lambda s, a, p: s.Listen()
    lrec.hooks["listen"] = lambda s, a, p: s.Accept(Recorder())
    lsock = prov.CreateSocket(mux, lrec, log)
    lsock.SetQoS(QosTrafficType.QOS_VOICE)
    lsock.Bind("127.0.0.1", 0)
    mux.run_until(lambda: bool(lrec.events))
    assert _tos(lsock) == 46 << 2
    crec = Recorder("client")
    csock = prov.CreateSocket(mux, crec, log)
    csock.SetQoS(QosTrafficType.QOS_AUDIO_VIDEO)
    csock.Connect(f"127.0.0.1:{bound_port(lrec)}")
    orig = lrec.hooks["listen"]

    def on_listen(s: ISocket, a: str, p: int) -> None:
        rec = Recorder()
        rec.hooks["accept"] = accepted.append
        s.Accept(rec)

    lrec.hooks["listen"] = on_listen
    del orig
    mux.run_until(lambda: bool(accepted) and "connect" in crec.names())
    assert _tos(csock) == 34 << 2
    assert _tos(accepted[0]) == 46 << 2
    delete_all(csock, accepted[0], lsock)


def test_queued_recvs_complete_in_order(mux: Mux, log: IInstanceLog) -> None:
    """Many Recvs of seeded random sizes, exact and partial, queued before any byte
    arrives: each completes in turn, and together they hold the stream in order."""
    rng = random.Random(7)
    prov = CreateTCPSocketProvider()
    lsock, lrec, accepted = listener(mux, log, prov, "127.0.0.1")
    data = rng.randbytes(300_000)
    with socket.create_connection(("127.0.0.1", bound_port(lrec)), timeout=5) as peer:
        mux.run_until(lambda: bool(accepted))
        ssock, srec = accepted[0]
        bufs = []
        total = 0
        while total < len(data):
            n = min(rng.choice([1, 10, 1000, 20000]), len(data) - total)
            partial = rng.random() < 0.3
            b = bytearray(n)
            bufs.append(b)
            srec.in_call = True
            ssock.Recv(b, n, partial)
            srec.in_call = False
            total += n
        assert srec.names() == ["accept"]
        done: list[Any] = []

        def on_recv(sock: ISocket, buf: Any, n: int) -> None:
            done.append(buf)
            # partial Recvs may complete short: once the queue ran dry, read the rest
            if len(done) >= len(bufs) and len(srec.received) < len(data):
                sock.Recv(bytearray(65536), None, True)

        srec.hooks["recv"] = on_recv
        peer.sendall(data)
        peer.shutdown(socket.SHUT_WR)
        mux.run_until(lambda: srec.shutdown is not None, what="all data and the end")
    assert all(a is b for a, b in zip(done, bufs, strict=False)) and len(done) >= len(bufs)
    assert hashlib.sha256(srec.received).digest() == hashlib.sha256(data).digest()
    assert srec.names()[-1] == "shutdown" and srec.shutdown is R.SOCKET_SHUTDOWN_BY_PEER
    assert not srec.violations
    delete_all(ssock, lsock)


# ----------------------------------------------------------------------- the library holds sockets


def test_sockets_the_app_dropped_keep_working(mux: Mux, log: IInstanceLog) -> None:
    prov = CreateTCPSocketProvider()
    lrec, crec = Recorder("listener"), Recorder("client")
    srecs: list[Recorder] = []

    def on_listen(s: ISocket, a: str, p: int) -> None:
        srecs.append(Recorder("server"))
        srecs[-1].hooks["accept"] = lambda sock: sock.Recv(bytearray(4))
        s.Accept(srecs[-1])

    lrec.hooks["bind"] = lambda s, a, p: s.Listen()
    lrec.hooks["listen"] = on_listen
    prov.CreateSocket(mux, lrec, log).Bind("127.0.0.1", 0)  # no reference kept
    del prov
    gc.collect()
    mux.run_until(lambda: bool(lrec.events))
    gc.collect()
    crec.hooks["connect"] = lambda s: s.Send(b"ping")
    CreateTCPSocketProvider().CreateSocket(mux, crec, log).Connect(f"127.0.0.1:{bound_port(lrec)}")
    gc.collect()
    mux.run_until(lambda: bool(srecs) and srecs[0].received == b"ping", what="data")
    gc.collect()
    assert crec.names() == ["connect", "send"]
    live = [s for s in LIVE if getattr(s, "_loop", None) is mux.loop]
    assert len(live) == 3
    for s in live:
        s.Delete()


def test_calls_before_the_loop_runs(mux: Mux, log: IInstanceLog) -> None:
    """Bind, Listen, Connect, Send, Recv and Shutdown, all called before the loop has run
    once, take effect when it runs."""
    prov = CreateTCPSocketProvider()
    port = free_port()
    lrec = Recorder("listener")
    srec = Recorder("server")
    lrec.hooks["listen"] = lambda s, a, p: s.Accept(srec)
    srec.hooks["accept"] = lambda s: s.Recv(bytearray(11))
    lsock = prov.CreateSocket(mux, lrec, log)
    lsock.Bind("127.0.0.1", port)
    lsock.Listen()  # while still binding: listens once bound
    crec = Recorder("client")
    csock = prov.CreateSocket(mux, crec, log)
    csock.Connect(f"127.0.0.1:{port}")
    csock.Send(b"before loop")
    buf = bytearray(5)
    csock.Recv(buf)
    csock.Shutdown()
    assert lrec.events == [] and crec.events == []
    mux.run_until(lambda: crec.shutdown is not None and srec.shutdown is not None)
    assert lrec.names() == ["bind", "listen"]
    assert crec.names() == ["connect", "send", "shutdown"]
    assert crec.shutdown is R.SOCKET_SHUTDOWN_NORMAL
    assert srec.received == b"before loop" and srec.shutdown is R.SOCKET_SHUTDOWN_BY_PEER
    delete_all(csock, lsock)


def test_calls_after_run_returned_take_effect_when_it_runs_again(
    mux: Mux, log: IInstanceLog
) -> None:
    rec = Recorder()
    sock = tcp(mux, log)(rec)
    mux.loop.call_soon(mux.Terminate)
    mux.Run()
    sock.Bind("127.0.0.1", 0)
    assert rec.events == []
    mux.run_until(lambda: bool(rec.events))
    assert rec.names() == ["bind"]
    sock.Delete()


def test_reuse_addr_binds_over_time_wait(mux: Mux, log: IInstanceLog) -> None:
    """A port whose last connection the server closed first sits in TIME_WAIT: a plain
    Bind gets SOCKET_ADDR_IN_USE, a Bind with reuseAddr gets the port. (Linux lets a
    socket bind over TIME_WAIT only when the old socket had SO_REUSEADDR too: the
    server restarting on its own port.)"""
    with socket.socket() as srv:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        port = srv.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
            conn, _ = srv.accept()
            conn.close()  # the server side closes first: its end goes to TIME_WAIT
            c.settimeout(5)
            assert c.recv(1) == b""
    expect_end(mux, tcp(mux, log), lambda s: s.Bind("127.0.0.1", port), R.SOCKET_ADDR_IN_USE)
    rec = Recorder()
    sock = tcp(mux, log)(rec)
    sock.Bind("127.0.0.1", port, reuseAddr=True)
    mux.run_until(lambda: bool(rec.events))
    assert rec.events == [("bind", "127.0.0.1", port)]
    sock.Listen()
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        mux.run_until(lambda: "listen" in rec.names())
    sock.Delete()


@needs_ipv6
def test_ipv6_bind_none_accepts_ipv4_peers(mux: Mux, log: IInstanceLog) -> None:
    """Bind(None) with useIPv6 is dual-stack; an IPv4 peer is reported as IPv4."""
    lsock, lrec, accepted = listener(mux, log, CreateTCPSocketProvider(), None, use_ipv6=True)
    assert lrec.events[0][1] == "::"
    port = bound_port(lrec)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as p4:
        mux.run_until(lambda: len(accepted) == 1)
        assert lrec.events[-1] == ("listen", "127.0.0.1", p4.getsockname()[1])
        assert accepted[0][0].GetLocalAddress() == ("127.0.0.1", port)
    with socket.create_connection(("::1", port), timeout=5) as p6:
        mux.run_until(lambda: len(accepted) == 2)
        assert lrec.events[-1] == ("listen", "::1", p6.getsockname()[1])
    for s, _ in accepted:
        s.Delete()
    lsock.Delete()
