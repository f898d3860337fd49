"""The per-request shortcuts keep the contract: results that fall due together all
arrive, a reused Recv buffer is filled afresh, Send copies what the caller may reuse,
a UDP reply goes to the sender, and accepted TCP connections send small writes at once."""

from __future__ import annotations

import hashlib
import random
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from kit.conformance import call
from kit.loop import Mux, Recorder

from usocket_asyncio import (
    CreateTCPSocketProvider,
    CreateUDPSocketProvider,
    IInstanceLog,
    ISocket,
    ShutdownReason,
)


@pytest.fixture
def peer_listener() -> Iterator[socket.socket]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    s.settimeout(5)
    yield s
    s.close()


def connected(
    mux: Mux, log: IInstanceLog, listener: socket.socket
) -> tuple[ISocket, Recorder, socket.socket]:
    rec = Recorder()
    sock = CreateTCPSocketProvider().CreateSocket(mux, rec, log)
    sock.Connect(f"127.0.0.1:{listener.getsockname()[1]}")
    mux.run_until(lambda: "connect" in rec.names(), what="connect")
    peer, _ = listener.accept()
    peer.settimeout(5)
    return sock, rec, peer


@pytest.mark.parametrize("order", ["send-first", "recv-first"])
def test_send_and_recv_due_together_both_arrive(
    mux: Mux, log: IInstanceLog, peer_listener: socket.socket, order: str
) -> None:
    sock, rec, peer = connected(mux, log, peer_listener)
    peer.sendall(b"held bytes")
    mux.run_for(0.05)  # no Recv pending: the bytes are held
    buf = bytearray(64)
    if order == "send-first":
        call(rec, sock.Send, b"ping")
        call(rec, sock.Recv, buf, None, True)
    else:
        call(rec, sock.Recv, buf, None, True)
        call(rec, sock.Send, b"ping")
    mux.run_until(lambda: len(rec.events) >= 3, timeout=5, what="both results")
    assert sorted(rec.names()) == ["connect", "recv", "send"]
    assert bytes(rec.received) == b"held bytes"
    assert peer.recv(16) == b"ping"
    assert not rec.violations
    peer.close()
    call(rec, sock.Delete)


def test_reused_recv_buffer_and_reused_send_buffer(
    mux: Mux, log: IInstanceLog, peer_listener: socket.socket
) -> None:
    """An echo client that reuses one Recv buffer and one Send buffer: every byte
    arrives intact in order, each way."""
    sock, rec, peer = connected(mux, log, peer_listener)
    rnd = random.Random(7)
    chunks = [rnd.randbytes(rnd.randint(1, 3000)) for _ in range(60)]
    rbuf = bytearray(4096)
    sbuf = bytearray(4096)
    sent = hashlib.sha256()
    rec.hooks["recv"] = lambda s, b, n: s.Recv(rbuf, None, True)
    call(rec, sock.Recv, rbuf, None, True)
    for c in chunks:
        sbuf[: len(c)] = c
        call(rec, sock.Send, sbuf, len(c))
        sbuf[:16] = b"\xee" * 16  # the caller reuses its buffer at once
        sent.update(c)
        peer.sendall(c)
    total = sum(len(c) for c in chunks)
    mux.run_until(lambda: len(rec.received) >= total, timeout=5, what="all bytes back")
    got = bytearray()
    peer.settimeout(5)
    while len(got) < total:
        got += peer.recv(65536)
    assert hashlib.sha256(rec.received).digest() == sent.digest()
    assert hashlib.sha256(got).digest() == sent.digest()
    assert rec.sends_done == len(chunks)
    assert not rec.violations
    peer.close()
    mux.run_until(lambda: rec.shutdown is not None, timeout=5, what="shutdown")
    assert rec.shutdown is ShutdownReason.SOCKET_SHUTDOWN_BY_PEER
    assert rec.names().count("shutdown") == 1


def test_recv_with_a_shorter_len_after_a_whole_buffer(
    mux: Mux, log: IInstanceLog, peer_listener: socket.socket
) -> None:
    sock, rec, peer = connected(mux, log, peer_listener)
    buf = bytearray(8)
    call(rec, sock.Recv, buf)  # whole buffer, exact
    peer.sendall(b"12345678")
    mux.run_until(lambda: "recv" in rec.names(), what="first recv")
    call(rec, sock.Recv, buf, 3)  # same buffer, shorter exact length
    peer.sendall(b"abcdef")
    mux.run_until(lambda: rec.names().count("recv") == 2, what="second recv")
    assert rec.events[-1] == ("recv", 3)
    assert bytes(rec.received) == b"12345678abc"
    with pytest.raises(ValueError):
        sock.Recv(buf, 9)
    with pytest.raises(ValueError):
        sock.Recv(bytearray(0))
    with pytest.raises(ValueError):
        sock.Send(bytearray(4), 5)
    peer.close()
    call(rec, sock.Delete)
    assert not rec.violations


def test_accepted_tcp_connections_disable_nagle(mux: Mux, log: IInstanceLog) -> None:
    accepted: list[ISocket] = []
    server = Recorder("server")
    conn = Recorder("conn")
    server.hooks["listen"] = lambda s, a, p: s.Accept(conn)
    conn.hooks["accept"] = accepted.append
    lst = CreateTCPSocketProvider().CreateSocket(mux, server, log)
    lst.Bind("127.0.0.1", 0)
    lst.Listen()
    mux.run_until(lambda: "bind" in server.names(), what="bind")
    port = server.events[0][2]
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        mux.run_until(lambda: bool(accepted), what="accept")
        raw = accepted[0]._tr.get_extra_info("socket")  # type: ignore[attr-defined]
        assert raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        accepted[0].Delete()
    lst.Delete()


def test_udp_reply_goes_to_each_sender(mux: Mux, log: IInstanceLog) -> None:
    """A bound echo socket answering several peers in turn: each gets its own data."""
    rec = Recorder()
    sock = CreateUDPSocketProvider().CreateSocket(mux, rec, log)
    buf = bytearray(2048)

    def echo(s: ISocket, b: Any, n: int, ip: Any, port: int) -> None:
        s.SendTo(b, n, ip, port)
        s.Recv(buf)

    rec.hooks["recvfrom"] = echo
    sock.Bind("127.0.0.1", 0)
    mux.run_until(lambda: "bind" in rec.names(), what="bind")
    port = rec.events[0][2]
    call(rec, sock.Recv, buf)
    peers = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(4)]
    try:
        for p in peers:
            p.bind(("127.0.0.1", 0))
            p.settimeout(5)
        for rnd in range(5):
            for i, p in enumerate(peers):
                p.sendto(bytes([i, rnd]) * 100, ("127.0.0.1", port))
        want = 5 * len(peers)
        mux.run_until(lambda: rec.names().count("recvfrom") >= want, timeout=5, what="echoes")
        mux.run_until(lambda: rec.sends_done >= want, timeout=5, what="send results")
        for i, p in enumerate(peers):
            got = []
            for _ in range(5):
                got.append(p.recv(4096))
            assert got == [bytes([i, rnd]) * 100 for rnd in range(5)]
    finally:
        for p in peers:
            p.close()
    assert not rec.violations
    sock.Delete()


def test_the_concrete_stream_kinds_own_their_per_request_methods_when_compiled(
    mux: Mux, log: IInstanceLog, peer_listener: socket.socket
) -> None:
    """Compiled, TCP and local sockets define the per-request methods themselves (the
    engine's, called directly), so no call on them walks the class's bases for its type
    check; in the pure build they do not (that would be a frame more per call), and the
    engine's are what runs. Either way a round trip through them keeps every byte."""
    from types import FunctionType

    from usocket_asyncio._local import LocalSocket
    from usocket_asyncio._stream import HOT_PATH, StreamSocket
    from usocket_asyncio._tcp import TCPSocket

    compiled = type(vars(StreamSocket)["Send"]) is not FunctionType
    for cls in (TCPSocket, LocalSocket):
        for name in HOT_PATH:
            assert (name in vars(cls)) == compiled, (cls.__name__, name, compiled)
            if not compiled:
                assert getattr(cls, name) is getattr(StreamSocket, name)
    sock, rec, peer = connected(mux, log, peer_listener)
    kind: type = type(sock)
    assert kind is TCPSocket
    data = random.Random(3).randbytes(5000)
    got = bytearray()
    buf = bytearray(1000)

    def on_recv(s: Any, b: Any, n: int) -> None:
        got.extend(b[:n])
        s.Recv(buf, None, True)

    rec.hooks["recv"] = on_recv
    call(rec, sock.Recv, buf, None, True)
    peer.sendall(data)
    mux.run_until(lambda: len(got) == len(data), what="every byte")
    call(rec, sock.Send, got, 4000)
    back = bytearray()
    peer.setblocking(False)

    def take() -> bool:
        try:
            back.extend(peer.recv(65536))
        except BlockingIOError:
            pass
        return len(back) >= 4000

    mux.run_until(take, what="the echo")
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert bytes(back) == data[:4000]
    peer.close()
    sock.Delete()
