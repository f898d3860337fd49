"""Hostile input: peers that speak garbage or break TLS, odd datagrams, malformed
addresses and certificate buffers (Hypothesis), and random call sequences on real
loopback sockets (a Hypothesis state machine).

Every socket test runs on asyncio and uvloop. The Hypothesis tests are derandomized
with bounded example counts (`EXAMPLES`), so each run tries the same inputs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
from collections.abc import Iterator
from typing import Any

import pytest
from conformance import Pump, call, connect, listen, sha
from conftest import Mux, Recorder, fd_count, have_ipv6
from test_tls_conformance import tls_kind

import usocket_asyncio._tls as tls_mod
from usocket_asyncio import (
    CreateUDPSocketProvider,
    IInstanceLog,
    ShutdownReason,
)

R = ShutdownReason

EXAMPLES = {"addresses": 120, "certificates": 250, "stateful": 40, "stateful_steps": 30}
"""Hypothesis example counts (per loop for the socket tests)."""


class Lines(logging.Handler):
    """Collects a logger's messages."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def logged() -> Iterator[tuple[IInstanceLog, Lines]]:
    """A log with every flag, whose lines the test can read."""
    logger = logging.getLogger(f"hostile.{id(object())}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    h = Lines()
    logger.addHandler(h)
    yield IInstanceLog(0xFFFFFFFF, logger), h
    logger.removeHandler(h)


def ended_once(rec: Recorder, *reasons: ShutdownReason) -> None:
    assert not rec.violations, rec.violations
    assert rec.names().count("shutdown") == 1 and rec.names()[-1] == "shutdown", rec.events
    assert rec.shutdown in reasons, (rec.shutdown, reasons)


# --------------------------------------------------------------------------- TLS peers


class TLSServer:
    """A library TLS listener (test CA certificate) that records every accepted socket,
    also the ones whose handshake fails."""

    def __init__(self, mux: Mux, log: IInstanceLog, ca: Any, version: str, tmp: str) -> None:
        self.kind = tls_kind(ca, version)
        self.recs: list[Recorder] = []

        def factory() -> Recorder:
            rec = Recorder(f"accepted{len(self.recs)}")
            self.recs.append(rec)
            return rec

        self.listener, self.lrec, self.accepted, self.address = listen(
            mux, log, self.kind, tmp, factory
        )
        self.port = int(self.address.rpartition(":")[2])


class RawTLS:
    """A TLS client driven by hand (memory BIOs over a raw socket), so the test can send
    exactly the records it wants: half a record, data after close_notify."""

    def __init__(self, mux: Mux, ca: Any, port: int, version: str) -> None:
        self.loop = mux.loop
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        ctx.maximum_version = ssl.TLSVersion["TLSv1_3" if version == "tls13" else "TLSv1_2"]
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_hostname="localhost")
        self.sock = socket.socket()
        self.sock.setblocking(False)
        self.loop.run_until_complete(
            asyncio.wait_for(self.loop.sock_connect(self.sock, ("127.0.0.1", port)), 5)
        )

    async def _handshake(self) -> None:
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self.loop.sock_sendall(self.sock, self.out.read())
                data = await self.loop.sock_recv(self.sock, 65536)
                if not data:
                    raise ConnectionError("the server closed during the handshake") from None
                self.inc.write(data)
        await self.loop.sock_sendall(self.sock, self.out.read())

    def handshake(self) -> None:
        self.loop.run_until_complete(asyncio.wait_for(self._handshake(), 5))

    def record(self, data: bytes) -> bytes:
        """`data` as TLS records (not sent)."""
        self.obj.write(data)
        return self.out.read()

    def close_notify(self) -> bytes:
        """Our close_notify alert (not sent)."""
        with contextlib.suppress(ssl.SSLWantReadError):
            self.obj.unwrap()
        return self.out.read()

    def send(self, data: bytes) -> None:
        self.loop.run_until_complete(asyncio.wait_for(self.loop.sock_sendall(self.sock, data), 5))

    def close(self) -> None:
        self.sock.close()


VERSIONS = ["tls12", "tls13"]


def _garbage(kind: str, rng: random.Random) -> bytes:
    if kind == "random":
        return rng.randbytes(3000)
    if kind == "record_header":  # a handshake record header, then noise
        return b"\x16\x03\x01\x01\x00" + rng.randbytes(256)
    if kind == "huge_length":  # a record that claims the maximum length and more
        return b"\x16\x03\x03\xff\xff" + rng.randbytes(2000)
    if kind == "sslv2":  # an SSLv2-style hello
        return b"\x80\x2e\x01\x00\x02\x00\x15\x00\x00\x00\x10" + rng.randbytes(0x2E)
    if kind == "alert":  # a fatal alert instead of a hello
        return b"\x15\x03\x03\x00\x02\x02\x28"
    return b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + rng.randbytes(100)


@pytest.mark.parametrize("version", VERSIONS)
def test_garbage_instead_of_client_hello(
    mux: Mux, logged: tuple[IInstanceLog, Lines], ca: Any, version: str, short_tmp: str
) -> None:
    """Twelve raw clients send garbage of six shapes instead of a ClientHello: each
    accepted socket ends with SOCKET_TLS_HANDSHAKE_FAILED (never SocketAcceptComplete),
    the OpenSSL reason is logged under LOG_TLS, no descriptor is left over, and the
    listener goes on serving a real client."""
    log, lines = logged
    srv = TLSServer(mux, log, ca, version, short_tmp)
    rng = random.Random(81)
    shapes = ["random", "record_header", "huge_length", "sslv2", "alert", "http2"]
    fds = 0
    for rnd in range(2):  # descriptors are counted after the first round (warm-up)
        raws = []
        for shape in shapes:
            raw = socket.socket()
            raw.setblocking(False)
            mux.loop.run_until_complete(mux.loop.sock_connect(raw, ("127.0.0.1", srv.port)))
            with contextlib.suppress(OSError):
                mux.loop.run_until_complete(mux.loop.sock_sendall(raw, _garbage(shape, rng)))
            raws.append(raw)
        n = len(shapes) * (rnd + 1)
        mux.run_until(
            lambda n=n: len(srv.recs) == n and all(r.shutdown is not None for r in srv.recs),  # type: ignore[misc]
            what="every handshake failed",
        )
        for raw in raws:
            raw.close()
        mux.run_for(0.05)
        if rnd == 0:
            fds = fd_count()
    assert fd_count() <= fds
    for rec in srv.recs:
        ended_once(rec, R.SOCKET_TLS_HANDSHAKE_FAILED)
        assert rec.names() == ["shutdown"]
    assert sum("TLS handshake failed" in ln for ln in lines.lines) >= len(srv.recs)
    # the listener still serves
    client, crec = connect(mux, log, srv.kind, srv.address)
    mux.run_until(lambda: "connect" in crec.names() and bool(srv.accepted), what="good client")
    server, srec = srv.accepted[0]
    call(srec, server.Recv, bytearray(5))
    call(crec, client.Send, b"hello")
    mux.run_until(lambda: srec.received == b"hello")
    for s in (client, server, srv.listener):
        s.Delete()


@pytest.mark.parametrize("version", VERSIONS)
def test_record_cut_in_half_then_eof(
    mux: Mux, log: IInstanceLog, ca: Any, version: str, short_tmp: str
) -> None:
    """After a whole record, half of the next one and a TCP EOF: the whole record's
    bytes are delivered, then SOCKET_LOST (truncation), once; nothing of the half record."""
    srv = TLSServer(mux, log, ca, version, short_tmp)
    raw = RawTLS(mux, ca, srv.port, version)
    raw.handshake()
    mux.run_until(lambda: bool(srv.accepted), what="accept")
    server, srec = srv.accepted[0]
    Pump(server, srec, b"", 10**6, 82).start()
    whole = random.Random(83).randbytes(5000)
    first = raw.record(whole)
    second = raw.record(b"never delivered" * 100)
    raw.send(first + second[: len(second) // 2])
    raw.sock.shutdown(socket.SHUT_WR)
    mux.run_until(lambda: srec.shutdown is not None, what="truncation")
    assert sha(srec.received) == sha(whole)
    ended_once(srec, R.SOCKET_LOST)
    mux.run_for(0.02)
    ended_once(srec, R.SOCKET_LOST)
    raw.close()
    server.Delete()
    srv.listener.Delete()


@pytest.mark.parametrize("version", VERSIONS)
def test_application_data_after_close_notify(
    mux: Mux, log: IInstanceLog, ca: Any, version: str, short_tmp: str
) -> None:
    """Data, close_notify, then application-data records in the same flight and later:
    the data before close_notify is delivered, then SOCKET_SHUTDOWN_BY_PEER once;
    nothing after it reaches the app, and nothing reaches the loop's exception handler.
    (A conforming sender cannot encrypt after its close_notify, so the records after it
    are forged: a real application-data header with a random body.)"""
    srv = TLSServer(mux, log, ca, version, short_tmp)
    raw = RawTLS(mux, ca, srv.port, version)
    raw.handshake()
    mux.run_until(lambda: bool(srv.accepted), what="accept")
    server, srec = srv.accepted[0]
    Pump(server, srec, b"", 10**6, 84).start()
    rng = random.Random(85)
    before = rng.randbytes(3000)
    forged = b"\x17\x03\x03\x00\x40" + rng.randbytes(64)
    raw.send(raw.record(before) + raw.close_notify() + forged)
    with contextlib.suppress(OSError):
        raw.send(forged * 20)
    mux.run_until(lambda: srec.shutdown is not None, what="end")
    with contextlib.suppress(OSError):
        raw.send(forged * 20)
    mux.run_for(0.05)
    assert sha(srec.received) == sha(before)
    ended_once(srec, R.SOCKET_SHUTDOWN_BY_PEER)
    raw.close()
    server.Delete()
    srv.listener.Delete()


@pytest.mark.parametrize("stage", ["partial_hello", "no_finished"])
def test_handshake_that_never_finishes(
    mux: Mux,
    log: IInstanceLog,
    ca: Any,
    monkeypatch: pytest.MonkeyPatch,
    stage: str,
    short_tmp: str,
) -> None:
    """A client that stops half-way through its ClientHello, or after the server's first
    flight (it never sends Finished): with the handshake timeout lowered to 0.3 s the
    accepted socket ends with SOCKET_TLS_HANDSHAKE_FAILED, once, and its task, timer and
    descriptor are gone afterwards."""
    monkeypatch.setattr(tls_mod, "HANDSHAKE_TIMEOUT", 0.3)
    srv = TLSServer(mux, log, ca, "tls13", short_tmp)
    fds = tasks = 0
    for rnd in range(2):  # descriptors and tasks are counted after a first round
        raw = RawTLS(mux, ca, srv.port, "tls13")
        with contextlib.suppress(ssl.SSLWantReadError):
            raw.obj.do_handshake()
        hello = raw.out.read()
        if stage == "partial_hello":
            raw.send(hello[: len(hello) // 2])
        else:
            raw.send(hello)  # and never answer the server's flight
        mux.run_until(
            lambda rnd=rnd: len(srv.recs) == rnd + 1 and srv.recs[rnd].shutdown is not None,  # type: ignore[misc]
            what="timeout",
        )
        ended_once(srv.recs[rnd], R.SOCKET_TLS_HANDSHAKE_FAILED)
        assert srv.recs[rnd].names() == ["shutdown"]
        raw.close()
        mux.run_for(0.05)
        if rnd == 0:
            fds = fd_count()
            tasks = len([t for t in asyncio.all_tasks(mux.loop) if not t.done()])
    assert fd_count() <= fds
    assert len([t for t in asyncio.all_tasks(mux.loop) if not t.done()]) <= tasks
    srv.listener.Delete()


# --------------------------------------------------------------------------- datagrams


@pytest.mark.parametrize("ipv6", [False, True], ids=["udp4", "udp6"])
def test_oversized_and_zero_length_datagrams(
    mux: Mux, logged: tuple[IInstanceLog, Lines], ipv6: bool
) -> None:
    """In: the largest datagram the family allows into a 100-byte Recv is truncated
    (logged) with its first bytes intact; a zero-length datagram gives a result of 0
    bytes. Out: SendTo larger than any datagram is refused by the kernel, logged, still
    reported by one SocketSendResult, and the socket carries on."""
    if ipv6 and not have_ipv6():
        pytest.skip("no IPv6 loopback")
    log, lines = logged
    host = "::1" if ipv6 else "127.0.0.1"
    biggest = 65527 if ipv6 else 65507
    fam = socket.AF_INET6 if ipv6 else socket.AF_INET
    prov = CreateUDPSocketProvider()
    rec = Recorder("udp")
    sock = prov.CreateSocket(mux, rec, log, ipv6)
    call(rec, sock.Bind, host, 0)
    mux.run_until(lambda: "bind" in rec.names())
    port = rec.events[0][2]
    peer = socket.socket(fam, socket.SOCK_DGRAM)
    peer.bind((host, 0))
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 18)
    big = random.Random(91).randbytes(biggest)
    peer.sendto(big, (host, port))
    peer.sendto(b"", (host, port))
    peer.sendto(b"after", (host, port))
    bufs = [bytearray(100) for _ in range(3)]
    for b in bufs:
        call(rec, sock.Recv, b)
    mux.run_until(lambda: rec.names().count("recvfrom") == 3, what="three datagrams")
    sizes = [e[1] for e in rec.events if e[0] == "recvfrom"]
    assert sizes == [100, 0, 5]
    assert bytes(bufs[0]) == big[:100] and bytes(bufs[2][:5]) == b"after"
    assert any("truncated" in ln for ln in lines.lines)
    # out: too large for any datagram
    peer_port = peer.getsockname()[1]
    call(rec, sock.SendTo, bytes(70000), None, host, peer_port)
    call(rec, sock.SendTo, b"still here", None, host, peer_port)
    mux.run_until(lambda: rec.sends_done == 2, what="send results")
    peer.settimeout(5)
    assert peer.recv(100) == b"still here"
    assert rec.shutdown is None and not rec.violations
    call(rec, sock.Shutdown)
    mux.run_until(lambda: rec.shutdown is not None)
    ended_once(rec, R.SOCKET_SHUTDOWN_NORMAL)
    peer.close()
    sock.Delete()


@pytest.mark.parametrize("call_name", ["Connect", "Bind"])
def test_unencodable_local_path_is_address_invalid(
    mux: Mux, log: IInstanceLog, call_name: str
) -> None:
    """A path with a lone surrogate cannot be encoded for the file system: the socket
    ends with SOCKET_ADDRESS_INVALID; the call itself does not raise."""
    from usocket_asyncio import CreateLocalSocketProvider

    rec = Recorder("local")
    sock = CreateLocalSocketProvider().CreateSocket(mux, rec, log)
    call(rec, getattr(sock, call_name), "/tmp/\ud800")
    mux.run_until(lambda: rec.shutdown is not None)
    ended_once(rec, R.SOCKET_ADDRESS_INVALID)
    sock.Delete()
