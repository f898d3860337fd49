"""TLS between library sockets: data, ALPN, SNI, client certificates, every failure, upgrades.

Each test runs on asyncio and uvloop (the `mux` fixture) and checks exactly one
`SocketShutdown` per socket with the right reason, nothing after it, and nothing in the
loop's exception handler.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import logging
import random
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any

import pytest
from kit.certs import VERSIONS, Server, connect, delete, ended_once, make_ctx, pem_of, refuse_alpn
from kit.conformance import Pump, call, sha
from kit.loop import Mux, R, Recorder, free_port
from kit.streams import captured_log

import usocket_asyncio as u
import usocket_asyncio._tls as tls_mod
from usocket_asyncio import (
    CreateTCPSocketProvider,
    CreateTLSSocketProvider,
    IInstanceLog,
    ISocket,
    ISocketProvider,
    ShutdownReason,
    SocketModeError,
)
from usocket_asyncio._context import default_server_cert

# --------------------------------------------------------------------------- helpers


def raw_eof(sock: ISocket) -> None:
    """Half-close the TCP connection under a TLS socket: an EOF without close_notify."""
    tr = sock._tr  # type: ignore[attr-defined]
    fd = tr.get_extra_info("socket").fileno()
    dup = socket.socket(fileno=__import__("os").dup(fd))
    try:
        dup.shutdown(socket.SHUT_WR)
    finally:
        dup.close()


# --------------------------------------------------------------------------- success


@pytest.mark.timeout(60)
@pytest.mark.parametrize("version", list(VERSIONS))
def test_megabytes_alpn_sni_client_certificate(
    mux: Mux, log: IInstanceLog, ca: Any, prov: ISocketProvider, version: str
) -> None:
    """Both ways at once, hashed; the server picks ALPN by its own order; SNI picks the
    certificate for the name asked; the server requires and gets a client certificate."""
    ca_pem = ca.cert_pem.bytes()
    sctx = make_ctx(
        prov, log, cert=pem_of(ca, "localhost", "127.0.0.1"), trust=ca_pem,
        alpn=["h2", "http/1.1"], version=version,
    )  # fmt: skip
    sctx.SetServerCertificate(pem_of(ca, "alt.example"), None, "alt.example")
    cctx = make_ctx(
        prov, log, client_cert=pem_of(ca, "client.example"), trust=ca_pem,
        alpn=["http/1.1", "h2"], version=version,
    )  # fmt: skip
    srv = Server(mux, log, prov, sctx)
    client, crec = connect(mux, log, prov, cctx, srv.port, "alt.example")
    mux.run_until(lambda: "connect" in crec.names() and bool(srv.socks), what="handshake")
    server, srec = srv.socks[0], srv.recs[0]
    assert crec.events == [("alpn", "h2"), ("connect",)]
    assert srec.events == [("alpn", "h2"), ("accept",)]
    sslobj = client._tr.get_extra_info("ssl_object")  # type: ignore[attr-defined]
    assert sslobj.version() == ("TLSv1.2" if version == "tls12" else "TLSv1.3")
    peer = server._tr.get_extra_info("peercert")  # type: ignore[attr-defined]
    assert ("DNS", "client.example") in peer["subjectAltName"], peer  # verified client cert
    rng = random.Random(5)
    a, b = rng.randbytes(2_000_000), rng.randbytes(2_500_000)
    pa = Pump(client, crec, a, len(b), 11)
    pb = Pump(server, srec, b, len(a), 12)
    pa.start()
    pb.start()
    mux.run_until(lambda: pa.done() and pb.done(), timeout=40, what="bulk")
    assert sha(crec.received) == sha(b) and sha(srec.received) == sha(a)
    call(crec, client.Shutdown)
    srec.hooks["recv"] = lambda *_: None
    call(srec, server.Recv, bytearray(1))
    mux.run_until(lambda: crec.shutdown is not None and srec.shutdown is not None)
    ended_once(crec, R.SOCKET_SHUTDOWN_NORMAL)
    ended_once(srec, R.SOCKET_SHUTDOWN_BY_PEER)
    delete(client)
    srv.close()


@pytest.mark.timeout(30)
def test_default_self_signed_certificate_and_fingerprint(
    mux: Mux, log: IInstanceLog, prov: ISocketProvider
) -> None:
    """A server without a certificate uses the per-process self-signed one; a verifying
    client rejects it, a client that opted out accepts it; the fingerprint matches."""
    sctx = make_ctx(prov, log)
    srv = Server(mux, log, prov, sctx)
    # verifying against the system store: the self-signed certificate is refused
    c1, r1 = connect(mux, log, prov, make_ctx(prov, log), srv.port)
    mux.run_until(lambda: r1.shutdown is not None, what="refusal")
    ended_once(r1, R.SOCKET_TLS_HANDSHAKE_FAILED)
    assert "connect" not in r1.names()
    # opting out of verification
    c2, r2 = connect(mux, log, prov, make_ctx(prov, log, verify=False), srv.port, None)
    mux.run_until(lambda: "connect" in r2.names(), what="connect")
    der = c2._tr.get_extra_info("ssl_object").getpeercert(binary_form=True)  # type: ignore[attr-defined]
    assert der == default_server_cert().leaf_der
    assert sctx.GetCertificateFingerprint() == hashlib.sha256(der).digest()
    assert make_ctx(prov, log).GetCertificateFingerprint() == sctx.GetCertificateFingerprint()
    mux.run_until(lambda: len(srv.recs) == 2 and srv.recs[0].shutdown is not None)
    ended_once(srv.recs[0], R.SOCKET_TLS_HANDSHAKE_FAILED)
    delete(c1, c2)
    srv.close()


@pytest.mark.timeout(30)
def test_a_new_certificate_applies_to_new_connections(
    mux: Mux, log: IInstanceLog, ca: Any, prov: ISocketProvider
) -> None:
    """One context shared by a listener; after SetServerCertificate the next connection
    gets the new certificate, the open one keeps working."""
    sctx = make_ctx(prov, log, cert=pem_of(ca, "localhost", "127.0.0.1"))
    srv = Server(mux, log, prov, sctx)
    cctx = make_ctx(prov, log, trust=ca.cert_pem.bytes())
    c1, r1 = connect(mux, log, prov, cctx, srv.port)
    mux.run_until(lambda: "connect" in r1.names())
    fp1 = sctx.GetCertificateFingerprint()
    sctx.SetServerCertificate(pem_of(ca, "localhost", "127.0.0.1"))
    assert sctx.GetCertificateFingerprint() != fp1
    c2, r2 = connect(mux, log, prov, cctx, srv.port)
    mux.run_until(lambda: "connect" in r2.names())
    for c, fp in ((c1, fp1), (c2, sctx.GetCertificateFingerprint())):
        der = c._tr.get_extra_info("ssl_object").getpeercert(binary_form=True)  # type: ignore[attr-defined]
        assert hashlib.sha256(der).digest() == fp
    mux.run_until(lambda: len(srv.socks) == 2)
    call(srv.recs[0], srv.socks[0].Recv, bytearray(2))
    call(r1, c1.Send, b"ok")
    mux.run_until(lambda: srv.recs[0].received == b"ok")
    delete(c1, c2)
    srv.close()


# --------------------------------------------------------------------------- failures


@pytest.mark.timeout(30)
@pytest.mark.parametrize("version", list(VERSIONS))
@pytest.mark.parametrize("case", ["untrusted", "wrong_name", "expired"])
def test_server_certificate_rejected(
    mux: Mux,
    log: IInstanceLog,
    ca: Any,
    prov: ISocketProvider,
    caplog: pytest.LogCaptureFixture,
    case: str,
    version: str,
) -> None:
    """Client: SOCKET_TLS_HANDSHAKE_FAILED, no SocketConnectComplete, the OpenSSL reason
    in the log; the accepted socket: SOCKET_TLS_HANDSHAKE_FAILED, no SocketAcceptComplete."""
    import trustme

    caplog.set_level(logging.INFO, logger="usocket_asyncio")
    trust = ca.cert_pem.bytes()
    cert = pem_of(ca, "localhost", "127.0.0.1")
    name = "localhost"
    if case == "untrusted":
        trust = trustme.CA().cert_pem.bytes()
    elif case == "wrong_name":
        name = "other.example"
    else:
        past = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
        cert = pem_of(
            ca, "localhost", not_before=past - datetime.timedelta(days=30), not_after=past
        )
    srv = Server(mux, log, prov, make_ctx(prov, log, cert=cert, version=version))
    client, crec = connect(mux, log, prov, make_ctx(prov, log, trust=trust), srv.port, name)
    mux.run_until(
        lambda: crec.shutdown is not None and bool(srv.recs) and srv.recs[0].shutdown is not None,
        what="both ends",
    )
    ended_once(crec, R.SOCKET_TLS_HANDSHAKE_FAILED)
    assert crec.names() == ["shutdown"]
    ended_once(srv.recs[0], R.SOCKET_TLS_HANDSHAKE_FAILED)
    assert srv.recs[0].names() == ["shutdown"]
    expect = {
        "untrusted": "unable to get local issuer certificate",
        "wrong_name": "Hostname mismatch",
        "expired": "certificate has expired",
    }[case]
    assert expect in caplog.text and "LOG_TLS" in caplog.text
    delete(client)
    srv.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("side", ["client", "server"])
def test_alpn_refused(
    mux: Mux, log: IInstanceLog, ca: Any, prov: ISocketProvider, side: str
) -> None:
    """SocketAcceptSelectedALPNProtocol returning False ends that socket with
    SOCKET_ALPN_SELECTION_FAILED before it reports the connection; the peer ends once."""
    sctx = make_ctx(prov, log, cert=pem_of(ca, "localhost"), alpn=["x-proto"])
    srv = Server(mux, log, prov, sctx)
    cctx = make_ctx(prov, log, trust=ca.cert_pem.bytes(), alpn=["x-proto"])
    crec = Recorder("client")
    refuse_alpn(srv, crec, side)
    client, _ = connect(mux, log, prov, cctx, srv.port, rec=crec)
    mux.run_until(
        lambda: crec.shutdown is not None and bool(srv.recs) and srv.recs[0].shutdown is not None,
        what="both ends",
    )
    refuser, other = (crec, srv.recs[0]) if side == "client" else (srv.recs[0], crec)
    assert refuser.events == [("alpn", "x-proto"), ("shutdown", R.SOCKET_ALPN_SELECTION_FAILED)]
    ended_once(other, R.SOCKET_SHUTDOWN_BY_PEER, R.SOCKET_LOST, R.SOCKET_TLS_HANDSHAKE_FAILED)
    delete(client)
    srv.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("version", list(VERSIONS))
def test_client_certificate_missing(
    mux: Mux, log: IInstanceLog, ca: Any, prov: ISocketProvider, version: str
) -> None:
    """A server with a trust bundle requires a client certificate: without one, the
    server's socket fails the handshake; the client ends once (TLS 1.3 clients finish
    their side first, then see the connection cut)."""
    ca_pem = ca.cert_pem.bytes()
    sctx = make_ctx(prov, log, cert=pem_of(ca, "localhost"), trust=ca_pem, version=version)
    srv = Server(mux, log, prov, sctx)
    client, crec = connect(mux, log, prov, make_ctx(prov, log, trust=ca_pem), srv.port)
    call(crec, client.Recv, bytearray(1))
    mux.run_until(
        lambda: crec.shutdown is not None and bool(srv.recs) and srv.recs[0].shutdown is not None,
        what="both ends",
    )
    ended_once(srv.recs[0], R.SOCKET_TLS_HANDSHAKE_FAILED)
    assert srv.recs[0].names() == ["shutdown"]
    if version == "tls12":
        ended_once(crec, R.SOCKET_TLS_HANDSHAKE_FAILED)
        assert crec.names() == ["shutdown"]
    else:
        # asyncio and uvloop drop the server's alert (they abort the transport on a
        # failed handshake), so a TLS 1.3 client only sees the connection cut
        ended_once(crec, R.SOCKET_LOST, R.SOCKET_TLS_HANDSHAKE_FAILED)
        assert crec.names() == ["connect", "recv", "shutdown"] or crec.names() == [
            "connect",
            "shutdown",
        ]
    # DisableCertificateVerification on the server: no client certificate asked for
    sctx.DisableCertificateVerification()
    c2, r2 = connect(mux, log, prov, make_ctx(prov, log, trust=ca_pem), srv.port)
    mux.run_until(lambda: "connect" in r2.names() and len(srv.socks) == 2)
    delete(client, c2)
    srv.close()


async def _raw_server(
    mux: Mux, behaviour: str, transports: list[asyncio.BaseTransport]
) -> tuple[asyncio.Server, int]:
    class P(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            tr: Any = transport
            transports.append(tr)
            if behaviour == "close":
                tr.close()
            elif behaviour == "garbage":
                tr.write(b"220 this is not TLS\r\n" * 10)

    server = await mux.loop.create_server(P, "127.0.0.1", 0)
    return server, int(server.sockets[0].getsockname()[1])


@pytest.mark.timeout(30)
@pytest.mark.parametrize("behaviour", ["close", "garbage", "silent"])
def test_client_handshake_with_a_bad_server(
    mux: Mux,
    log: IInstanceLog,
    prov: ISocketProvider,
    monkeypatch: pytest.MonkeyPatch,
    behaviour: str,
) -> None:
    """A server that closes mid-handshake, speaks no TLS, or never answers (handshake
    timeout, lowered here): SOCKET_TLS_HANDSHAKE_FAILED once, nothing before it."""
    monkeypatch.setattr(tls_mod, "HANDSHAKE_TIMEOUT", 0.3)
    transports: list[asyncio.BaseTransport] = []
    server, port = mux.loop.run_until_complete(_raw_server(mux, behaviour, transports))
    client, crec = connect(mux, log, prov, make_ctx(prov, log, verify=False), port)
    t0 = mux.loop.time()
    mux.run_until(lambda: crec.shutdown is not None, what="failure")
    ended_once(crec, R.SOCKET_TLS_HANDSHAKE_FAILED)
    assert crec.names() == ["shutdown"]
    if behaviour == "silent":
        assert mux.loop.time() - t0 >= 0.25
    delete(client)
    for t in transports:
        t.close()
    server.close()
    mux.loop.run_until_complete(server.wait_closed())


@pytest.mark.timeout(30)
@pytest.mark.parametrize("behaviour", ["close", "partial", "garbage", "silent"])
def test_server_handshake_with_a_bad_client(
    mux: Mux,
    log: IInstanceLog,
    prov: ISocketProvider,
    monkeypatch: pytest.MonkeyPatch,
    behaviour: str,
) -> None:
    """A raw TCP client that closes at once, closes mid-ClientHello, sends plaintext, or
    sends nothing (handshake timeout): the accepted socket ends with
    SOCKET_TLS_HANDSHAKE_FAILED and never reports SocketAcceptComplete."""
    monkeypatch.setattr(tls_mod, "HANDSHAKE_TIMEOUT", 0.3)
    srv = Server(mux, log, prov, None)
    raw = socket.socket()
    raw.setblocking(False)
    mux.loop.run_until_complete(mux.loop.sock_connect(raw, ("127.0.0.1", srv.port)))
    if behaviour == "partial":
        mux.loop.run_until_complete(mux.loop.sock_sendall(raw, b"\x16\x03\x01\x02\x00\x01"))
    elif behaviour == "garbage":
        mux.loop.run_until_complete(mux.loop.sock_sendall(raw, b"GET / HTTP/1.0\r\n\r\n"))
    if behaviour in ("close", "partial"):
        raw.close()
    mux.run_until(lambda: bool(srv.recs) and srv.recs[0].shutdown is not None, what="failure")
    ended_once(srv.recs[0], R.SOCKET_TLS_HANDSHAKE_FAILED)
    assert srv.recs[0].names() == ["shutdown"]
    raw.close()
    srv.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("version", list(VERSIONS))
@pytest.mark.parametrize("truncating", ["client", "server"])
def test_truncation_is_lost(
    mux: Mux, log: IInstanceLog, ca: Any, prov: ISocketProvider, version: str, truncating: str
) -> None:
    """A TCP EOF without close_notify after the handshake: the bytes before it are
    delivered, then SOCKET_LOST (a close_notify would have been BY_PEER)."""
    srv = Server(mux, log, prov, make_ctx(prov, log, cert=pem_of(ca, "localhost"), version=version))
    client, crec = connect(mux, log, prov, make_ctx(prov, log, trust=ca.cert_pem.bytes()), srv.port)
    mux.run_until(lambda: "connect" in crec.names() and bool(srv.socks))
    server, srec = srv.socks[0], srv.recs[0]
    (cut, cutrec), (victim, vrec) = (
        ((client, crec), (server, srec))
        if truncating == "client"
        else ((server, srec), (client, crec))
    )
    call(cutrec, cut.Send, b"last words")
    mux.run_until(lambda: cutrec.sends_done == 1)
    mux.run_for(0.05)
    raw_eof(cut)
    mux.run_for(0.1)
    assert vrec.shutdown is None, "the end must wait for the held bytes to be read"
    call(vrec, victim.Recv, bytearray(100))
    mux.run_until(lambda: vrec.shutdown is not None, what="truncation")
    assert vrec.events[-2:] == [("recv", 10), ("shutdown", R.SOCKET_LOST)]
    assert vrec.received == b"last words"
    ended_once(vrec, R.SOCKET_LOST)
    delete(client)
    srv.close()


# --------------------------------------------------------------------------- upgrades


def tcp_pair(mux: Mux, log: IInstanceLog) -> tuple[ISocket, Recorder, ISocket, Recorder, ISocket]:
    """A connected TCP client and accepted server (and the listener)."""
    tcp = CreateTCPSocketProvider()
    lrec = Recorder("tcp-listener")
    srec = Recorder("tcp-server")
    got: list[ISocket] = []
    lrec.hooks["bind"] = lambda s, a, p: s.Listen()
    lrec.hooks["listen"] = lambda s, a, p: s.Accept(srec)
    srec.hooks["accept"] = got.append
    listener = tcp.CreateSocket(mux, lrec, log)
    listener.Bind("127.0.0.1", 0)
    mux.run_until(lambda: "bind" in lrec.names())
    crec = Recorder("tcp-client")
    client = tcp.CreateSocket(mux, crec, log)
    client.Connect(f"127.0.0.1:{lrec.events[0][2]}")
    mux.run_until(lambda: "connect" in crec.names() and bool(got))
    return client, crec, got[0], srec, listener


@pytest.mark.timeout(30)
@pytest.mark.parametrize("version", list(VERSIONS))
def test_upgrade_with_data_at_the_boundary(
    mux: Mux, log: IInstanceLog, ca: Any, prov: ISocketProvider, version: str
) -> None:
    """The client pipelines "STARTTLS", its ClientHello and application data; the server
    had all of it buffered before it upgraded; it sends application data right after its
    handshake too. Nothing is lost, nothing reaches a TCP user as plaintext."""
    tclient, tcrec, tserver, tsrec, listener = tcp_pair(mux, log)
    sctx = make_ctx(prov, log, cert=pem_of(ca, "localhost", "127.0.0.1"), version=version)
    cctx = make_ctx(prov, log, trust=ca.cert_pem.bytes(), alpn=["smtp"])
    sctx.SetALPNProtocols(["smtp"])
    rng = random.Random(9)
    a, b = rng.randbytes(300_000), rng.randbytes(200_000)
    # client: plaintext, then the upgrade at once, then data (cached until the handshake)
    call(tcrec, tclient.Send, b"STARTTLS\r\n")
    c = Recorder("tls-client")
    tls_c = call(tcrec, prov.UpgradeToTLSSocket, tclient, mux, c, log, False, cctx)
    call(c, tls_c.Send, a)
    call(c, tls_c.Recv, bytearray(len(b)))
    mux.run_for(0.1)  # the server's TCP socket holds "STARTTLS\r\n" + the ClientHello
    n_tcp_events = len(tcrec.events)
    s = Recorder("tls-server")
    upgraded: list[ISocket] = []

    def on_starttls(sock: ISocket, buf: Any, n: int) -> None:
        assert bytes(buf[:n]) == b"STARTTLS\r\n"
        new = prov.UpgradeToTLSSocket(sock, mux, s, log, True, sctx)
        new.Send(b)
        new.Recv(bytearray(len(a)))
        upgraded.append(new)

    tsrec.hooks["recv"] = on_starttls
    call(tsrec, tserver.Recv, bytearray(10))
    mux.run_until(lambda: len(c.received) == len(b) and len(s.received) == len(a), what="data")
    assert sha(c.received) == sha(b) and sha(s.received) == sha(a)
    assert c.names()[:2] == ["alpn", "upgraded"] and s.names()[:2] == ["alpn", "upgraded"]
    assert c.events[0] == ("alpn", "smtp")
    assert tsrec.names() == ["accept", "recv"] and len(tcrec.events) == n_tcp_events
    assert "recv" not in tcrec.names()
    tls_s = upgraded[0]
    call(c, tls_c.Shutdown)
    call(s, tls_s.Recv, bytearray(1))
    mux.run_until(lambda: c.shutdown is not None and s.shutdown is not None)
    ended_once(c, R.SOCKET_SHUTDOWN_NORMAL)
    ended_once(s, R.SOCKET_SHUTDOWN_BY_PEER)
    assert "shutdown" not in tcrec.names() and "shutdown" not in tsrec.names()
    # deleting the TLS sockets deleted the TCP ones they own
    tls_c.Delete()
    tls_s.Delete()
    for t in (tclient, tserver):
        with pytest.raises(SocketModeError):
            t.Delete()
    listener.Delete()
    for r in (c, s, tcrec, tsrec):
        assert not r.violations, r.violations


@pytest.mark.timeout(30)
def test_upgrade_after_a_plaintext_reply(
    mux: Mux, log: IInstanceLog, ca: Any, prov: ISocketProvider
) -> None:
    """SMTP order: the server sends "220" and upgrades in the same breath (the reply was
    still queued); the client reads the reply, then upgrades. Server name check: the
    client TCP socket connected to 127.0.0.1 without a name, so the IP is checked."""
    tclient, tcrec, tserver, tsrec, listener = tcp_pair(mux, log)
    sctx = make_ctx(prov, log, cert=pem_of(ca, "127.0.0.1"))
    cctx = make_ctx(prov, log, trust=ca.cert_pem.bytes())
    s = Recorder("tls-server")
    c = Recorder("tls-client")
    got: list[ISocket] = []
    call(tsrec, tserver.Send, b"220 go ahead\r\n" * 1000)
    got.append(call(tsrec, prov.UpgradeToTLSSocket, tserver, mux, s, log, True, sctx))
    tcrec.hooks["recv"] = lambda sock, buf, n: got.append(
        prov.UpgradeToTLSSocket(sock, mux, c, log, False, cctx)
    )
    call(tcrec, tclient.Recv, bytearray(14000))
    mux.run_until(lambda: "upgraded" in c.names() and "upgraded" in s.names(), what="upgrade")
    assert tcrec.received == b"220 go ahead\r\n" * 1000
    call(c, got[1].Send, b"hello")
    call(s, got[0].Recv, bytearray(5))
    mux.run_until(lambda: s.received == b"hello")
    delete(*got, listener)
    for r in (c, s, tcrec, tsrec):
        assert not r.violations, r.violations


def test_upgrade_misuse(mux: Mux, log: IInstanceLog, ca: Any, prov: ISocketProvider) -> None:
    """A TLS socket cannot be upgraded; neither can an unconnected TCP socket."""
    tclient, _, tserver, _, listener = tcp_pair(mux, log)
    cctx = make_ctx(prov, log, verify=False)
    tls_c = prov.UpgradeToTLSSocket(tclient, mux, Recorder(), log, False, cctx)
    with pytest.raises(SocketModeError):
        prov.UpgradeToTLSSocket(tls_c, mux, Recorder(), log, False, cctx)
    idle = CreateTCPSocketProvider().CreateSocket(mux, Recorder(), log)
    with pytest.raises(SocketModeError):
        prov.UpgradeToTLSSocket(idle, mux, Recorder(), log, False, cctx)
    delete(tls_c, tserver, listener, idle)


# ------------------------------ upgrades, ALPN callbacks, the bounded close, TLS-only calls


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
    plain = u.CreateUDPSocketProvider() if name == "dtls" else CreateTCPSocketProvider()
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
    plain = u.CreateUDPSocketProvider() if name == "dtls" else CreateTCPSocketProvider()
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
                0, call(prec, prov.UpgradeToTLSSocket, s, mux, srec, log, True, sctx)
            )

        srv.lrec.hooks["listen"] = on_listen
    crec = Recorder("client")
    urec = Recorder("plain-client")
    got: list[ISocket] = []
    urec.hooks["connect"] = lambda s: got.append(
        call(urec, prov.UpgradeToTLSSocket, s, mux, crec, log, False, cctx)
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


@pytest.mark.parametrize("name", ["tls", "dtls"])
@pytest.mark.parametrize("action", ["delete", "raise"])
def test_alpn_callback_deletes_or_raises(
    mux: Mux, log: IInstanceLog, ca: Any, name: str, action: str
) -> None:
    """Delete inside SocketAcceptSelectedALPNProtocol: nothing after it on that socket.
    An exception in it goes to the loop's exception handler, and the connection goes on
    as if it had returned True (the default)."""
    prov = CreateTLSSocketProvider(CreateTCPSocketProvider())
    sctx = make_ctx(prov, log, cert=pem_of(ca, "localhost", "127.0.0.1"))
    cctx = make_ctx(prov, log, trust=ca.cert_pem.bytes())
    if name == "dtls":
        sctx.EnableDTLS(False)
        cctx.EnableDTLS(False)
    sctx.SetALPNProtocols(["b", "a"])
    cctx.SetALPNProtocols(["a", "b"])
    srv = Server(mux, log, prov, sctx)
    crec = Recorder("client")

    def on_alpn(s: ISocket, protocol: str) -> bool:
        if action == "delete":
            s.Delete()
            return False
        raise RuntimeError("app bug")

    crec.hooks["alpn"] = on_alpn
    cli, _ = connect(mux, log, prov, cctx, srv.port, "localhost", crec)
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


def test_tls_shutdown_waits_a_bounded_time_for_close_notify(
    mux: Mux, ca: Any, prov: ISocketProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Our Shutdown sends close_notify; a peer that never answers it (a stdlib TLS server
    that stops reading after its handshake) does not keep the socket open: after the
    bounded wait it ends with SOCKET_SHUTDOWN_NORMAL, once, and the wait is logged."""
    monkeypatch.setattr(tls_mod, "SHUTDOWN_TIMEOUT", 0.5)
    log, lines = captured_log(u.LOG_TLS)
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
    "make", [CreateTCPSocketProvider, u.CreateUDPSocketProvider, u.CreateLocalSocketProvider]
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
