"""A DTLS server (and client) under hostile datagrams, on both loops.

- zero-length and oversized datagrams (16 KiB, 65507 bytes) at a listening socket, at
  an established peer socket (from its peer's own address) and at a client: dropped,
  the connection carries on;
- a flood of ClientHellos without cookies from many source ports: the listener keeps
  no state (its peer table stays empty, traced memory stays flat) and a real client
  connects afterwards;
- records with a forged or damaged MAC, and a replayed record, after the handshake:
  dropped (DTLS ignores bad records), the connection carries on, later records arrive;
- records after close_notify, in the same datagram and later: not delivered;
- a flood of ClientHellos padded to 65507 bytes and of junk datagrams at a listener:
  a genuine client still completes its handshake within 1 s;
- one stray epoch-0 record at an IDtls client and at an IDtls server without cookies
  (the app gives `DtlsRecv` every datagram of its port): the handshake completes.

The hostile peer is a hand-driven pyOpenSSL DTLS client on memory BIOs (`RawDTLS`), so
the test can damage, replay and reorder its records at will.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import re
import socket
import tracemalloc
from functools import partial

import pytest
from kit.certs import Server, connect, delete, ended_once
from kit.conformance import call
from kit.dtls import SRTP, Endpoint, RawClient, dsock, dtls_ctx, peers_of, wait_connected
from kit.loop import Mux, R, Recorder
from kit.relays import DatagramRelay
from OpenSSL import SSL

from usocket_asyncio import (
    DTLS_OPTION_NO_COOKIE,
    IInstanceLog,
    ISocket,
    ISocketProvider,
    LogFlags,
)
from usocket_asyncio._dtls import pack_records, split_records

FLOOD_SOURCES = 256
"""Source ports of the ClientHello flood."""
FLOOD_ROUNDS = 4
"""ClientHellos per source after the warm-up one."""
FLOOD_MEMORY_BOUND = 16 * 1024
"""Traced growth allowed over the flood: 16 bytes per ClientHello (1024 of them), 64
per source. Any state kept per source would cost more than that for 256 sources: a
dict entry with its address tuple and host string is about 150 bytes, a `DTLSSocket`
or an `SSL.Connection` wrapper several hundred. Measured: under 1 KiB on both loops."""


def hostile_datagrams(rng: random.Random) -> list[bytes]:
    """A zero-length datagram, 16 KiB and 65507 bytes (the largest IPv4 UDP payload) of
    random bytes, and the same sizes made to look like DTLS records."""
    big = [16 * 1024, 16 * 1024 + 1, 65507]
    out = [b""] + [rng.randbytes(n) for n in big]
    for n in big:
        body = rng.randbytes(n - 13)
        out.append(bytes([23, 0xFE, 0xFD, 0, 1]) + rng.randbytes(6) + (n - 13).to_bytes(2) + body)
    out.append(bytes([22, 0xFE, 0xFD, 0, 0]) + bytes(6) + b"\xff\xff" + rng.randbytes(65507 - 13))
    return out


def big_sender() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 18)
    s.bind(("127.0.0.1", 0))
    return s


class RawDTLS:
    """A DTLS client driven by hand over a plain UDP socket (pyOpenSSL memory BIOs) that
    completes the handshake with a library server and can then make records without
    sending them: to damage, replay or reorder them."""

    def __init__(self, mux: Mux, port: int) -> None:
        self.mux = mux
        ctx = SSL.Context(SSL.DTLS_METHOD)
        ctx.set_verify(SSL.VERIFY_NONE)
        ctx.set_tlsext_use_srtp(b"SRTP_AEAD_AES_128_GCM")
        self.conn = SSL.Connection(ctx, None)
        self.conn.set_connect_state()
        self.sock = big_sender()
        self.sock.setblocking(False)
        self.sock.connect(("127.0.0.1", port))

    def take(self) -> bytes:
        """What OpenSSL wrote since the last call (one or more records)."""
        out = b""
        while True:
            try:
                out += self.conn.bio_read(65536)
            except SSL.WantReadError:
                return out

    def send(self, data: bytes) -> None:
        self.sock.send(data)

    def _flush(self) -> None:
        for d in pack_records(self.take(), 1200):
            self.send(d)

    def _read(self) -> bool:
        got = False
        while True:
            try:
                self.conn.bio_write(self.sock.recv(65536))
            except BlockingIOError:
                return got
            got = True

    def handshake(self) -> None:
        """Run the handshake to its end (bounded: 20 flights, 10 s each)."""
        for _ in range(20):
            try:
                self.conn.do_handshake()
                self._flush()
                return
            except SSL.WantReadError:
                self._flush()
            self.mux.run_until(self._read, what="the server's flight")
        raise AssertionError("the handshake did not finish in 20 flights")

    def record(self, data: bytes) -> bytes:
        """One application-data record holding `data`, not sent."""
        self.conn.send(data)
        out = self.take()
        assert len(list(split_records(out))) == 1 and out[0] == 23
        return out

    def close_notify(self) -> bytes:
        """The close_notify alert record, not sent."""
        self.conn.shutdown()
        out = self.take()
        assert out[0] == 21
        return out

    def close(self) -> None:
        self.sock.close()


def _server_and_raw(
    mux: Mux, log: IInstanceLog, prov: ISocketProvider
) -> tuple[Server, RawDTLS, ISocket, Recorder]:
    srv = Server(mux, log, prov, dtls_ctx(prov, log))
    raw = RawDTLS(mux, srv.port)
    raw.handshake()
    mux.run_until(lambda: 0 in srv.socks, what="the peer's accept")
    assert srv.recs[0].names() == ["accept"]
    return srv, raw, srv.socks[0], srv.recs[0]


def _records(rec: Recorder) -> list[bytes]:
    """The records a recorder got, one per Recv (each Recv's buffer is 64 KiB)."""
    out, at = [], 0
    for e in rec.events:
        if e[0] == "recv":
            out.append(bytes(rec.received[at : at + e[1]]))
            at += e[1]
    return out


# --------------------------------------------------------------------------- sizes


def test_zero_length_and_oversized_datagrams(
    mux: Mux, log: IInstanceLog, prov: ISocketProvider
) -> None:
    """Zero-length, 16 KiB and 65507-byte datagrams (random, and shaped like records)
    at the listener from a stranger, at the established peer from its client's own
    address, and at the library client from the server's address: none is delivered,
    none ends a connection or reaches the loop's exception handler; the listener keeps
    no state and answers nothing; records sent afterwards arrive both ways."""
    rng = random.Random(71)
    bad = hostile_datagrams(rng)
    srv, raw, peer, prec = _server_and_raw(mux, log, prov)
    for _ in range(4):
        call(prec, peer.Recv, bytearray(65536))
    with big_sender() as stranger:
        for d in bad:
            stranger.sendto(d, ("127.0.0.1", srv.port))
        mux.run_for(0.05)
        stranger.setblocking(False)
        with pytest.raises(BlockingIOError):
            stranger.recv(65536)  # no answer to junk: nothing to amplify
    for d in bad:
        raw.send(d)
    raw.send(raw.record(b"after the junk"))
    mux.run_until(lambda: "recv" in prec.names(), what="the record after the junk")
    mux.run_for(0.05)
    assert _records(prec) == [b"after the junk"]
    assert prec.shutdown is None and srv.lrec.names() == ["bind", "listen"]
    assert list(peers_of(srv.listener).values()) == [dsock(peer)]

    # the library client, through a relay whose front socket is the client's peer
    relay = DatagramRelay(mux.loop, f"127.0.0.1:{srv.port}")
    try:
        port = int(relay.address.rpartition(":")[2])
        cli, crec = connect(mux, log, prov, dtls_ctx(prov, log, verify=False), port, None)
        mux.run_until(lambda: "connect" in crec.names() and 1 in srv.socks, what="handshake")
        peer2 = srv.socks[1]
        prec2 = srv.recs[1]
        (client_addr,) = list(relay._backs)
        for _ in range(4):
            call(crec, cli.Recv, bytearray(65536))
        relay._front.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 18)
        for d in bad:
            relay._front.sendto(d, client_addr)
        call(prec2, peer2.Send, b"down after the junk")
        mux.run_until(lambda: "recv" in crec.names(), what="the record after the junk")
        mux.run_for(0.05)
        assert _records(crec) == [b"down after the junk"]
        assert crec.shutdown is None
        call(crec, cli.Shutdown)
        mux.run_until(lambda: crec.shutdown is not None and prec2.shutdown is not None)
        ended_once(crec, R.SOCKET_SHUTDOWN_NORMAL)
        ended_once(prec2, R.SOCKET_SHUTDOWN_BY_PEER)
        delete(cli)
    finally:
        relay.close()
    print(f"\n[dtls hostile] {mux.kind}: {3 * len(bad)} zero-length/oversized datagrams sent")
    raw.close()
    srv.close()


# --------------------------------------------------------------------------- flood


def test_client_hello_flood_keeps_no_state(
    mux: Mux, log: IInstanceLog, prov: ISocketProvider
) -> None:
    """ClientHellos without a cookie from FLOOD_SOURCES source ports, FLOOD_ROUNDS each
    after a warm-up one: the app hears nothing, the peer table stays empty, traced
    memory grows by less than FLOOD_MEMORY_BOUND, and a real client connects after."""
    srv = Server(mux, log, prov, dtls_ctx(prov, log))
    hello = RawClient(srv.port)
    first = hello.client_hello()
    hello.close()
    assert first[0] == 22 and first[13] == 1  # a ClientHello, no cookie yet
    sources = []
    try:
        for _ in range(FLOOD_SOURCES):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            s.setblocking(False)
            sources.append(s)
        dst = ("127.0.0.1", srv.port)

        def round_() -> None:
            # in batches (so that the server's receive buffer never overflows), each
            # until every source of the batch got its HelloVerifyRequest
            for at in range(0, len(sources), 32):
                batch = sources[at : at + 32]
                for s in batch:
                    s.sendto(first, dst)
                mux.run_until(partial(_all_answered, set(batch)), what="HelloVerifyRequests")

        round_()  # warm-up: the listener's spare connection, the loop's buffers
        gc.collect()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            for _ in range(FLOOD_ROUNDS):
                round_()
                assert peers_of(srv.listener) == {}
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - base
        finally:
            tracemalloc.stop()
    finally:
        for s in sources:
            s.close()
    assert srv.lrec.names() == ["bind"]
    assert peers_of(srv.listener) == {}
    assert grown < FLOOD_MEMORY_BOUND, f"traced memory grew by {grown} bytes"
    cli, crec = connect(mux, log, prov, dtls_ctx(prov, log, verify=False), srv.port, None)
    wait_connected(mux, srv, crec)
    print(
        f"\n[dtls flood] {mux.kind}: {FLOOD_SOURCES * (FLOOD_ROUNDS + 1)} ClientHellos from "
        f"{FLOOD_SOURCES} ports, traced memory {grown:+d} bytes"
    )
    delete(cli)
    srv.close()


def _all_answered(waiting: set[socket.socket]) -> bool:
    """Drops from `waiting` the sockets that got their answer; True once none is left."""
    waiting.difference_update([s for s in waiting if _answered(s)])
    return not waiting


def _answered(s: socket.socket) -> bool:
    """True once `s` got a HelloVerifyRequest (drains what it got)."""
    got = False
    while True:
        try:
            r = s.recv(65536)
        except BlockingIOError:
            return got
        assert r[0] == 22 and r[13] == 3, r[:16]
        got = True


# --------------------------------------------------------------------------- records


def test_forged_damaged_and_replayed_records_are_dropped(
    mux: Mux, log: IInstanceLog, prov: ISocketProvider
) -> None:
    """After the handshake: a record with a damaged tag, one with a forged header and
    random body, a replay of a record already delivered, and a record from a future
    epoch are dropped without ending the connection; the genuine records around them
    arrive, each once, in order."""
    rng = random.Random(73)
    srv, raw, peer, prec = _server_and_raw(mux, log, prov)
    for _ in range(8):
        call(prec, peer.Recv, bytearray(65536))
    good = [rng.randbytes(rng.randint(1, 1000)) for _ in range(4)]
    recs = [raw.record(g) for g in good]
    damaged = bytearray(recs[1])
    damaged[-1] ^= 0x01  # the last byte of the AEAD tag
    body_flip = bytearray(recs[1])
    body_flip[30] ^= 0x80  # a ciphertext byte
    forged = recs[2][:13] + rng.randbytes(len(recs[2]) - 13)
    future = bytearray(recs[3])
    future[3:5] = (2).to_bytes(2, "big")  # epoch 2 does not exist yet
    for d in (recs[0], bytes(damaged), bytes(body_flip), recs[1], recs[0], forged):
        raw.send(d)
    raw.send(bytes(future))
    raw.send(recs[2])
    raw.send(recs[2] + recs[3])  # a replay and a new record in one datagram
    mux.run_until(lambda: prec.names().count("recv") >= 4, what="the genuine records")
    mux.run_for(0.05)
    assert _records(prec) == good
    assert prec.shutdown is None and not prec.violations
    # the connection is intact: a clean close
    raw.send(raw.close_notify())
    mux.run_until(lambda: prec.shutdown is not None)
    ended_once(prec, R.SOCKET_SHUTDOWN_BY_PEER)
    raw.close()
    srv.close()


def test_records_after_close_notify_are_not_delivered(
    mux: Mux, log: IInstanceLog, prov: ISocketProvider
) -> None:
    """Genuine records the client encrypted before its close_notify but sends after it
    (in the same datagram, and later): the records before close_notify are delivered,
    then SOCKET_SHUTDOWN_BY_PEER once, and nothing else, although Recv calls were
    still pending."""
    srv, raw, peer, prec = _server_and_raw(mux, log, prov)
    for _ in range(8):
        call(prec, peer.Recv, bytearray(65536))
    before = raw.record(b"before close_notify")
    late = [raw.record(f"late {i}".encode()) for i in range(3)]
    bye = raw.close_notify()
    raw.send(before)
    raw.send(bye + late[0])
    mux.run_until(lambda: prec.shutdown is not None, what="the end")
    raw.send(late[1])
    raw.send(late[2])
    mux.run_for(0.05)
    assert _records(prec) == [b"before close_notify"]
    ended_once(prec, R.SOCKET_SHUTDOWN_BY_PEER)
    assert peers_of(srv.listener) == {}
    raw.close()
    srv.close()


# --------------------------------------------------------------------------- engine floods

FLOOD_OVERSIZED = 120
"""ClientHellos padded to 65507 bytes in the flood (before the fix, three made every
later client fail after 30 s, and each kept about 49 KB in OpenSSL's read BIO)."""
FLOOD_JUNK = 1500
"""Junk datagrams in the flood: random bytes, records with a wrong version or a length
past the datagram, epoch-0 handshake fragments far ahead, early ChangeCipherSpecs."""


def padded(hello: bytes, how: int) -> bytes:
    """`hello` made 65507 bytes long: padded with zeros, with copies of itself, or with
    its record length claiming the whole datagram."""
    size = 65507
    if how == 0:
        return hello + bytes(size - len(hello))
    if how == 1:
        return (hello * (size // len(hello) + 1))[:size]
    d = bytearray(hello + bytes(size - len(hello)))
    d[11:13] = (size - 13).to_bytes(2, "big")
    return bytes(d)


def _record(ctype: int, seq: int, body: bytes) -> bytes:
    return (
        bytes([ctype, 0xFE, 0xFD, 0, 0])
        + seq.to_bytes(6, "big")
        + len(body).to_bytes(2, "big")
        + body
    )


def _fragment(mseq: int, body: bytes) -> bytes:
    n = len(body).to_bytes(3, "big")
    return bytes([11]) + n + mseq.to_bytes(2, "big") + bytes(3) + n + body


STRAYS = {
    # a well-formed epoch-0 fragment of handshake message 20 (OpenSSL drops it)
    "message_seq-20": _record(22, 9, _fragment(20, b"\x01\x02\x03\x04")),
    # the same, with a record number far ahead
    "record-number-far-ahead": _record(22, 2**48 - 2, _fragment(20, b"\x01\x02\x03\x04")),
}


def junk(rng: random.Random, i: int) -> bytes:
    kind = i % 5
    if kind == 0:
        return bytes([rng.randint(20, 63)]) + rng.randbytes(rng.randint(0, 200))
    if kind == 1:
        return bytes([22, 0x03, 0x03]) + rng.randbytes(40)
    if kind == 2:
        return _record(22, 9, _fragment(5, rng.randbytes(40)))[:30]
    if kind == 3:
        return _record(22, 9, _fragment(1000 + i, rng.randbytes(8)))
    return _record(20, 9, b"\x01")


def test_listener_under_a_flood_still_completes_a_genuine_handshake(
    mux: Mux, log: IInstanceLog, prov: ISocketProvider
) -> None:
    """ClientHellos padded to 65507 bytes and junk datagrams from eight sources at a
    listener, before and during a genuine client's handshake: the client connects within
    1 s of its Connect (the bound is the wait), the listener holds only that peer, and
    its app heard of no other."""
    rng = random.Random(79)
    srv = Server(mux, log, prov, dtls_ctx(prov, log))
    hello_src = RawClient(srv.port)
    hello = hello_src.client_hello()
    hello_src.close()
    flood = [padded(hello, i % 3) for i in range(FLOOD_OVERSIZED)]
    flood += [junk(rng, i) for i in range(FLOOD_JUNK)]
    rng.shuffle(flood)
    senders = [big_sender() for _ in range(8)]
    dst = ("127.0.0.1", srv.port)
    at = [0]
    handle: list[asyncio.TimerHandle | None] = [None]

    def burst(n: int) -> None:
        for d in flood[at[0] : at[0] + n]:
            senders[at[0] % len(senders)].sendto(d, dst)
            at[0] += 1

    try:
        half = len(flood) // 2
        while at[0] < half:  # the first half before the client starts, in bursts
            burst(16)
            mux.run_for(0.002)
        assert srv.lrec.names() == ["bind"]
        cli, crec = connect(mux, log, prov, dtls_ctx(prov, log, verify=False), srv.port, None)

        def keep_flooding() -> None:
            burst(16)
            if at[0] < len(flood):
                handle[0] = mux.loop.call_later(0.002, keep_flooding)

        keep_flooding()
        wait_connected(mux, srv, crec, timeout=1.0)
    finally:
        if handle[0] is not None:
            handle[0].cancel()
        for s in senders:
            s.close()
    assert list(peers_of(srv.listener).values()) == [dsock(srv.socks[0])]
    assert srv.lrec.names() == ["bind", "listen"]
    print(f"\n[dtls flood] {mux.kind}: {at[0]} datagrams, the genuine client connected")
    delete(cli)
    srv.close()


@pytest.mark.parametrize("stray", sorted(STRAYS))
@pytest.mark.parametrize("target", ["client", "no-cookie server"])
def test_a_stray_record_does_not_stall_an_idtls_handshake(
    mux: Mux, log: IInstanceLog, target: str, stray: str
) -> None:
    """A stranger sends one stray epoch-0 handshake record (a message far ahead; also
    with a record number far ahead) to the port of an IDtls client, or of an IDtls
    server without cookies, in its handshake (the app gives
    `DtlsRecv` every datagram of its port): the handshake completes within 2 s.
    Before, the engine held the peer's ChangeCipherSpec for a message that never came,
    until the 30 s deadline."""
    srv = Endpoint(mux, log, True, options=SRTP | DTLS_OPTION_NO_COOKIE)
    mux.run_until(lambda: srv.port != 0)
    cli = Endpoint(mux, log, False, peer_port=srv.port)
    mux.run_until(lambda: cli.port != 0)
    srv.peer = ("127.0.0.1", cli.port)
    # the target's handshake starts first (a client's ClientHello finds no server yet
    # and is resent after 100 ms), the stray reaches it, then the other side starts
    first, second = (cli, srv) if target == "client" else (srv, cli)
    first.connect()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        stranger.sendto(STRAYS[stray], ("127.0.0.1", first.port))
        mux.run_for(0.05)
    second.connect()
    mux.run_until(lambda: cli.connected and srv.connected, 2.0, "the handshake")
    assert cli.keys == srv.keys and cli.keys is not None
    assert cli.closed is None and srv.closed is None
    cli.close()
    srv.close()


# --------------------------------------------------------------------------- the log


def test_one_id_per_socket_and_the_failure_logged_once(
    mux: Mux, prov: ISocketProvider, caplog: pytest.LogCaptureFixture
) -> None:
    """A client whose verification fails (the server's certificate is self-signed): the
    engine's lines carry the socket's id, as the socket's own do, and the failure with
    OpenSSL's detail is logged once (before: the engine's id and the socket's, and the
    failure from both)."""
    log = IInstanceLog(LogFlags.LOG_DTLS)
    srv = Server(mux, log, prov, dtls_ctx(prov, log))
    with caplog.at_level(logging.INFO, logger="usocket_asyncio"):
        cli, crec = connect(mux, log, prov, dtls_ctx(prov, log), srv.port, None)
        mux.run_until(lambda: crec.shutdown is not None, 10, "the failed handshake")
    ended_once(crec, R.SOCKET_TLS_HANDSHAKE_FAILED)
    lines = [r.getMessage().removeprefix("LOG_DTLS ") for r in caplog.records]
    ids = {m.group(1) for line in lines if (m := re.match(r"dtls ([0-9a-f]+): ", line))}
    sockets = {line.split()[1][:-1] for line in lines if re.match(r"dtls \S+ idle -> ", line)}
    assert ids == sockets, lines  # every id in the log is a socket's (no engine's own)
    mine = [line for line in lines if line.startswith(f"dtls {id(cli):x}: ")]
    assert sum("self-signed certificate" in line for line in lines) == 1, lines
    assert sum("self-signed certificate" in line for line in mine) == 1, mine
    delete(cli)
    srv.close()


def test_oversized_client_hellos_at_an_idtls_server_with_cookies(
    mux: Mux, log: IInstanceLog
) -> None:
    """Three ClientHellos padded to 65507 bytes from a stranger at the port of an IDtls
    server that runs the cookie exchange: its client still completes the handshake
    within 2 s (before, the unread rest of each was read in front of every later
    datagram, and the handshake failed)."""
    srv = Endpoint(mux, log, True, recv_size=65536)  # the datagrams reach DtlsRecv whole
    mux.run_until(lambda: srv.port != 0)
    cli = Endpoint(mux, log, False, peer_port=srv.port)
    mux.run_until(lambda: cli.port != 0)
    hello_src = RawClient(srv.port)
    hello = hello_src.client_hello()
    hello_src.close()
    with big_sender() as stranger:
        # the server's answers to the stranger go to the stranger (the kit's endpoint
        # sends to one peer), not to the client, which would hold them until DtlsConnect
        srv.peer = stranger.getsockname()
        srv.connect()
        for how in range(3):
            stranger.sendto(padded(hello, how), ("127.0.0.1", srv.port))
        mux.run_for(0.05)
    srv.peer = ("127.0.0.1", cli.port)
    cli.connect()
    mux.run_until(lambda: cli.connected and srv.connected, 2.0, "the handshake")
    assert cli.keys == srv.keys and cli.keys is not None
    cli.close()
    srv.close()
