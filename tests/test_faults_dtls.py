"""DTLS client and server through the datagram fault relay (tests/kit/relays.py), on both loops.

Application records are dropped and reordered both ways: DTLS delivers what arrives, so
each delivered record must be intact (hashed), none duplicated, and the records
delivered must be exactly the ones the relay let through, in the relay's order.
Handshake flights are lost once each (the ClientHello, the server's flight, the
client's Finished flight): OpenSSL's timers resend, the handshake completes and both
sides hold the same SRTP keys. Each lost flight costs about one second (OpenSSL's
first retransmission timeout), so there are three lossy handshakes per loop.
"""

from __future__ import annotations

import hashlib
import random
import struct
from typing import Any

import pytest
from kit.certs import Server, connect, delete, ended_once
from kit.conformance import call
from kit.dtls import dsock, dtls_ctx, peers_of, wait_connected
from kit.loop import Mux, R, Recorder
from kit.relays import DatagramFaults, DatagramRelay, dtls_content_type

from usocket_asyncio import (
    IInstanceLog,
    ISocket,
    ISocketProvider,
)
from usocket_asyncio._dtls import split_records

_HEAD = struct.Struct("!I32s")


class AppFaults:
    """A relay rule for one way: handshake records and alerts pass; application-data
    datagrams (content type 23) are counted on their own, and those with the chosen
    application indices are dropped or held (a hold swaps with the next one)."""

    def __init__(self, drop: set[int], hold: set[int]) -> None:
        self.drop, self.hold = drop, hold
        self.app_of: dict[int, int] = {}  # relay index -> application index

    def __call__(self, index: int, data: bytes) -> str:
        if dtls_content_type(data) != 23:
            return "pass"
        k = len(self.app_of)
        self.app_of[index] = k
        return "drop" if k in self.drop else "hold" if k in self.hold else "pass"

    def forwarded(self, relay: DatagramRelay, way: str) -> list[int]:
        """The application indices the relay let through, in the order they left."""
        return [self.app_of[i] for i in relay.ways[way].order if i in self.app_of]


class Receiver:
    """Keeps `depth` Recv calls pending on a socket and checks every record it gets:
    sequence number, SHA-256 of the body, body equal to what was sent."""

    def __init__(self, sock: ISocket, rec: Recorder, sent: list[bytes], depth: int) -> None:
        self.sent = sent
        self.got: list[int] = []
        self.bad: list[str] = []
        rec.hooks["recv"] = self._on_recv
        for _ in range(depth):
            call(rec, sock.Recv, bytearray(2048))

    def _on_recv(self, s: ISocket, buf: Any, n: int) -> None:
        seq, digest = _HEAD.unpack(bytes(buf[: _HEAD.size]))
        body = bytes(buf[_HEAD.size : n])
        if hashlib.sha256(body).digest() != digest or body != self.sent[seq]:
            self.bad.append(f"record {seq} damaged ({n} bytes)")
        self.got.append(seq)
        s.Recv(bytearray(2048))


def _send_through(
    mux: Mux, relay: DatagramRelay, way: str, sock: ISocket, rec: Recorder, bodies: list[bytes]
) -> None:
    """Send one record per body, each only once the relay saw the one before: only
    the relay's faults may lose or reorder anything."""
    for seq, body in enumerate(bodies):
        seen = relay.ways[way].seen
        call(rec, sock.Send, _HEAD.pack(seq, hashlib.sha256(body).digest()) + body)
        mux.run_until(lambda seen=seen: relay.ways[way].seen > seen, what="the relay saw it")  # type: ignore[misc]


def test_application_records_dropped_and_reordered(
    mux: Mux, log: IInstanceLog, prov: ISocketProvider
) -> None:
    """40 records each way through the relay, some dropped, some swapped with the next:
    each side gets exactly the records the relay forwarded, in the relay's order, each
    intact, none twice; then close_notify ends both sides once (NORMAL / BY_PEER)."""
    n = 40
    rng = random.Random(61)
    up_rule = AppFaults(drop={3, 17, 18, 30}, hold={5, 22})
    down_rule = AppFaults(drop={0, 11, 26}, hold={8, 9, 33})
    srv = Server(mux, log, prov, dtls_ctx(prov, log))
    relay = DatagramRelay(
        mux.loop,
        f"127.0.0.1:{srv.port}",
        up=DatagramFaults(rule=up_rule),
        down=DatagramFaults(rule=down_rule),
    )
    try:
        port = int(relay.address.rpartition(":")[2])
        cli, crec = connect(mux, log, prov, dtls_ctx(prov, log, verify=False), port, None)
        peer = wait_connected(mux, srv, crec)
        prec = srv.recs[0]
        limit = dsock(cli).GetCleartextMtu() - _HEAD.size
        up = [rng.randbytes(rng.randint(0, limit)) for _ in range(n)]
        down = [rng.randbytes(rng.randint(0, limit)) for _ in range(n)]
        at_server = Receiver(peer, prec, up, 8)
        at_client = Receiver(cli, crec, down, 8)

        _send_through(mux, relay, "up", cli, crec, up)
        _send_through(mux, relay, "down", peer, prec, down)
        expect_up = up_rule.forwarded(relay, "up")
        expect_down = down_rule.forwarded(relay, "down")
        mux.run_until(lambda: len(at_server.got) >= len(expect_up), what="the server's records")
        mux.run_until(lambda: len(at_client.got) >= len(expect_down), what="the client's records")
        mux.run_for(0.05)  # nothing more (no duplicate) may come

        assert len(up_rule.app_of) == len(down_rule.app_of) == n
        assert not at_server.bad and not at_client.bad, at_server.bad + at_client.bad
        assert at_server.got == expect_up
        assert at_client.got == expect_down
        assert sorted(expect_up) == sorted(set(range(n)) - up_rule.drop)
        assert sorted(expect_down) == sorted(set(range(n)) - down_rule.drop)
        assert expect_up != sorted(expect_up) and expect_down != sorted(expect_down)
        assert crec.sends_done == n and prec.sends_done == n

        call(crec, cli.Shutdown)
        mux.run_until(lambda: crec.shutdown is not None and prec.shutdown is not None)
        mux.run_for(0.02)
        ended_once(crec, R.SOCKET_SHUTDOWN_NORMAL)
        ended_once(prec, R.SOCKET_SHUTDOWN_BY_PEER)
        assert peers_of(srv.listener) == {}
        print(
            f"\n[dtls faults] {mux.kind}: {len(at_server.got) + len(at_client.got)} records "
            f"verified, {len(up_rule.drop) + len(down_rule.drop)} dropped, "
            f"{len(up_rule.hold) + len(down_rule.hold)} reordered"
        )
        delete(cli)
    finally:
        relay.close()
    srv.close()


# --------------------------------------------------------------------------- handshake


def _keys(data: bytes) -> set[tuple[int, int, int | None]]:
    """(content type, epoch, handshake message type) of each record in a datagram."""
    out: set[tuple[int, int, int | None]] = set()
    for r in split_records(data):
        epoch = int.from_bytes(r[3:5], "big")
        msg = r[13] if r[0] == 22 and epoch == 0 and len(r) > 13 else None
        out.add((r[0], epoch, msg))
    return out


class FirstTransmission:
    """A relay rule that loses the first transmission of a flight: a datagram holding a
    record of one of `keys` not seen before is dropped (retransmissions pass)."""

    def __init__(self, keys: set[tuple[int, int, int | None]]) -> None:
        self.keys = keys
        self.seen: set[tuple[int, int, int | None]] = set()

    def __call__(self, index: int, data: bytes) -> str:
        if dtls_content_type(data) is None:
            return "pass"
        mine = _keys(data) & self.keys
        if not mine or mine <= self.seen:
            return "pass"
        self.seen |= mine
        return "drop"


FLIGHTS: dict[str, tuple[str, set[tuple[int, int, int | None]]]] = {
    # the first ClientHello (no cookie yet)
    "client_hello": ("up", {(22, 0, 1)}),
    # ServerHello, Certificate, ServerKeyExchange, CertificateRequest, ServerHelloDone
    "server_flight": ("down", {(22, 0, 2), (22, 0, 11), (22, 0, 12), (22, 0, 13), (22, 0, 14)}),
    # ClientKeyExchange, ChangeCipherSpec, Finished (epoch 1)
    "client_finished": ("up", {(22, 0, 16), (20, 0, None), (22, 1, None)}),
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("flight", ["client_finished"])
def test_handshake_flight_lost(
    mux: Mux, log: IInstanceLog, prov: ISocketProvider, flight: str
) -> None:
    """End to end on the loop's real timers, the client's last flight's first
    transmission is lost: the handshake still completes (one retransmission later),
    both sides agree on the SRTP profile and keys, and a record goes through each way
    afterwards. The loss of every other flight is covered on a simulated clock by
    test_dtls_core.py (`FLIGHTS` names them all for anyone who wants them here)."""
    way, keys = FLIGHTS[flight]
    rule = FirstTransmission(keys)
    srv = Server(mux, log, prov, dtls_ctx(prov, log))
    faults = {way: DatagramFaults(rule=rule)}
    relay = DatagramRelay(mux.loop, f"127.0.0.1:{srv.port}", **faults)
    try:
        port = int(relay.address.rpartition(":")[2])
        cli, crec = connect(mux, log, prov, dtls_ctx(prov, log, verify=False), port, None)
        peer = wait_connected(mux, srv, crec, timeout=20)
        prec = srv.recs[0]
        dropped = relay.ways[way].dropped
        assert dropped, f"the relay lost no datagram of the {flight}"
        assert rule.seen == keys or flight == "server_flight"  # a flight may lack a message
        assert rule.seen
        c, p = dsock(cli), dsock(peer)
        assert c.GetSrtpProfile() == p.GetSrtpProfile() is not None
        assert c.GetSrtpKeys() == p.GetSrtpKeys() is not None
        call(prec, peer.Recv, bytearray(100))
        call(crec, cli.Recv, bytearray(100))
        call(crec, cli.Send, b"up after the loss")
        call(prec, peer.Send, b"down after the loss")
        mux.run_until(lambda: bool(prec.received) and bool(crec.received))
        assert prec.received == b"up after the loss" and crec.received == b"down after the loss"
        call(prec, peer.Shutdown)
        mux.run_until(lambda: crec.shutdown is not None and prec.shutdown is not None)
        ended_once(prec, R.SOCKET_SHUTDOWN_NORMAL)
        ended_once(crec, R.SOCKET_SHUTDOWN_BY_PEER)
        print(f"\n[dtls faults] {mux.kind}/{flight}: {len(dropped)} handshake datagrams lost")
        delete(cli)
    finally:
        relay.close()
    srv.close()
