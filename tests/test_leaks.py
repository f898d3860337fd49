"""Datagram sockets abandoned while they open leave nothing behind, on both loops.

A UDP or DTLS socket deleted while its transport is being made, or closed from the app's
callback that reports it open, must give back its descriptor and its transport at once,
not at `IIoMux.Close()` (uvloop frees neither a datagram transport whose creation was
cancelled nor one closed inside `connection_made`; see `_datagram`, "Making the
transport"). Each case runs `CYCLES` open-then-delete cycles, deleting after 0 to 3
loop iterations (before, at and after the transport's `connection_made`), then counts
descriptors (/proc/self/fd) and live datagram transports, and closes the mux with
warnings recorded: no `ResourceWarning`.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import warnings
from collections.abc import Callable, Iterator

import pytest
from kit.dtls import dtls_ctx
from kit.loop import LOOPS, Mux, Recorder, fd_count

from usocket_asyncio import (
    CreateTLSSocketProvider,
    CreateUDPSocketProvider,
    IInstanceLog,
    ISocket,
    ShutdownReason,
)

CYCLES = 200
"""Open-then-delete cycles per case."""

_TRANSPORT_TYPES = ("UDPTransport", "_SelectorDatagramTransport")


def live_transports() -> int:
    """Datagram transports still alive in this process (asyncio's and uvloop's)."""
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o).__name__ in _TRANSPORT_TYPES)


@pytest.fixture(params=LOOPS)
def mux(request: pytest.FixtureRequest) -> Iterator[Mux]:
    """A mux per test on both loops, which the test closes itself (`IIoMux.Close`)."""
    m = Mux(request.param)
    try:
        yield m
        assert not m.errors, f"the loop's exception handler was called: {m.errors}"
    finally:
        m.Close()


@pytest.fixture
def sink() -> Iterator[int]:
    """A loopback UDP port that takes datagrams and never answers (no ICMP either)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


class Kit:
    """The providers and the DTLS context of one case."""

    def __init__(self, mux: Mux, log: IInstanceLog) -> None:
        self.mux = mux
        self.log = log
        self.udp = CreateUDPSocketProvider()
        self.tls = CreateTLSSocketProvider(self.udp)
        self.ctx = dtls_ctx(self.tls, log, srtp=False, verify=False)

    def socket(self, kind: str, user: Recorder) -> ISocket:
        if kind == "udp":
            return self.udp.CreateSocket(self.mux, user, self.log)
        return self.tls.CreateSocket(self.mux, user, self.log, socketContext=self.ctx)


def _open(kit: Kit, case: str, user: Recorder, port: int) -> ISocket:
    kind, how = case.split("-")
    s = kit.socket(kind, user)
    if how == "bind":
        s.Bind("127.0.0.1", 0)
    elif how == "listen":
        s.Bind("127.0.0.1", 0)
        s.Listen()
    else:
        s.Connect(f"127.0.0.1:{port}")
    return s


def _cycles(mux: Mux, n: int, one: Callable[[int], ISocket]) -> None:
    """`n` cycles inside the running loop: open, run 0-3 loop iterations, delete."""

    async def run() -> None:
        for i in range(n):
            s = one(i)
            for _ in range(i % 4):
                await asyncio.sleep(0)
            s.Delete()

    mux.loop.run_until_complete(run())
    mux.run_ready()


def _close_quietly(mux: Mux) -> list[str]:
    """Close the mux; the warnings it raised (collected objects included)."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        mux.Close()
        gc.collect()
    return [f"{w.category.__name__}: {w.message}" for w in seen]


CASES = ["udp-bind", "udp-connect", "dtls-connect", "dtls-listen"]


@pytest.mark.parametrize("case", CASES)
def test_deleted_while_opening_leaves_nothing(
    mux: Mux, log: IInstanceLog, sink: int, case: str
) -> None:
    kit = Kit(mux, log)
    _cycles(mux, 8, lambda i: _open(kit, case, Recorder(), sink))  # caches, the default cert
    fds, transports = fd_count(), live_transports()
    users: list[Recorder] = []

    def one(i: int) -> ISocket:
        users.append(Recorder())
        return _open(kit, case, users[-1], sink)

    _cycles(mux, CYCLES, one)
    assert fd_count() - fds <= 0, f"{fd_count() - fds} descriptors left by {CYCLES} sockets"
    assert live_transports() - transports <= 0
    assert not [v for u in users for v in u.violations]
    assert _close_quietly(mux) == []


@pytest.mark.parametrize("case", ["udp-bind", "udp-connect", "dtls-listen"])
@pytest.mark.parametrize("act", ["Delete", "Shutdown"])
def test_closed_in_its_open_callback_leaves_nothing(
    mux: Mux, log: IInstanceLog, sink: int, case: str, act: str
) -> None:
    """Delete or Shutdown inside `SocketBindResult` / `SocketConnectComplete`."""
    kit = Kit(mux, log)
    users: list[Recorder] = []

    def opened(s: ISocket, *_: object) -> None:
        getattr(s, act)()

    def start(n: int) -> None:
        for _ in range(n):
            u = Recorder()
            u.hooks["bind"] = u.hooks["connect"] = opened
            users.append(u)
            _open(kit, case, u, sink)

    def ended() -> bool:
        if act == "Shutdown":
            return all(u.shutdown is not None for u in users)
        return all(u.events for u in users)

    start(8)
    mux.run_until(ended, what="the warm-up sockets")
    mux.run_ready()
    users.clear()
    fds, transports = fd_count(), live_transports()
    start(CYCLES)
    mux.run_until(ended, what="every socket opened and closed")
    mux.run_ready()
    want = ["bind"] if case != "udp-connect" else ["connect"]
    if act == "Shutdown":
        want.append("shutdown")
    assert {tuple(u.names()) for u in users} == {tuple(want)}
    if act == "Shutdown":
        assert {u.shutdown for u in users} == {ShutdownReason.SOCKET_SHUTDOWN_NORMAL}
    assert fd_count() - fds <= 0, f"{fd_count() - fds} descriptors left by {CYCLES} sockets"
    assert live_transports() - transports <= 0
    assert _close_quietly(mux) == []


def test_datagrams_read_while_opening_come_after_the_bind_result(
    mux: Mux, log: IInstanceLog
) -> None:
    """Datagrams that arrive once the port is bound, before the app heard of the bind
    (uvloop reads some before `SocketBindResult` can run), are held and go to the `Recv`s
    pending after it: never before it, none lost."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rec = Recorder()
    sock = CreateUDPSocketProvider().CreateSocket(mux, rec, log)
    for _ in range(8):
        sock.Recv(bytearray(64))
    sent: list[bytes] = []

    def spray() -> None:
        # one datagram per loop iteration from the moment the kernel has the port (the
        # library's own socket exists) until four were sent: loopback loses none
        if getattr(sock, "_sock", None) is not None or rec.events:
            sent.append(b"x%d;" % len(sent))
            sender.sendto(sent[-1], ("127.0.0.1", port))
        if len(sent) < 4:
            mux.loop.call_soon(spray)

    try:
        sock.Bind("127.0.0.1", port)
        mux.loop.call_soon(spray)
        mux.run_until(lambda: len(rec.events) >= 5, what="the bind and four datagrams")
        assert rec.names() == ["bind", "recvfrom", "recvfrom", "recvfrom", "recvfrom"], rec.events
        assert bytes(rec.received) == b"".join(sent) == b"x0;x1;x2;x3;"
        assert not rec.violations
    finally:
        sender.close()
        sock.Delete()
