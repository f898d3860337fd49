"""DTLS between library sockets: data, SRTP keying, pinning, many peers, loss, bad input.

Each socket test runs on asyncio and uvloop (the `mux` fixture) and checks exactly one
`SocketShutdown` per socket with the right reason, nothing after it, and nothing in the
loop's exception handler.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import socket
from typing import Any

import pytest
from kit.certs import Server, connect, delete, ended_once, pem_of
from kit.conformance import call
from kit.dtls import RawClient, Relay, connected_udp, dsock, dtls_ctx, peers_of, wait_connected
from kit.loop import Mux, R, Recorder

import usocket_asyncio._dtls as dtls_mod
from usocket_asyncio import (
    IInstanceLog,
    ISocket,
    ISocketProvider,
    SocketModeError,
)
from usocket_asyncio._context import default_server_cert
from usocket_asyncio._dtls import DTLSSocket, pack_records, split_records


def record(content: int, epoch: int, seq: int, body: bytes) -> bytes:
    return (
        bytes([content, 0xFE, 0xFD])
        + epoch.to_bytes(2, "big")
        + seq.to_bytes(6, "big")
        + len(body).to_bytes(2, "big")
        + body
    )


def pair(
    mux: Mux,
    log: IInstanceLog,
    prov: ISocketProvider,
    sctx: Any,
    cctx: Any,
    server_name: str | None = None,
    port: int | None = None,
) -> tuple[Server, ISocket, Recorder]:
    """A listening server and one client connected to it (or to `port`, a relay)."""
    srv = Server(mux, log, prov, sctx)
    cli, crec = connect(mux, log, prov, cctx, port or srv.port, server_name)
    return srv, cli, crec


def both_ended(srv: Server) -> bool:
    return bool(srv.recs) and srv.recs[0].shutdown is not None


# --------------------------------------------------------------------------- records


def test_records_are_split_and_packed_up_to_the_mtu() -> None:
    rng = random.Random(5)
    recs = [record(22, 0, i, rng.randbytes(rng.randrange(0, 220))) for i in range(40)]
    data = b"".join(recs)
    assert list(split_records(data)) == recs
    for mtu in (256, 400, 1200):
        dgrams = pack_records(data, mtu)
        assert b"".join(dgrams) == data
        assert all(len(d) <= mtu for d in dgrams)
        assert [r for d in dgrams for r in split_records(d)] == recs
        # greedy: no two neighbours would have fitted into one datagram
        assert all(
            len(a) + len(next(split_records(b))) > mtu for a, b in itertools.pairwise(dgrams)
        )
    big = record(23, 1, 0, b"x" * 500)
    assert pack_records(big + recs[0], 256) == [big, recs[0]]


# --------------------------------------------------------------------------- data


def test_data_both_ways_srtp_keys_and_close_notify(
    mux: Mux, log: IInstanceLog, prov: ISocketProvider
) -> None:
    """Records of seeded random sizes both ways (hashed, one Recv per record), the same
    SRTP profile and keys on both sides, the server's fingerprint seen by the client,
    and close_notify: the peer that shuts down sees NORMAL, the other BY_PEER."""
    sctx = dtls_ctx(prov, log)
    cctx = dtls_ctx(prov, log, verify=False)
    srv, cli, crec = pair(mux, log, prov, sctx, cctx)
    peer = wait_connected(mux, srv, crec)
    prec = srv.recs[0]
    c, p = dsock(cli), dsock(peer)
    assert c.GetSrtpProfile() == p.GetSrtpProfile() == "SRTP_AEAD_AES_128_GCM"
    keys = c.GetSrtpKeys()
    assert keys is not None and len(keys) == 56 and keys == p.GetSrtpKeys()
    assert c.GetPeerCertificateFingerprint() == sctx.GetCertificateFingerprint()
    assert p.GetPeerCertificateFingerprint() is None  # the client presented no certificate

    rng = random.Random(1)
    limit = c.GetCleartextMtu()
    n = 40
    up = [rng.randbytes(rng.randint(1, limit)) for _ in range(n)]
    down = [rng.randbytes(rng.randint(1, limit)) for _ in range(n)]
    for _ in range(n):
        call(prec, peer.Recv, bytearray(2048))
        call(crec, cli.Recv, bytearray(2048))
    for u, d in zip(up, down, strict=True):
        call(crec, cli.Send, u)
        call(prec, peer.Send, bytearray(d))
    mux.run_until(lambda: crec.names().count("recv") == n and prec.names().count("recv") == n)
    assert [e[1] for e in prec.events if e[0] == "recv"] == [len(x) for x in up]
    assert [e[1] for e in crec.events if e[0] == "recv"] == [len(x) for x in down]
    assert hashlib.sha256(prec.received).digest() == hashlib.sha256(b"".join(up)).digest()
    assert hashlib.sha256(crec.received).digest() == hashlib.sha256(b"".join(down)).digest()
    assert crec.sends_done == n and prec.sends_done == n

    call(prec, peer.Send, b"last words")
    call(prec, peer.Shutdown)
    call(prec, peer.Send, b"ignored")
    call(crec, cli.Recv, bytearray(100))
    mux.run_until(lambda: crec.shutdown is not None and prec.shutdown is not None)
    ended_once(prec, R.SOCKET_SHUTDOWN_NORMAL)
    ended_once(crec, R.SOCKET_SHUTDOWN_BY_PEER)
    assert crec.events[-2] == ("recv", 10) and crec.received.endswith(b"last words")
    assert prec.names()[-2:] == ["send", "shutdown"]
    assert peers_of(srv.listener) == {}
    delete(cli)
    srv.close()


def test_records_wait_for_recv_before_by_peer_and_truncation_is_logged(
    mux: Mux, log: IInstanceLog, prov: ISocketProvider, caplog: pytest.LogCaptureFixture
) -> None:
    """Records that arrive with no Recv pending are held; the peer's close_notify ends
    the socket only once they were all handed to Recv. A record longer than the Recv
    buffer delivers its head, and the truncation is logged."""
    srv, cli, crec = pair(mux, log, prov, dtls_ctx(prov, log), dtls_ctx(prov, log, verify=False))
    peer = wait_connected(mux, srv, crec)
    prec = srv.recs[0]
    for i in range(3):
        call(prec, peer.Send, bytes([65 + i]) * 100)
    call(prec, peer.Shutdown)
    mux.run_until(lambda: prec.shutdown is not None)
    mux.run_for(0.1)
    assert crec.names() == ["connect"]  # held, not ended
    with caplog.at_level("INFO", logger="usocket_asyncio"):
        for _ in range(3):
            call(crec, cli.Recv, bytearray(10))
        mux.run_until(lambda: crec.shutdown is not None)
    assert crec.events[1:] == [("recv", 10)] * 3 + [("shutdown", R.SOCKET_SHUTDOWN_BY_PEER)]
    assert crec.received == b"A" * 10 + b"B" * 10 + b"C" * 10
    assert "record of 100 bytes truncated" in caplog.text
    ended_once(crec, R.SOCKET_SHUTDOWN_BY_PEER)
    delete(cli)
    srv.close()


def test_fingerprint_pinning_without_verification(
    mux: Mux, log: IInstanceLog, ca: Any, prov: ISocketProvider
) -> None:
    """WebRTC style: verification off on both sides, both present certificates, each
    side pins the other's SHA-256 fingerprint; SRTP_AES128_CM_SHA1_80 keys are 60 bytes
    when the server offers only that profile."""
    client_pem = pem_of(ca, "client.example")
    sctx = dtls_ctx(prov, log, verify=False)
    cctx = dtls_ctx(prov, log, verify=False, client_cert=client_pem)
    orig = dtls_mod.SRTP_PROFILES
    dtls_mod.SRTP_PROFILES = b"SRTP_AES128_CM_SHA1_80"  # read by the listener at Listen
    try:
        srv2 = Server(mux, log, prov, sctx)
    finally:
        dtls_mod.SRTP_PROFILES = orig
    cli, crec = connect(mux, log, prov, cctx, srv2.port, None)
    peer = wait_connected(mux, srv2, crec)
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    leaf = x509.load_pem_x509_certificates(client_pem)[0]
    assert (
        dsock(peer).GetPeerCertificateFingerprint()
        == hashlib.sha256(leaf.public_bytes(Encoding.DER)).digest()
    )
    assert (
        dsock(cli).GetPeerCertificateFingerprint()
        == hashlib.sha256(default_server_cert().leaf_der).digest()
    )
    assert dsock(cli).GetSrtpProfile() == "SRTP_AES128_CM_SHA1_80"
    keys = dsock(cli).GetSrtpKeys()
    assert keys is not None and len(keys) == 60 and keys == dsock(peer).GetSrtpKeys()
    call(crec, cli.Shutdown)
    mux.run_until(lambda: srv2.recs[0].shutdown is not None and crec.shutdown is not None)
    ended_once(crec, R.SOCKET_SHUTDOWN_NORMAL)
    ended_once(srv2.recs[0], R.SOCKET_SHUTDOWN_BY_PEER)
    delete(cli)
    srv2.close()


def test_several_peers_on_one_server_socket(
    mux: Mux, log: IInstanceLog, ca: Any, prov: ISocketProvider
) -> None:
    """Four clients (chain and name verified) on one bound UDP port: each peer gets its
    own records; the listener's Shutdown leaves the established peers running."""
    sctx = dtls_ctx(prov, log, cert=pem_of(ca, "localhost"))
    cctx = dtls_ctx(prov, log, trust=ca.cert_pem.bytes())
    srv = Server(mux, log, prov, sctx)
    clients = [connect(mux, log, prov, cctx, srv.port, "localhost") for _ in range(4)]
    mux.run_until(
        lambda: len(srv.socks) == 4 and all("connect" in r.names() for _, r in clients),
        what="four handshakes",
    )
    assert len(peers_of(srv.listener)) == 4
    assert [r.names() for r in srv.recs] == [["accept"]] * 4
    call(srv.lrec, srv.listener.Shutdown)
    mux.run_until(lambda: srv.lrec.shutdown is not None)
    ended_once(srv.lrec, R.SOCKET_SHUTDOWN_NORMAL)
    for i in range(4):
        srv.socks[i].Recv(bytearray(64))
    for i, (c, r) in enumerate(clients):
        call(r, c.Send, f"client {i}".encode())
    mux.run_until(lambda: all(r.received for r in srv.recs))
    # the peer sockets appear in accept order; match them to clients by content
    got = sorted(bytes(r.received) for r in srv.recs)
    assert got == [f"client {i}".encode() for i in range(4)]
    for c, r in clients:
        call(r, c.Shutdown)
    mux.run_until(lambda: all(r.shutdown is not None for r in srv.recs))
    for r in srv.recs:
        ended_once(r, R.SOCKET_SHUTDOWN_BY_PEER)
    for _, r in clients:
        ended_once(r, R.SOCKET_SHUTDOWN_NORMAL)
    assert peers_of(srv.listener) == {}
    delete(*(c for c, _ in clients))
    srv.close()


def test_upgrade_a_connected_udp_socket(mux: Mux, log: IInstanceLog, prov: ISocketProvider) -> None:
    """UpgradeToTLSSocket on a connected UDP socket: SocketUpgradeToTLSComplete, data,
    and deleting the DTLS socket deletes the UDP one."""
    sctx = dtls_ctx(prov, log)
    srv = Server(mux, log, prov, sctx)
    udp, urec = connected_udp(mux, log, srv.port)
    with pytest.raises(SocketModeError, match="already speaks DTLS"):
        prov.UpgradeToTLSSocket(srv.listener, mux, Recorder(), log, False, sctx)
    drec = Recorder("dtls")
    cctx = dtls_ctx(prov, log, verify=False)
    d = call(drec, prov.UpgradeToTLSSocket, udp, mux, drec, log, False, cctx)
    mux.run_until(lambda: drec.events != [] and 0 in srv.socks)
    assert drec.names() == ["upgraded"]
    assert dsock(d).GetSrtpKeys() == dsock(srv.socks[0]).GetSrtpKeys() is not None
    srv.socks[0].Recv(bytearray(100))
    call(drec, d.Send, b"over the upgraded socket")
    mux.run_until(lambda: bool(srv.recs[0].received))
    assert srv.recs[0].received == b"over the upgraded socket"
    d.Delete()
    assert udp._state.value == "deleted"  # type: ignore[attr-defined]
    with pytest.raises(SocketModeError):
        udp.Send(b"x")
    assert urec.names() == ["connect"]  # the UDP socket's user heard nothing more
    srv.close()


# --------------------------------------------------------------------------- MTU and loss


def test_handshake_and_records_respect_the_mtu(
    mux: Mux, log: IInstanceLog, ca: Any, prov: ISocketProvider
) -> None:
    """With a 300-byte path MTU every datagram (handshake flights with certificates,
    records) is at most 300 bytes; a Send one byte over the cleartext MTU raises."""
    mtu = 300
    sctx = dtls_ctx(prov, log, cert=pem_of(ca, "localhost"))
    srv = Server(mux, log, prov, sctx)
    dsock(srv.listener).SetMtu(mtu)
    relay = Relay(mux, srv.port, lambda d, b: False)
    crec = Recorder("client")
    cli = prov.CreateSocket(mux, crec, log, False, dtls_ctx(prov, log, verify=False))
    dsock(cli).SetMtu(mtu)
    call(crec, cli.Connect, f"127.0.0.1:{relay.port}")
    peer = wait_connected(mux, srv, crec)
    limit = dsock(cli).GetCleartextMtu()
    assert limit == mtu - dtls_mod.RECORD_OVERHEAD
    with pytest.raises(ValueError, match="cleartext MTU"):
        cli.Send(bytes(limit + 1))
    peer.Recv(bytearray(limit + 100))
    call(crec, cli.Send, bytes(range(256)) * 2, limit)
    mux.run_until(lambda: bool(srv.recs[0].received))
    assert srv.recs[0].received == (bytes(range(256)) * 2)[:limit]
    sizes = [s for _, s, _ in relay.seen]
    assert max(sizes) <= mtu, sizes
    assert max(sizes) > mtu - 40  # records were packed up to the MTU
    assert sum(1 for d, _, _ in relay.seen if d == "s2c") >= 4  # the server flight was split
    relay.close()
    delete(cli)
    srv.close()


def _drop_first_two_client_datagrams() -> Any:
    count = [0]

    def drop(direction: str, data: bytes) -> bool:
        if direction != "c2s":
            return False
        count[0] += 1
        return count[0] <= 2

    return drop


@pytest.mark.timeout(40)
def test_handshake_survives_lost_datagrams(
    mux: Mux, log: IInstanceLog, prov: ISocketProvider
) -> None:
    """End to end on the loop's real timers: a relay loses the client's first two
    datagrams in a row (the resend backs off), and the handshake completes with the same
    keys on both sides. Loss of each flight, random loss and reordering are covered on
    a simulated clock by test_dtls_core.py."""
    srv = Server(mux, log, prov, dtls_ctx(prov, log))
    relay = Relay(mux, srv.port, _drop_first_two_client_datagrams())
    cctx = dtls_ctx(prov, log, verify=False)
    cli, crec = connect(mux, log, prov, cctx, relay.port, None)
    peer = wait_connected(mux, srv, crec, timeout=25)
    assert relay.dropped() >= 2
    assert dsock(cli).GetSrtpKeys() == dsock(peer).GetSrtpKeys() is not None
    peer.Recv(bytearray(100))
    call(crec, cli.Send, b"after the losses")
    mux.run_until(lambda: bool(srv.recs[0].received))
    assert srv.recs[0].received == b"after the losses"
    relay.close()
    delete(cli)
    srv.close()


# --------------------------------------------------------------------------- bad input


def test_garbage_datagrams_leave_no_trace(
    mux: Mux, log: IInstanceLog, prov: ISocketProvider
) -> None:
    """Random bytes, truncated and malformed records to a listening socket: no listen
    result, no peer state; a real client connects afterwards."""
    srv = Server(mux, log, prov, dtls_ctx(prov, log))
    rng = random.Random(7)
    junk = [rng.randbytes(rng.randint(1, 1400)) for _ in range(60)]
    junk += [record(22, 0, 0, rng.randbytes(40))[:n] for n in (1, 13, 20, 53)]
    junk += [record(22, 0, 0, bytes([1]) + rng.randbytes(80)) for _ in range(10)]
    junk += [record(23, 1, 5, rng.randbytes(100)), b""]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for j in junk:
            s.sendto(j, ("127.0.0.1", srv.port))
        mux.run_for(0.2)
    assert srv.lrec.names() == ["bind"]
    assert peers_of(srv.listener) == {}
    cli, crec = connect(mux, log, prov, dtls_ctx(prov, log, verify=False), srv.port, None)
    wait_connected(mux, srv, crec)
    delete(cli)
    srv.close()


def test_client_hello_flood_without_cookies_allocates_nothing(
    mux: Mux, log: IInstanceLog, prov: ISocketProvider
) -> None:
    """ClientHellos without a cookie from many sources each get a HelloVerifyRequest and
    nothing else: the peer table stays empty, the app hears nothing."""
    srv = Server(mux, log, prov, dtls_ctx(prov, log))
    clients = [RawClient(srv.port) for _ in range(30)]
    try:
        hello = clients[0].client_hello()
        for _ in range(3):
            for c in clients:
                c.send(hello)
        mux.run_until(lambda: all(c.poll() or c.replies for c in clients), what="replies")
        mux.run_for(0.05)
        for c in clients:
            for r in c.replies:
                assert r[0] == 22 and r[13] == 3, r[:16]  # HelloVerifyRequest
        assert peers_of(srv.listener) == {}
        assert srv.lrec.names() == ["bind"]
        # a stale cookie from another source is no good either
        a, b = clients[0], clients[1]
        a.replies = [a.replies[0]]
        a.conn.bio_write(a.replies.pop())
        try:
            a.conn.do_handshake()
        except Exception:
            pass
        second = a.conn.bio_read(65536)
        b.send(second)
        mux.run_until(lambda: b.poll(), what="a HelloVerifyRequest for the replayed cookie")
        assert b.replies[-1][0] == 22 and b.replies[-1][13] == 3
        assert peers_of(srv.listener) == {}
        assert srv.lrec.names() == ["bind"]
    finally:
        for c in clients:
            c.close()
    srv.close()


def test_peer_caps(
    mux: Mux, log: IInstanceLog, prov: ISocketProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With one handshake slot, a second peer is dropped while the first stalls in its
    handshake; once the slot is free the next one is served. With one peer slot, a
    third is dropped while the second is established."""
    monkeypatch.setattr(dtls_mod, "MAX_HANDSHAKING_PEERS", 1)
    srv = Server(mux, log, prov, dtls_ctx(prov, log))
    raw = RawClient(srv.port)
    try:
        raw.send(raw.client_hello())
        mux.run_until(raw.poll, what="HelloVerifyRequest")
        raw.answer()  # ClientHello with the cookie: a peer in handshake
        mux.run_until(lambda: len(peers_of(srv.listener)) == 1, what="the stalled peer")
        cli, crec = connect(mux, log, prov, dtls_ctx(prov, log, verify=False), srv.port, None)
        mux.run_for(0.3)
        assert crec.events == [] and len(srv.recs) == 1
        stalled = next(iter(peers_of(srv.listener).values()))
        stalled.Delete()
        assert peers_of(srv.listener) == {}
        mux.run_until(lambda: "connect" in crec.names(), 10, "the second client's retransmit")
        assert len(peers_of(srv.listener)) == 1
        # one established peer and MAX_PEERS=1: the next one is dropped as well
        monkeypatch.setattr(dtls_mod, "MAX_PEERS", 1)
        cli3, crec3 = connect(mux, log, prov, dtls_ctx(prov, log, verify=False), srv.port, None)
        mux.run_for(0.3)
        assert crec3.events == [] and len(srv.recs) == 2
        assert len(peers_of(srv.listener)) == 1
        delete(cli, cli3)
    finally:
        raw.close()
    srv.close()


def test_untrusted_and_misnamed_certificates_fail(
    mux: Mux, log: IInstanceLog, ca: Any, prov: ISocketProvider
) -> None:
    """A server certificate from an unknown CA, or for another name, is
    SOCKET_TLS_HANDSHAKE_FAILED on the client and on the server's peer socket."""
    sctx = dtls_ctx(prov, log, cert=pem_of(ca, "localhost"))
    srv = Server(mux, log, prov, sctx)
    import trustme

    other = trustme.CA()
    cases = [(other.cert_pem.bytes(), "localhost"), (ca.cert_pem.bytes(), "other.example")]
    for trust, name in cases:
        cli, crec = connect(mux, log, prov, dtls_ctx(prov, log, trust=trust), srv.port, name)
        mux.run_until(lambda: crec.shutdown is not None)  # noqa: B023
        ended_once(crec, R.SOCKET_TLS_HANDSHAKE_FAILED)
        assert crec.names() == ["shutdown"]
        c = dsock(cli)
        assert c._timer is None and c._core is None and c._ep is None
        delete(cli)
    mux.run_until(lambda: all(r.shutdown is not None for r in srv.recs))
    assert len(srv.recs) == 2
    for r in srv.recs:
        ended_once(r, R.SOCKET_TLS_HANDSHAKE_FAILED)
    assert peers_of(srv.listener) == {}
    srv.close()


def test_client_certificate_required(
    mux: Mux, log: IInstanceLog, ca: Any, prov: ISocketProvider
) -> None:
    """A server given trusted CAs requires a client certificate: without one the
    handshake fails on both sides; with one it passes."""
    sctx = dtls_ctx(prov, log, cert=pem_of(ca, "localhost"), trust=ca.cert_pem.bytes())
    srv = Server(mux, log, prov, sctx)
    trust = ca.cert_pem.bytes()
    cli, crec = connect(mux, log, prov, dtls_ctx(prov, log, trust=trust), srv.port)
    mux.run_until(
        lambda: crec.shutdown is not None and bool(srv.recs) and srv.recs[0].shutdown is not None
    )
    ended_once(crec, R.SOCKET_TLS_HANDSHAKE_FAILED)
    ended_once(srv.recs[0], R.SOCKET_TLS_HANDSHAKE_FAILED)
    cctx = dtls_ctx(prov, log, trust=trust, client_cert=pem_of(ca, "client.example"))
    cli2, crec2 = connect(mux, log, prov, cctx, srv.port)
    mux.run_until(lambda: "connect" in crec2.names() and 1 in srv.socks)
    assert srv.recs[1].names() == ["accept"]
    assert dsock(srv.socks[1]).GetPeerCertificateFingerprint() is not None
    delete(cli, cli2)
    srv.close()


def test_no_common_srtp_profile_fails(mux: Mux, log: IInstanceLog, prov: ISocketProvider) -> None:
    """A client that wants SRTP against a server that offers none: the client's
    handshake fails; the server's peer, which wanted no SRTP, sees close_notify."""
    srv = Server(mux, log, prov, dtls_ctx(prov, log, srtp=False))
    cli, crec = connect(mux, log, prov, dtls_ctx(prov, log, verify=False), srv.port, None)
    mux.run_until(
        lambda: crec.shutdown is not None and bool(srv.recs) and srv.recs[0].shutdown is not None
    )
    ended_once(crec, R.SOCKET_TLS_HANDSHAKE_FAILED)
    assert crec.names() == ["shutdown"]
    assert dsock(cli).GetSrtpKeys() is None
    ended_once(srv.recs[0], R.SOCKET_SHUTDOWN_BY_PEER)
    delete(cli)
    srv.close()


def test_denied_peer_and_deadline(
    mux: Mux, log: IInstanceLog, prov: ISocketProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Accept(None) denies: the client gets a fatal alert at once. A server that never
    answers: the handshake deadline fails the client, with every timer cancelled."""
    srv = Server(mux, log, prov, dtls_ctx(prov, log))
    srv.lrec.hooks["listen"] = lambda s, a, p: s.Accept(None)
    cctx = dtls_ctx(prov, log, verify=False)
    cli, crec = connect(mux, log, prov, cctx, srv.port, None)
    mux.run_until(lambda: crec.shutdown is not None, 5)
    ended_once(crec, R.SOCKET_TLS_HANDSHAKE_FAILED)
    assert srv.lrec.names() == ["bind", "listen"] and srv.recs == []
    assert peers_of(srv.listener) == {}
    srv.lrec.hooks["listen"] = lambda s, a, p: None  # no decision denies too
    cli3, crec3 = connect(mux, log, prov, cctx, srv.port, None)
    mux.run_until(lambda: crec3.shutdown is not None, 5)
    ended_once(crec3, R.SOCKET_TLS_HANDSHAKE_FAILED)
    assert srv.lrec.names() == ["bind", "listen", "listen"] and srv.recs == []
    monkeypatch.setattr(dtls_mod, "HANDSHAKE_TIMEOUT", 0.3)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as mute:
        mute.bind(("127.0.0.1", 0))
        cli2, crec2 = connect(mux, log, prov, cctx, mute.getsockname()[1], None)
        mux.run_until(lambda: crec2.shutdown is not None, 5)
        assert mute.recv(2048)[0] == 22  # it did send its ClientHello
    ended_once(crec2, R.SOCKET_TLS_HANDSHAKE_FAILED)
    c = dsock(cli2)
    assert c._timer is None and c._core is None and c._ep is None
    delete(cli, cli2, cli3)
    srv.close()


def test_a_closed_port_is_connect_rejected(
    mux: Mux, log: IInstanceLog, prov: ISocketProvider
) -> None:
    """Nobody serves the port: the kernel's port-unreachable ends the handshake with
    SOCKET_CONNECT_REJECTED, every timer cancelled."""
    from kit.loop import free_port

    port = free_port(socket.AF_INET, socket.SOCK_DGRAM)
    cli, crec = connect(mux, log, prov, dtls_ctx(prov, log, verify=False), port, None)
    mux.run_until(lambda: crec.shutdown is not None, 5)
    ended_once(crec, R.SOCKET_CONNECT_REJECTED)
    c = dsock(cli)
    assert c._timer is None and c._core is None and c._ep is None
    delete(cli)


def test_mistakes_raise_at_once(mux: Mux, log: IInstanceLog, prov: ISocketProvider) -> None:
    """Callers' mistakes raise SocketModeError/ValueError with a sentence; Delete during
    a handshake silences the socket for good."""
    ctx = dtls_ctx(prov, log, verify=False)
    rec = Recorder()
    s = dsock(prov.CreateSocket(mux, rec, log, False, ctx))
    with pytest.raises(SocketModeError, match="Connect"):
        s.Send(b"x")
    with pytest.raises(SocketModeError, match="SocketListenResult"):
        s.Accept(Recorder())
    with pytest.raises(SocketModeError, match="Bind first"):
        s.Listen()
    for bad in (100, 70000):
        with pytest.raises(ValueError, match="SetMtu"):
            s.SetMtu(bad)
    with pytest.raises(ValueError, match="cleartext MTU"):
        s.Send(bytes(s.GetCleartextMtu() + 1))
    srv = Server(mux, log, prov, dtls_ctx(prov, log))
    with pytest.raises(SocketModeError, match="listening"):
        srv.listener.Send(b"x")
    with pytest.raises(SocketModeError):
        srv.listener.Connect("127.0.0.1:1")
    call(rec, s.Connect, f"127.0.0.1:{srv.port}")
    with pytest.raises(SocketModeError):
        s.Bind()
    with pytest.raises(ValueError, match="empty"):
        s.Send(b"")
    s.Delete()
    with pytest.raises(SocketModeError, match="Delete"):
        s.Send(b"x")
    mux.run_for(0.3)
    assert rec.events == []
    srv.close()


def test_the_state_table() -> None:
    """Every state has its row; the end states lead nowhere but DELETED; _set_state
    refuses a move the table does not hold."""
    from usocket_asyncio._base import State

    table = dtls_mod.DTLS_TRANSITIONS
    assert set(table) == set(State) - {State.CLOSING}
    assert table[State.DELETED] == frozenset()
    assert table[State.CLOSED] == frozenset({State.DELETED})
    assert all(State.DELETED in moves for s, moves in table.items() if s is not State.DELETED)
    s = DTLSSocket.__new__(DTLSSocket)
    s._state = State.LISTENING
    with pytest.raises(SocketModeError, match="cannot become connected"):
        s._set_state(State.CONNECTED)
