"""UDP sockets (API.md item 10 with items 0-8): every test on asyncio and uvloop, loopback only."""

from __future__ import annotations

import ipaddress
import logging
import socket
import types
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
from kit.conformance import call
from kit.loop import Mux, Recorder, free_port, have_ipv6

from usocket_asyncio import (
    LOG_UDP,
    QOS_AUDIO_VIDEO,
    QOS_VOICE,
    CreateUDPSocketProvider,
    IInstanceLog,
    ISocket,
    ShutdownReason,
    SocketModeError,
    _datagram,
    _udp,
)
from usocket_asyncio._base import LIVE, State
from usocket_asyncio._udp import HOLD_BYTES, HOLD_DATAGRAMS, UDP_TRANSITIONS, UDPSocket

needs_ipv6 = pytest.mark.skipif(not have_ipv6(), reason="no IPv6 loopback")
V4 = ipaddress.IPv4Address("127.0.0.1")
V6 = ipaddress.IPv6Address("::1")


# --------------------------------------------------------------------------- helpers


def udp(mux: Mux, log: IInstanceLog, rec: Recorder, ipv6: bool = False) -> UDPSocket:
    return cast(UDPSocket, CreateUDPSocketProvider().CreateSocket(mux, rec, log, ipv6))


def bound(
    mux: Mux, log: IInstanceLog, addr: str | None = "127.0.0.1", ipv6: bool = False
) -> tuple[UDPSocket, Recorder, int]:
    rec = Recorder("udp")
    sock = udp(mux, log, rec, ipv6)
    call(rec, sock.Bind, addr, 0)
    mux.run_until(lambda: bool(rec.events), what="bind")
    assert rec.names() == ["bind"], rec.events
    return sock, rec, int(rec.events[0][2])


def connected(mux: Mux, log: IInstanceLog, address: str) -> tuple[UDPSocket, Recorder]:
    rec = Recorder("udp")
    sock = udp(mux, log, rec)
    call(rec, sock.Connect, address)
    mux.run_until(lambda: bool(rec.events), what="connect")
    assert rec.names() == ["connect"], rec.events
    return sock, rec


def _stdlib_udp(family: int, host: str) -> Iterator[socket.socket]:
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind((host, 0))
    s.settimeout(5)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def peer4() -> Iterator[socket.socket]:
    """A stdlib UDP socket on 127.0.0.1."""
    yield from _stdlib_udp(socket.AF_INET, "127.0.0.1")


@pytest.fixture
def peer6() -> Iterator[socket.socket]:
    """A stdlib UDP socket on ::1."""
    if not have_ipv6():
        pytest.skip("no IPv6 loopback")
    yield from _stdlib_udp(socket.AF_INET6, "::1")


def recv_results(rec: Recorder) -> list[tuple[Any, ...]]:
    return [e for e in rec.events if e[0] in ("recv", "recvfrom")]


def finish(sock: ISocket | UDPSocket, *recs: Recorder) -> None:
    try:
        sock.Delete()
    except SocketModeError:
        pass
    for rec in recs:
        assert not rec.violations, rec.violations


# --------------------------------------------------------------------------- the table


def test_transition_table_is_closed_and_udp_only() -> None:
    for src, dsts in UDP_TRANSITIONS.items():
        assert dsts <= set(UDP_TRANSITIONS), (src, dsts)
        assert State.DELETED in dsts or src is State.DELETED
    assert State.LISTENING not in UDP_TRANSITIONS
    assert State.ACCEPTING not in UDP_TRANSITIONS
    assert UDP_TRANSITIONS[State.BOUND] == {State.CLOSING, State.CLOSED, State.DELETED}
    assert State.CONNECTING not in UDP_TRANSITIONS[State.BOUND]


def test_illegal_move_raises(mux: Mux, log: IInstanceLog) -> None:
    rec = Recorder()
    sock = udp(mux, log, rec)
    with pytest.raises(SocketModeError, match="cannot become"):
        sock._set_state(State.CONNECTED)
    finish(sock, rec)


# --------------------------------------------------------------------------- bound mode


def test_sendto_and_recvfrom_ipv4(mux: Mux, log: IInstanceLog, peer4: socket.socket) -> None:
    sock, rec, port = bound(mux, log)
    assert sock.GetLocalAddress() == ("127.0.0.1", port)
    bufs = [bytearray(64) for _ in range(3)]
    for b in bufs:
        call(rec, sock.Recv, b)
    for i in range(3):
        peer4.sendto(b"dgram-%d" % i, ("127.0.0.1", port))
    mux.run_until(lambda: len(recv_results(rec)) == 3, what="3 datagrams")
    pport = peer4.getsockname()[1]
    assert recv_results(rec) == [("recvfrom", 7, V4, pport)] * 3
    assert [bytes(b[:7]) for b in bufs] == [b"dgram-0", b"dgram-1", b"dgram-2"]
    assert type(rec.events[1][2]) is ipaddress.IPv4Address

    out = bytearray(b"first")
    call(rec, sock.SendTo, out, None, "127.0.0.1", pport)
    out[:] = b"XXXXX"  # the caller may reuse its buffer at once
    call(rec, sock.SendTo, memoryview(b"second!!")[:6], None, V4, pport)
    call(rec, sock.SendTo, b"third-and-more", 5, "[127.0.0.1]".strip("[]"), pport)
    assert peer4.recvfrom(100) == (b"first", ("127.0.0.1", port))
    assert peer4.recvfrom(100) == (b"second", ("127.0.0.1", port))
    assert peer4.recvfrom(100) == (b"third", ("127.0.0.1", port))
    mux.run_until(lambda: rec.sends_done == 3, what="send results")
    finish(sock, rec)


@needs_ipv6
def test_ipv6_bind_none_reports_unspecified_and_is_dual_stack(
    mux: Mux, log: IInstanceLog, peer6: socket.socket, peer4: socket.socket
) -> None:
    rec = Recorder()
    sock = udp(mux, log, rec, ipv6=True)
    call(rec, sock.Bind, None, 0)
    mux.run_until(lambda: bool(rec.events), what="bind")
    assert rec.events[0][:2] == ("bind", "::")
    port = rec.events[0][2]
    bufs = [bytearray(32), bytearray(32)]
    for b in bufs:
        call(rec, sock.Recv, b)
    peer6.sendto(b"six", ("::1", port))
    mux.run_until(lambda: len(recv_results(rec)) == 1, what="v6 datagram")
    peer4.sendto(b"four", ("127.0.0.1", port))
    mux.run_until(lambda: len(recv_results(rec)) == 2, what="v4 datagram")
    (_, n6, a6, p6), (_, n4, a4, p4) = recv_results(rec)
    assert (n6, a6, p6) == (3, V6, peer6.getsockname()[1])
    assert type(a6) is ipaddress.IPv6Address
    assert (n4, a4, p4) == (4, V4, peer4.getsockname()[1])  # IPv4-mapped shown as IPv4
    call(rec, sock.SendTo, b"to-six", None, "::1", peer6.getsockname()[1])
    call(rec, sock.SendTo, b"to-four", None, V4, peer4.getsockname()[1])
    assert peer6.recvfrom(100)[0] == b"to-six"
    assert peer4.recvfrom(100)[0] == b"to-four"
    mux.run_until(lambda: rec.sends_done == 2, what="send results")
    finish(sock, rec)


@needs_ipv6
def test_ipv6_bound_to_loopback(mux: Mux, log: IInstanceLog, peer6: socket.socket) -> None:
    sock, rec, port = bound(mux, log, "::1")
    assert sock.GetLocalAddress() == ("::1", port)
    call(rec, sock.Recv, bytearray(10))
    peer6.sendto(b"hi", ("::1", port))
    mux.run_until(lambda: bool(recv_results(rec)), what="datagram")
    assert recv_results(rec) == [("recvfrom", 2, V6, peer6.getsockname()[1])]
    call(rec, sock.SendTo, b"back", None, "[::1]", peer6.getsockname()[1])
    assert peer6.recvfrom(10) == (b"back", ("::1", port, 0, 0))
    mux.run_until(lambda: rec.sends_done == 1)
    finish(sock, rec)


def test_empty_datagram_both_ways(mux: Mux, log: IInstanceLog, peer4: socket.socket) -> None:
    sock, rec, port = bound(mux, log)
    call(rec, sock.Recv, bytearray(8))
    peer4.sendto(b"", ("127.0.0.1", port))
    mux.run_until(lambda: bool(recv_results(rec)), what="empty datagram")
    assert recv_results(rec) == [("recvfrom", 0, V4, peer4.getsockname()[1])]
    call(rec, sock.SendTo, b"", None, V4, peer4.getsockname()[1])
    assert peer4.recvfrom(10) == (b"", ("127.0.0.1", port))
    mux.run_until(lambda: rec.sends_done == 1)
    finish(sock, rec)


# --------------------------------------------------------------------------- connected mode


def test_connected_send_and_recv(mux: Mux, log: IInstanceLog, peer4: socket.socket) -> None:
    pport = peer4.getsockname()[1]
    rec = Recorder()
    sock = udp(mux, log, rec)
    call(rec, sock.Connect, f"127.0.0.1:{pport}")
    buf = bytearray(b"early")
    call(rec, sock.Send, buf)  # cached until SocketConnectComplete
    buf[:] = b"#####"
    mux.run_until(lambda: rec.sends_done == 1, what="cached send")
    assert rec.names() == ["connect", "send"]
    data, src = peer4.recvfrom(100)
    assert data == b"early"
    assert sock.GetLocalAddress() == ("127.0.0.1", src[1])

    bufs = [bytearray(16), bytearray(16)]
    for b in bufs:
        call(rec, sock.Recv, b)
    # a stranger's datagram never reaches a connected socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        stranger.sendto(b"stranger", src)
    peer4.sendto(b"one", src)
    peer4.sendto(b"two!", src)
    mux.run_until(lambda: len(recv_results(rec)) == 2, what="2 datagrams")
    assert recv_results(rec) == [("recv", 3), ("recv", 4)]
    assert (bytes(bufs[0][:3]), bytes(bufs[1][:4])) == (b"one", b"two!")

    for i in range(5):
        call(rec, sock.Send, b"n%d" % i)
    assert [peer4.recvfrom(10)[0] for _ in range(5)] == [b"n%d" % i for i in range(5)]
    mux.run_until(lambda: rec.sends_done == 6)
    finish(sock, rec)


def test_connect_by_name(mux: Mux, log: IInstanceLog, peer4: socket.socket) -> None:
    sock, rec = connected(mux, log, f"localhost:{peer4.getsockname()[1]}")
    call(rec, sock.Send, b"named")
    assert peer4.recvfrom(10)[0] == b"named"
    mux.run_until(lambda: rec.sends_done == 1)
    finish(sock, rec)


@needs_ipv6
def test_connected_ipv6(mux: Mux, log: IInstanceLog, peer6: socket.socket) -> None:
    sock, rec = connected(mux, log, f"[::1]:{peer6.getsockname()[1]}")
    assert sock.GetLocalAddress()[0] == "::1"
    call(rec, sock.Recv, bytearray(10))
    call(rec, sock.Send, b"v6")
    data, src = peer6.recvfrom(10)
    assert data == b"v6"
    peer6.sendto(b"back", src)
    mux.run_until(lambda: bool(recv_results(rec)))
    assert recv_results(rec) == [("recv", 4)]
    finish(sock, rec)


def test_icmp_error_does_not_close_a_connected_socket(
    mux: Mux, log: IInstanceLog, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port(socket.AF_INET, socket.SOCK_DGRAM)
    sock, rec = connected(mux, log, f"127.0.0.1:{port}")
    call(rec, sock.Recv, bytearray(16))
    with caplog.at_level(logging.INFO, logger="usocket_asyncio"):
        call(rec, sock.Send, b"nobody home")
        # the port unreachable comes back; the next send or read reports it
        mux.run_until(lambda: "ConnectionRefused" in caplog.text, timeout=5, what="the ICMP error")
        call(rec, sock.Send, b"still nobody")
        mux.run_for(0.05)
    assert "carries on" in caplog.text
    assert rec.shutdown is None
    assert rec.names() == ["connect", "send", "send"]
    # the socket carries on: someone opens the port, and both ways work
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as late:
        late.bind(("127.0.0.1", port))
        late.settimeout(5)
        call(rec, sock.Send, b"hello now")
        data, src = late.recvfrom(100)
        assert data == b"hello now"
        late.sendto(b"welcome", src)
        mux.run_until(lambda: bool(recv_results(rec)), what="reply")
    assert recv_results(rec) == [("recv", 7)]
    mux.run_until(lambda: rec.sends_done == 3)
    assert rec.shutdown is None
    finish(sock, rec)


# --------------------------------------------------------------------------- receiving


def test_truncation_is_logged(
    mux: Mux, log: IInstanceLog, peer4: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    sock, rec, port = bound(mux, log)
    big = bytearray(100)
    with caplog.at_level(logging.INFO, logger="usocket_asyncio"):
        call(rec, sock.Recv, big, 4)  # only the first 4 bytes of the buffer
        call(rec, sock.Recv, bytearray(3))
        peer4.sendto(b"0123456789", ("127.0.0.1", port))
        peer4.sendto(b"abcdef", ("127.0.0.1", port))
        mux.run_until(lambda: len(recv_results(rec)) == 2, what="2 truncated datagrams")
    assert [e[1] for e in recv_results(rec)] == [4, 3]
    assert bytes(big[:5]) == b"0123\x00"
    assert "datagram of 10 bytes truncated to the Recv buffer's 4" in caplog.text
    assert "datagram of 6 bytes truncated to the Recv buffer's 3" in caplog.text
    finish(sock, rec)


def test_truncation_of_a_held_datagram(
    mux: Mux, log: IInstanceLog, peer4: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    sock, rec, port = bound(mux, log)
    peer4.sendto(b"held and long", ("127.0.0.1", port))
    mux.run_until(lambda: len(sock._q.held) == 1, what="held datagram")
    buf = bytearray(4)
    with caplog.at_level(logging.INFO, logger="usocket_asyncio"):
        call(rec, sock.Recv, buf, None, True)  # recvPartial makes no difference
        mux.run_until(lambda: bool(recv_results(rec)))
    assert recv_results(rec)[0][1] == 4 and buf == b"held"
    assert "truncated" in caplog.text
    finish(sock, rec)


def test_recvs_queue_in_order_and_held_datagrams_wait(
    mux: Mux, log: IInstanceLog, peer4: socket.socket
) -> None:
    sock, rec, port = bound(mux, log)
    # datagrams first: they wait, and each later Recv completes after the call
    for i in range(5):
        peer4.sendto(b"held-%d" % i, ("127.0.0.1", port))
    mux.run_until(lambda: len(sock._q.held) == 5, what="5 held")
    got: list[bytes] = []
    rec.hooks["recvfrom"] = lambda s, b, n, a, p: got.append(bytes(b[:n]))
    bufs = [bytearray(10) for _ in range(8)]
    for b in bufs:
        call(rec, sock.Recv, b)
    assert not recv_results(rec)  # never inside the call
    mux.run_until(lambda: len(got) == 5, what="held delivered")
    assert got == [b"held-%d" % i for i in range(5)]
    assert [b[:6] for b in bufs[:5]] == [bytearray(b"held-%d" % i) for i in range(5)]
    # then new datagrams fill the Recvs still queued, in order
    for i in range(3):
        peer4.sendto(b"new-%d" % i, ("127.0.0.1", port))
    mux.run_until(lambda: len(got) == 8, what="new delivered")
    assert got[5:] == [b"new-0", b"new-1", b"new-2"]
    assert [bytes(b[:5]) for b in bufs[5:]] == [b"new-0", b"new-1", b"new-2"]
    finish(sock, rec)


def test_recv_inside_the_callback(mux: Mux, log: IInstanceLog, peer4: socket.socket) -> None:
    sock, rec, port = bound(mux, log)
    buf = bytearray(8)
    got: list[bytes] = []

    def again(s: ISocket, b: Any, n: int, a: Any, p: int) -> None:
        got.append(bytes(b[:n]))
        if len(got) < 50:
            s.Recv(buf)

    rec.hooks["recvfrom"] = again
    for i in range(50):
        peer4.sendto(b"%d" % i, ("127.0.0.1", port))
    mux.run_until(lambda: len(sock._q.held) >= 10, what="some held")
    call(rec, sock.Recv, buf)
    mux.run_until(lambda: len(got) == 50, what="50 datagrams")
    assert got == [b"%d" % i for i in range(50)]
    finish(sock, rec)


def test_recv_cancel(mux: Mux, log: IInstanceLog, peer4: socket.socket) -> None:
    sock, rec, port = bound(mux, log)
    bufs = [bytearray(8) for _ in range(3)]
    for b in bufs:
        call(rec, sock.Recv, b)
    call(rec, sock.RecvCancel)
    call(rec, sock.RecvCancel)  # nothing pending: nothing more
    assert rec.names() == ["bind"]  # never inside the call
    mux.run_until(lambda: len(rec.events) == 4, what="cancellations")
    assert rec.events[1:] == [("canceled", b) for b in bufs]
    assert all(e[1] is b for e, b in zip(rec.events[1:], bufs, strict=True))
    # a datagram arriving after the cancel waits for the next Recv
    peer4.sendto(b"later", ("127.0.0.1", port))
    mux.run_until(lambda: len(sock._q.held) == 1)
    nb = bytearray(8)
    call(rec, sock.Recv, nb)
    mux.run_until(lambda: bool(recv_results(rec)))
    assert nb[:5] == b"later" and bufs == [bytearray(8)] * 3
    finish(sock, rec)


def test_flood_without_recv_stays_bounded(
    mux: Mux, log: IInstanceLog, peer4: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    sock, rec, port = bound(mux, log)
    dst = ("127.0.0.1", port)
    total, batch = 10_000, 100
    with caplog.at_level(logging.INFO, logger="usocket_asyncio"):
        for start in range(0, total, batch):
            for i in range(start, start + batch):
                peer4.sendto(i.to_bytes(4, "big") * 16, dst)
            mux.run_until(
                lambda s=start: len(sock._q.held) + sock.dropped == s + batch,  # type: ignore[misc]
                what="the batch to arrive",
                poll=0.001,  # the library's counters: no callback wakes this wait
            )
            assert len(sock._q.held) <= HOLD_DATAGRAMS
            assert sock._q.held_bytes <= HOLD_BYTES
    assert len(sock._q.held) == HOLD_DATAGRAMS
    assert sock.dropped == total - HOLD_DATAGRAMS
    drop_lines = [r for r in caplog.records if "dropping" in r.getMessage()]
    assert 1 <= len(drop_lines) <= total // _udp.DROP_LOG_EVERY + 1
    # the held ones are the oldest, delivered in order, then the socket is as new
    got: list[int] = []
    rec.hooks["recvfrom"] = lambda s, b, n, a, p: got.append(int.from_bytes(b[:4], "big"))
    with caplog.at_level(logging.INFO, logger="usocket_asyncio"):
        for _ in range(HOLD_DATAGRAMS + 1):
            call(rec, sock.Recv, bytearray(64))
        mux.run_until(lambda: len(got) == HOLD_DATAGRAMS, what="held delivered")
        assert "were dropped meanwhile" in caplog.text
    assert got == list(range(HOLD_DATAGRAMS))
    peer4.sendto(b"\x00\x00\xff\xff", dst)
    mux.run_until(lambda: len(got) == HOLD_DATAGRAMS + 1)
    assert got[-1] == 0xFFFF and sock._q.held_bytes == 0
    finish(sock, rec)


def test_flood_of_large_datagrams_is_bounded_by_bytes(
    mux: Mux, log: IInstanceLog, peer4: socket.socket
) -> None:
    sock, rec, port = bound(mux, log)
    size = 8000
    for start in range(0, 200, 5):  # small batches: the kernel's buffer drops nothing
        for _ in range(5):
            peer4.sendto(bytes(size), ("127.0.0.1", port))
        mux.run_until(
            lambda s=start: len(sock._q.held) + sock.dropped == s + 5,  # type: ignore[misc]
            poll=0.001,  # the library's counters: no callback wakes this wait
        )
    assert len(sock._q.held) == HOLD_BYTES // size
    assert sock._q.held_bytes <= HOLD_BYTES
    assert sock.dropped == 200 - HOLD_BYTES // size
    finish(sock, rec)


# --------------------------------------------------------------------------- sending


def test_send_results_one_per_call_in_order_never_inside(
    mux: Mux, log: IInstanceLog, peer4: socket.socket
) -> None:
    sock, rec, _port = bound(mux, log)
    pport = peer4.getsockname()[1]
    peer4.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    order: list[int] = []
    count = 0

    def on_send(s: ISocket) -> None:
        order.append(len(order))

    rec.hooks["send"] = on_send
    payload = bytearray(200)
    for i in range(200):
        payload[:4] = i.to_bytes(4, "big")
        call(rec, sock.SendTo, payload, 4 + (i % 150), "127.0.0.1", pport)
        count += 1
    assert rec.sends_done == 0  # none inside the calls
    mux.run_until(lambda: rec.sends_done == count, what="200 send results")
    mux.run_for(0.02)
    assert rec.sends_done == 200 and order == list(range(200))
    got = [peer4.recvfrom(300)[0] for _ in range(200)]
    assert [int.from_bytes(g[:4], "big") for g in got] == list(range(200))
    assert [len(g) for g in got] == [4 + (i % 150) for i in range(200)]
    finish(sock, rec)


def test_sendto_while_binding_is_cached(mux: Mux, log: IInstanceLog, peer4: socket.socket) -> None:
    rec = Recorder()
    sock = udp(mux, log, rec)
    call(rec, sock.Bind, "127.0.0.1", 0)
    buf = bytearray(b"cached")
    call(rec, sock.SendTo, buf, None, "127.0.0.1", peer4.getsockname()[1])
    buf[:] = b"XXXXXX"
    mux.run_until(lambda: rec.sends_done == 1)
    assert rec.names() == ["bind", "send"]
    assert peer4.recvfrom(10) == (b"cached", ("127.0.0.1", rec.events[0][2]))
    finish(sock, rec)


def test_callback_exception_goes_to_the_loop(
    mux: Mux, log: IInstanceLog, peer4: socket.socket
) -> None:
    sock, rec, port = bound(mux, log)

    def boom(*args: Any) -> None:
        raise RuntimeError("app bug")

    rec.hooks["recvfrom"] = boom
    rec.hooks["send"] = boom
    call(rec, sock.Recv, bytearray(8))
    call(rec, sock.Recv, bytearray(8))
    peer4.sendto(b"a", ("127.0.0.1", port))
    call(rec, sock.SendTo, b"x", None, V4, peer4.getsockname()[1])
    mux.run_until(lambda: len(mux.errors) == 2, what="2 errors")
    peer4.sendto(b"b", ("127.0.0.1", port))  # the socket carries on
    mux.run_until(lambda: len(recv_results(rec)) == 2)
    mux.run_until(lambda: len(mux.errors) == 3, what="3 errors")
    errs = mux.take_errors()
    assert all(isinstance(e["exception"], RuntimeError) for e in errs)
    assert rec.shutdown is None
    finish(sock, rec)


# --------------------------------------------------------------------------- the end


def test_shutdown_flushes_then_reports_once(
    mux: Mux, log: IInstanceLog, peer4: socket.socket
) -> None:
    sock, rec, port = bound(mux, log)
    call(rec, sock.Recv, bytearray(8))
    for i in range(10):
        call(rec, sock.SendTo, b"bye%d" % i, None, V4, peer4.getsockname()[1])
    call(rec, sock.Shutdown)
    call(rec, sock.SendTo, b"ignored", None, V4, peer4.getsockname()[1])
    call(rec, sock.Recv, bytearray(8))  # ignored
    call(rec, sock.Shutdown)  # a second Shutdown changes nothing
    mux.run_until(lambda: rec.shutdown is not None, what="shutdown")
    assert rec.names() == ["bind"] + ["send"] * 10 + ["shutdown"]
    assert rec.shutdown is ShutdownReason.SOCKET_SHUTDOWN_NORMAL
    assert [peer4.recvfrom(10)[0] for _ in range(10)] == [b"bye%d" % i for i in range(10)]
    peer4.sendto(b"too late", ("127.0.0.1", port))
    mux.run_ready()  # the datagram and the queued callbacks are due now
    assert rec.names()[-1] == "shutdown" and not rec.violations
    peer4.settimeout(0.05)
    with pytest.raises(TimeoutError):
        peer4.recvfrom(10)  # the ignored SendTo never went out
    finish(sock, rec)


def test_shutdown_before_bind_completes(mux: Mux, log: IInstanceLog) -> None:
    rec = Recorder()
    sock = udp(mux, log, rec)
    call(rec, sock.Bind, "127.0.0.1", 0)
    call(rec, sock.Shutdown)
    mux.run_until(lambda: rec.shutdown is not None)
    assert rec.names() == ["bind", "shutdown"]
    idle = Recorder()
    s2 = udp(mux, log, idle)
    call(idle, s2.Shutdown)
    mux.run_until(lambda: idle.shutdown is not None)
    assert idle.events == [("shutdown", ShutdownReason.SOCKET_SHUTDOWN_NORMAL)]
    finish(sock, rec)
    finish(s2, idle)


def test_nothing_after_delete(mux: Mux, log: IInstanceLog, peer4: socket.socket) -> None:
    sock, rec, port = bound(mux, log)
    call(rec, sock.Recv, bytearray(8))
    call(rec, sock.SendTo, b"x", None, V4, peer4.getsockname()[1])
    call(rec, sock.Recv, bytearray(8))
    call(rec, sock.RecvCancel)
    call(rec, sock.Delete)
    peer4.sendto(b"nobody", ("127.0.0.1", port))
    mux.run_ready()  # the datagram and the queued callbacks are due now
    assert rec.names() == ["bind"]
    calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = [
        (sock.Send, (b"x",)),
        (sock.SendTo, (b"x", None, V4, 1)),
        (sock.Recv, (bytearray(1),)),
        (sock.RecvCancel, ()),
        (sock.Shutdown, ()),
        (sock.Delete, ()),
        (sock.GetLocalAddress, ()),
        (sock.SetQoS, (QOS_VOICE,)),
        (sock.Bind, ()),
    ]
    for fn, args in calls:
        with pytest.raises(SocketModeError, match="Delete"):
            fn(*args)
    assert sock not in LIVE
    # deleting while the bind is in progress: no callback either
    r2 = Recorder()
    s2 = udp(mux, log, r2)
    call(r2, s2.Bind, "127.0.0.1", 0)
    call(r2, s2.Delete)
    r3 = Recorder()
    s3 = udp(mux, log, r3)
    call(r3, s3.Connect, f"127.0.0.1:{peer4.getsockname()[1]}")
    call(r3, s3.Send, b"cached")
    call(r3, s3.Delete)
    mux.run_ready()  # the datagram and the queued callbacks are due now
    assert r2.events == [] and r3.events == [] and not rec.violations


def test_delete_inside_a_callback_stops_the_rest(
    mux: Mux, log: IInstanceLog, peer4: socket.socket
) -> None:
    sock, rec, port = bound(mux, log)
    for _ in range(3):
        peer4.sendto(b"d", ("127.0.0.1", port))
    mux.run_until(lambda: len(sock._q.held) == 3)
    rec.hooks["recvfrom"] = lambda s, *a: s.Delete()
    # the results come in the order of the calls: the send's, then the first datagram's
    # (which deletes the socket), and nothing of the rest, the last send's included
    call(rec, sock.SendTo, b"x", None, V4, peer4.getsockname()[1])
    for _ in range(3):
        call(rec, sock.Recv, bytearray(4))
    call(rec, sock.SendTo, b"y", None, V4, peer4.getsockname()[1])
    mux.run_ready()  # the datagram and the queued callbacks are due now
    assert rec.names() == ["bind", "send", "recvfrom"]


# --------------------------------------------------------------------------- failures


@pytest.mark.parametrize(
    ("addr", "port"),
    [("999.1.1.1", 0), ("127.0.0.1", 70000), ("[::1", 0), ("not an address", 0), ("1.2.3.4:x", 0)],
)
def test_bind_address_invalid(mux: Mux, log: IInstanceLog, addr: str, port: int) -> None:
    rec = Recorder()
    sock = udp(mux, log, rec)
    call(rec, sock.Bind, addr, port)
    mux.run_until(lambda: rec.shutdown is not None)
    assert rec.events == [("shutdown", ShutdownReason.SOCKET_ADDRESS_INVALID)]
    finish(sock, rec)


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.1:99999", "[::1]", "bad name:5", ""])
def test_connect_address_invalid(mux: Mux, log: IInstanceLog, address: str) -> None:
    rec = Recorder()
    sock = udp(mux, log, rec)
    call(rec, sock.Connect, address)
    mux.run_until(lambda: rec.shutdown is not None)
    assert rec.events == [("shutdown", ShutdownReason.SOCKET_ADDRESS_INVALID)]
    finish(sock, rec)


def test_addr_in_use(mux: Mux, log: IInstanceLog, peer4: socket.socket) -> None:
    rec = Recorder()
    sock = udp(mux, log, rec)
    call(rec, sock.Bind, "127.0.0.1", peer4.getsockname()[1])
    mux.run_until(lambda: rec.shutdown is not None)
    assert rec.events == [("shutdown", ShutdownReason.SOCKET_ADDR_IN_USE)]
    finish(sock, rec)


def test_reuse_addr_binds_twice(mux: Mux, log: IInstanceLog) -> None:
    a, ra, port = bound(mux, log)
    rb = Recorder()
    b = udp(mux, log, rb)
    call(rb, b.Bind, "127.0.0.1", port, True)
    mux.run_until(lambda: bool(rb.events))
    assert rb.names() == ["shutdown"]  # the first one did not allow sharing
    rc, rd = Recorder(), Recorder()
    c, d = udp(mux, log, rc), udp(mux, log, rd)
    call(rc, c.Bind, "127.0.0.1", 0, True)
    mux.run_until(lambda: bool(rc.events))
    call(rd, d.Bind, "127.0.0.1", rc.events[0][2], True)
    mux.run_until(lambda: bool(rd.events))
    assert rd.events == [("bind", "127.0.0.1", rc.events[0][2])]
    for s, r in ((a, ra), (b, rb), (c, rc), (d, rd)):
        finish(s, r)


@pytest.mark.pure_only
def test_bind_failed_and_open_failed(
    mux: Mux, log: IInstanceLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    class NoBind(socket.socket):
        def bind(self, addr: Any) -> None:
            raise PermissionError(13, "Permission denied")

    # patch the module as _datagram (which opens the UDP sockets) sees it, not the
    # socket module the loops use too
    fake = types.ModuleType("socket")
    fake.__dict__.update(socket.__dict__)
    fake.socket = NoBind  # type: ignore[attr-defined]
    monkeypatch.setattr(_datagram, "socket", fake)
    rec = Recorder()
    sock = udp(mux, log, rec)
    call(rec, sock.Bind, "127.0.0.1", 0)
    mux.run_until(lambda: rec.shutdown is not None)
    assert rec.events == [("shutdown", ShutdownReason.SOCKET_BIND_FAILED)]

    def no_socket(*a: Any, **k: Any) -> socket.socket:
        raise OSError(24, "Too many open files")

    fake.socket = no_socket  # type: ignore[attr-defined]
    r2, r3 = Recorder(), Recorder()
    s2, s3 = udp(mux, log, r2), udp(mux, log, r3)
    call(r2, s2.Bind, None, 0)
    call(r3, s3.Connect, "127.0.0.1:9")
    mux.run_until(lambda: r2.shutdown is not None and r3.shutdown is not None)
    assert r2.events == [("shutdown", ShutdownReason.SOCKET_OPEN_FAILED)]
    assert r3.events == [("shutdown", ShutdownReason.SOCKET_OPEN_FAILED)]
    for s, r in ((sock, rec), (s2, r2), (s3, r3)):
        finish(s, r)


def test_sendto_bad_destinations_raise(mux: Mux, log: IInstanceLog) -> None:
    sock, rec, _port = bound(mux, log)
    for dst, dport, match in [
        ("no.such.literal", 5, "no IP address"),
        ("127.0.0.1:5", 5, "no IP address"),
        ("", 5, "no IP address"),
        (None, 5, "no IP address"),
        ("127.0.0.1", 0, "dstPort"),
        ("127.0.0.1", 65536, "dstPort"),
        ("::1", 5, "IPv6 but the socket is IPv4"),
        (V6, 5, "IPv6 but the socket is IPv4"),
    ]:
        with pytest.raises(ValueError, match=match):
            call(rec, sock.SendTo, b"x", None, dst, dport)
    with pytest.raises(ValueError, match="len=9"):
        call(rec, sock.SendTo, b"x", 9, V4, 5)
    with pytest.raises(ValueError, match="read-only"):
        call(rec, sock.Recv, b"immutable")
    with pytest.raises(ValueError, match="len=0"):
        call(rec, sock.Recv, bytearray(4), 0)
    mux.run_for(0.02)
    assert rec.names() == ["bind"]  # the socket carries on, nothing was sent
    finish(sock, rec)


def test_wrong_mode_calls_raise(mux: Mux, log: IInstanceLog, peer4: socket.socket) -> None:
    b, rb, _ = bound(mux, log)
    c, rc = connected(mux, log, f"127.0.0.1:{peer4.getsockname()[1]}")
    idle = udp(mux, log, Recorder())
    cases: list[tuple[Any, tuple[Any, ...], str]] = [
        (b.Send, (b"x",), "use SendTo"),
        (b.Connect, ("127.0.0.1:5",), "first of Bind or Connect fixes the mode"),
        (b.Bind, ("127.0.0.1", 0), "once per socket"),
        (b.Listen, (), "UDP has no connections"),
        (b.Accept, (None,), "only DTLS sockets"),
        (c.SendTo, (b"x", None, V4, 5), "use Send"),
        (c.Bind, (None, 0), "first of Bind or Connect fixes the mode"),
        (c.Connect, ("127.0.0.1:5",), "once per socket"),
        (idle.SendTo, (b"x", None, V4, 5), "call Bind first"),
        (idle.Send, (b"x",), "Send before Connect"),
    ]
    for fn, args, match in cases:
        with pytest.raises(SocketModeError, match=match):
            fn(*args)
    mux.run_for(0.02)
    assert rb.names() == ["bind"] and rc.names() == ["connect"]
    for s, r in ((b, rb), (c, rc)):
        finish(s, r)
    idle.Delete()


# --------------------------------------------------------------------------- the rest


def tos_of(sock: UDPSocket) -> int:
    raw = sock._sock
    assert raw is not None
    if raw.family == socket.AF_INET6:
        return raw.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS)
    return raw.getsockopt(socket.IPPROTO_IP, socket.IP_TOS)


def test_set_qos(mux: Mux, log: IInstanceLog, peer4: socket.socket) -> None:
    rec = Recorder()
    early = udp(mux, log, rec)
    early.SetQoS(QOS_VOICE)  # before Bind: applied once open
    call(rec, early.Bind, "127.0.0.1", 0)
    mux.run_until(lambda: bool(rec.events))
    assert tos_of(early) == 46 << 2
    early.SetQoS(QOS_AUDIO_VIDEO)
    assert tos_of(early) == 34 << 2
    c, rc = connected(mux, log, f"127.0.0.1:{peer4.getsockname()[1]}")
    c.SetQoS(QOS_VOICE)
    assert tos_of(c) == 46 << 2
    finish(early, rec)
    finish(c, rc)


@needs_ipv6
def test_set_qos_ipv6(mux: Mux, log: IInstanceLog) -> None:
    sock, rec, _ = bound(mux, log, "::1")
    sock.SetQoS(QOS_VOICE)
    assert tos_of(sock) == 46 << 2
    finish(sock, rec)


def test_set_user_and_library_holds_the_socket(
    mux: Mux, log: IInstanceLog, peer4: socket.socket
) -> None:
    first, second = Recorder("first"), Recorder("second")
    sock = udp(mux, log, first)
    call(first, sock.Bind, "127.0.0.1", 0)
    port_holder: list[int] = []
    first.hooks["bind"] = lambda s, a, p: port_holder.append(p)
    del sock  # the library holds it (item 0)
    mux.run_until(lambda: bool(port_holder))
    live = [s for s in LIVE if isinstance(s, UDPSocket) and s._user is first]
    assert len(live) == 1
    sock2 = live[0]
    sock2.SetUser(second)
    call(second, sock2.Recv, bytearray(4))
    peer4.sendto(b"new", ("127.0.0.1", port_holder[0]))
    mux.run_until(lambda: bool(second.events))
    assert second.names() == ["recvfrom"] and first.names() == ["bind"]
    finish(sock2, first, second)


def test_calls_before_the_loop_runs(log: IInstanceLog, peer4: socket.socket) -> None:
    for kind in ("asyncio", "uvloop"):
        mux = Mux(kind)
        try:
            rec = Recorder()
            sock = udp(mux, log, rec)
            sock.Connect(f"127.0.0.1:{peer4.getsockname()[1]}")
            sock.Send(b"before run")
            mux.run_until(lambda r=rec: r.sends_done == 1)  # type: ignore[misc]
            assert peer4.recvfrom(20)[0] == b"before run"
            sock.Delete()
            mux.run_for(0.01)  # the transport closes on the loop
            assert not mux.errors
        finally:
            mux.loop.close()


def test_no_udp_log_lines_without_the_flag(
    mux: Mux, peer4: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    quiet = IInstanceLog(0)
    with caplog.at_level(logging.INFO, logger="usocket_asyncio"):
        sock, rec, port = bound(mux, quiet)
        call(rec, sock.Recv, bytearray(2))
        peer4.sendto(b"long", ("127.0.0.1", port))
        mux.run_until(lambda: bool(recv_results(rec)))
    assert caplog.text == ""
    assert LOG_UDP  # the flag the socket logs under
    finish(sock, rec)
