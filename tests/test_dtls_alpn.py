"""DTLS ALPN and SNI: the server's order of preference, the app's veto on both sides,
and the server certificate picked by the client's SNI.

Each test runs on asyncio and uvloop (the `mux` fixture) and checks the callbacks in
order, exactly one `SocketShutdown` per socket with the right reason, nothing after it,
and nothing in the loop's exception handler.
"""

from __future__ import annotations

import hashlib
import random
import shutil
from typing import Any

import pytest
from kit.certs import Server, connect, delete, ended_once, make_ctx, pem_of, refuse_alpn
from kit.conformance import call
from kit.dtls import answer_once, connected_udp, dtls_ctx
from kit.loop import Mux, R, Recorder
from kit.peers import peer, wait_for_exit

from usocket_asyncio import (
    IInstanceLog,
    ISocket,
    ISocketProvider,
)
from usocket_asyncio._context import parse_cert_key
from usocket_asyncio._dtls import DTLSSocket


def dsock(s: ISocket) -> DTLSSocket:
    assert isinstance(s, DTLSSocket)
    return s


def fingerprint(pem: bytes) -> bytes:
    """SHA-256 of the DER of the leaf certificate in a key + chain PEM buffer."""
    return hashlib.sha256(parse_cert_key(pem).leaf_der).digest()


def handshake(
    mux: Mux,
    srv: Server,
    crec: Recorder,
    client_ends: bool = False,
    server_ends: bool = False,
    client_ready: str = "connect",
) -> Recorder:
    """Run until the client is ready (`client_ready` reported) or ended (with
    `client_ends`: ended) and the server's peer accepted or ended (likewise); returns
    the server peer's recorder."""

    def done(rec: Recorder, ready: str, ends: bool) -> bool:
        ended = rec.shutdown is not None
        return ended if ends else ended or ready in rec.names()

    mux.run_until(
        lambda: (
            done(crec, client_ready, client_ends)
            and bool(srv.recs)
            and done(srv.recs[0], "accept", server_ends)
        ),
        10,
        "the handshake",
    )
    return srv.recs[0]


def exchange(mux: Mux, cli: ISocket, crec: Recorder, peer: ISocket, prec: Recorder) -> None:
    """A few seeded random records each way, hashed; then the client shuts down."""
    rng = random.Random(7)
    up = [rng.randbytes(rng.randint(1, 1000)) for _ in range(8)]
    down = [rng.randbytes(rng.randint(1, 1000)) for _ in range(8)]
    for _ in up:
        call(prec, peer.Recv, bytearray(2048))
        call(crec, cli.Recv, bytearray(2048))
    for u, d in zip(up, down, strict=True):
        call(crec, cli.Send, u)
        call(prec, peer.Send, d)
    mux.run_until(
        lambda: crec.names().count("recv") == len(down) and prec.names().count("recv") == len(up),
        10,
        "the records",
    )
    assert hashlib.sha256(prec.received).digest() == hashlib.sha256(b"".join(up)).digest()
    assert hashlib.sha256(crec.received).digest() == hashlib.sha256(b"".join(down)).digest()
    call(crec, cli.Shutdown)
    mux.run_until(lambda: crec.shutdown is not None and prec.shutdown is not None)
    ended_once(crec, R.SOCKET_SHUTDOWN_NORMAL)
    ended_once(prec, R.SOCKET_SHUTDOWN_BY_PEER)


# --------------------------------------------------------------------------- ALPN


@pytest.mark.parametrize("srtp", [False, True], ids=["plain", "srtp"])
def test_alpn_by_the_servers_order_on_both_sides(
    mux: Mux, log: IInstanceLog, prov: ISocketProvider, srtp: bool
) -> None:
    """The client prefers http/1.1, the server h2: both sides are offered h2 (with the
    socket that negotiated it) before Connect/AcceptComplete; then data flows."""
    sctx = dtls_ctx(prov, log, srtp, alpn=["h2", "x-other", "http/1.1"])
    cctx = dtls_ctx(prov, log, srtp, alpn=["http/1.1", "h2"], verify=False)
    srv = Server(mux, log, prov, sctx)
    cli, crec = connect(mux, log, prov, cctx, srv.port, None)
    seen: list[ISocket] = []
    crec.hooks["alpn"] = lambda s, p: seen.append(s)
    prec = handshake(mux, srv, crec)
    assert crec.events == [("alpn", "h2"), ("connect",)], crec.events
    assert prec.events == [("alpn", "h2"), ("accept",)], prec.events
    assert seen == [cli]
    peer = srv.socks[0]
    if srtp:
        assert dsock(cli).GetSrtpKeys() == dsock(peer).GetSrtpKeys() is not None
    exchange(mux, cli, crec, peer, prec)
    assert mux.take_errors() == []
    delete(cli)
    srv.close()


@pytest.mark.parametrize("kind", ["dtls", "tls"])
@pytest.mark.parametrize(
    ("server", "client"),
    [(["a-proto"], ["b-proto"]), (["a-proto"], None), (None, ["b-proto"])],
    ids=["no-overlap", "server-only", "client-only"],
)
def test_no_common_alpn_protocol_connects_without_one(
    mux: Mux,
    log: IInstanceLog,
    ca: Any,
    prov: ISocketProvider,
    server: list[str] | None,
    client: list[str] | None,
    kind: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """DTLS as TLS (checked side by side): without a protocol both lists share, the
    handshake completes without ALPN and neither side's SocketAcceptSelectedALPNProtocol
    runs; a DTLS server with a list logs what the client offered."""
    caplog.set_level("DEBUG")
    cert = pem_of(ca, "localhost")
    if kind == "dtls":
        sctx = dtls_ctx(prov, log, False, alpn=server, cert=cert)
        cctx = dtls_ctx(prov, log, False, alpn=client, trust=ca.cert_pem.bytes())
    else:
        sctx = make_ctx(prov, log, alpn=server, cert=cert)
        cctx = make_ctx(prov, log, alpn=client, trust=ca.cert_pem.bytes())
    srv = Server(mux, log, prov, sctx)
    cli, crec = connect(mux, log, prov, cctx, srv.port, "localhost")
    prec = handshake(mux, srv, crec)
    assert crec.events == [("connect",)], crec.events
    assert prec.events == [("accept",)], prec.events
    if kind == "dtls":
        if server and client:
            assert "no common protocol: the client offered [b'b-proto']" in caplog.text
        exchange(mux, cli, crec, srv.socks[0], prec)
    else:
        call(crec, cli.Shutdown)
        mux.run_until(lambda: crec.shutdown is not None and prec.shutdown is not None)
        ended_once(crec, R.SOCKET_SHUTDOWN_NORMAL)
        ended_once(prec, R.SOCKET_SHUTDOWN_BY_PEER)
    delete(cli)
    srv.close()


@pytest.mark.parametrize("side", ["client", "server"])
def test_alpn_refused(
    mux: Mux, log: IInstanceLog, prov: ISocketProvider, side: str, caplog: pytest.LogCaptureFixture
) -> None:
    """False from SocketAcceptSelectedALPNProtocol ends that side with
    SOCKET_ALPN_SELECTION_FAILED (nothing else reported, the refusal logged); its
    close_notify reaches the other side, which completes its handshake and then ends
    with SOCKET_SHUTDOWN_BY_PEER."""
    caplog.set_level("DEBUG")
    sctx = dtls_ctx(prov, log, alpn=["x-proto"])
    cctx = dtls_ctx(prov, log, alpn=["x-proto"], verify=False)
    srv = Server(mux, log, prov, sctx)
    crec = Recorder("client")
    refuse_alpn(srv, crec, side)
    cli, _ = connect(mux, log, prov, cctx, srv.port, None, rec=crec)
    prec = handshake(mux, srv, crec, client_ends=True, server_ends=True)
    refuser, other, ready = (crec, prec, "accept") if side == "client" else (prec, crec, "connect")
    assert refuser.events == [("alpn", "x-proto"), ("shutdown", R.SOCKET_ALPN_SELECTION_FAILED)]
    assert other.events == [("alpn", "x-proto"), (ready,), ("shutdown", R.SOCKET_SHUTDOWN_BY_PEER)]
    for rec in (refuser, other):
        assert not rec.violations, rec.violations
    assert "the app refused 'x-proto'" in caplog.text
    assert mux.take_errors() == []
    delete(cli)
    srv.close()


def test_shutdown_inside_the_alpn_callback(
    mux: Mux, log: IInstanceLog, prov: ISocketProvider
) -> None:
    """Shutdown called from SocketAcceptSelectedALPNProtocol ends the client with
    SOCKET_SHUTDOWN_NORMAL (no SocketConnectComplete; a Send made in the callback is
    dropped with it) and close_notify ends the server's peer with BY_PEER."""
    sctx = dtls_ctx(prov, log, alpn=["x-proto"])
    cctx = dtls_ctx(prov, log, alpn=["x-proto"], verify=False)
    srv = Server(mux, log, prov, sctx)
    crec = Recorder("client")

    def shut(sock: ISocket, proto: str) -> bool:
        sock.Send(b"never sent")
        sock.Shutdown()
        return True

    crec.hooks["alpn"] = shut
    cli, _ = connect(mux, log, prov, cctx, srv.port, None, rec=crec)
    prec = handshake(mux, srv, crec, client_ends=True, server_ends=True)
    assert crec.events == [("alpn", "x-proto"), ("shutdown", R.SOCKET_SHUTDOWN_NORMAL)]
    assert prec.events == [
        ("alpn", "x-proto"),
        ("accept",),
        ("shutdown", R.SOCKET_SHUTDOWN_BY_PEER),
    ]
    assert not crec.violations and not prec.violations
    delete(cli)
    srv.close()


def test_alpn_on_an_upgraded_udp_socket(mux: Mux, log: IInstanceLog, prov: ISocketProvider) -> None:
    """A connected UDP socket upgraded with UpgradeToTLSSocket offers its list; the
    server's order wins; the upgraded socket is offered the protocol before
    SocketUpgradeToTLSComplete."""
    sctx = dtls_ctx(prov, log, False, alpn=["b", "a"])
    cctx = dtls_ctx(prov, log, False, alpn=["a", "b"], verify=False)
    srv = Server(mux, log, prov, sctx)
    udp, _ = connected_udp(mux, log, srv.port)
    crec = Recorder("dtls")
    cli = call(crec, prov.UpgradeToTLSSocket, udp, mux, crec, log, False, cctx)
    prec = handshake(mux, srv, crec, client_ready="upgraded")
    assert crec.events == [("alpn", "b"), ("upgraded",)], crec.events
    assert prec.events == [("alpn", "b"), ("accept",)], prec.events
    exchange(mux, cli, crec, srv.socks[0], prec)
    delete(cli)
    srv.close()


# --------------------------------------------------------------------------- SNI


@pytest.mark.parametrize(
    ("server_name", "which"),
    [("b.example", "b"), ("B.Example", "b"), ("localhost", "default"), (None, "default")],
    ids=["named", "case", "other-name", "no-sni"],
)
def test_sni_selects_the_server_certificate(
    mux: Mux, log: IInstanceLog, ca: Any, prov: ISocketProvider, server_name: str | None, which: str
) -> None:
    """A certificate set with hostName serves clients asking for that name by SNI
    (names compare without case); others get the one set without a name. The client
    verifies the chain and the name and sees the fingerprint of the certificate it got.
    The context switched to by SNI keeps ALPN and SRTP."""
    default_pem = pem_of(ca, "localhost", "127.0.0.1")
    b_pem = pem_of(ca, "b.example")
    sctx = dtls_ctx(prov, log, alpn=["h2", "http/1.1"], cert=default_pem)
    sctx.SetServerCertificate(b_pem, hostName="B.example")
    cctx = dtls_ctx(prov, log, alpn=["http/1.1", "h2"], trust=ca.cert_pem.bytes())
    srv = Server(mux, log, prov, sctx)
    cli, crec = connect(mux, log, prov, cctx, srv.port, server_name)
    prec = handshake(mux, srv, crec)
    assert crec.events == [("alpn", "h2"), ("connect",)], crec.events
    assert prec.events == [("alpn", "h2"), ("accept",)], prec.events
    want = fingerprint(b_pem if which == "b" else default_pem)
    assert dsock(cli).GetPeerCertificateFingerprint() == want
    assert sctx.GetCertificateFingerprint() == fingerprint(default_pem)
    peer = dsock(srv.socks[0])
    assert dsock(cli).GetSrtpKeys() == peer.GetSrtpKeys() is not None
    exchange(mux, cli, crec, srv.socks[0], prec)
    delete(cli)
    srv.close()


# --------------------------------------------------------------------------- interop


@pytest.mark.interop
@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
@pytest.mark.timeout(30)
def test_s_client_alpn_and_sni_against_library_server(
    mux: Mux, log: IInstanceLog, ca: Any, prov: ISocketProvider, files: dict[str, str]
) -> None:
    """`openssl s_client -dtls1_2 -alpn http/1.1,h2 -servername b.example`: the library
    server picks h2 (its order) and the b.example certificate, which s_client verifies
    (chain and name, return code 0); a line each way, then close_notify."""
    sctx = dtls_ctx(prov, log, False, alpn=["h2", "http/1.1"], cert=pem_of(ca, "localhost"))
    sctx.SetServerCertificate(pem_of(ca, "b.example"), hostName="b.example")
    srv = Server(mux, log, prov, sctx)
    answer_once(srv, b"hello from the library\n")
    args = ["openssl", "s_client", "-dtls1_2", "-connect", f"127.0.0.1:{srv.port}"]
    args += ["-alpn", "http/1.1,h2", "-servername", "b.example"]
    args += ["-CAfile", files["ca"], "-verify_hostname", "b.example", "-verify_return_error"]
    args += ["-mtu", "1200", "-ign_eof"]
    with peer(args, b"hello from s_client\n") as proc:
        text = wait_for_exit(mux, proc, "s_client to finish")
    assert "ALPN protocol: h2" in text, text
    assert "Verify return code: 0 (ok)" in text, text
    assert "hello from the library" in text, text
    assert len(srv.recs) == 1
    rec = srv.recs[0]
    mux.run_until(lambda: rec.shutdown is not None)
    assert rec.names() == ["alpn", "accept", "recv", "send", "shutdown"], rec.events
    assert rec.events[0] == ("alpn", "h2")
    ended_once(rec, R.SOCKET_SHUTDOWN_NORMAL)
    assert bytes(rec.received) == b"hello from s_client\n"
    srv.close()
