"""TLS against real peers: `openssl s_client`, `openssl s_server` and `curl`."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from kit.certs import Server, delete, ended_once, make_ctx, pem_of
from kit.conformance import call
from kit.loop import Mux, R, Recorder, free_port
from kit.peers import peer, ready_peer, wait_for_exit

from usocket_asyncio import (
    CreateTCPSocketProvider,
    IInstanceLog,
    ISocket,
    ISocketProvider,
)

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI"),
]


class LineServer:
    """Accepted sockets: read one line, reply, shut down (hooks into a `Server`)."""

    def __init__(self, srv: Server, reply: bytes) -> None:
        self.reply = reply
        srv.lrec.hooks["listen"] = self.on_listen
        self.srv = srv

    def on_listen(self, sock: ISocket, addr: str, port: int) -> None:
        self.srv._on_listen(sock, addr, port)
        rec = self.srv.recs[-1]
        rec.hooks["accept"] = self.on_accept
        rec.hooks["recv"] = self.on_recv

    def on_accept(self, sock: ISocket) -> None:
        self.srv.socks[len(self.srv.socks)] = sock
        sock.Recv(bytearray(4096), None, True)

    def on_recv(self, sock: ISocket, buf: Any, n: int) -> None:
        rec = self.srv.recs[-1]
        if b"\n" in rec.received:
            sock.Send(self.reply)
            sock.Shutdown()
        else:
            sock.Recv(bytearray(4096), None, True)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("version", ["-tls1_2", "-tls1_3"])
def test_s_client_against_library_server(
    mux: Mux, log: IInstanceLog, ca: Any, prov: ISocketProvider, files: dict[str, str], version: str
) -> None:
    """openssl s_client: chain and name verify (return code 0), ALPN by the server's
    order, SNI picks the named certificate, data both ways, close_notify both ways."""
    sctx = make_ctx(prov, log, cert=pem_of(ca, "127.0.0.1"), alpn=["h2", "http/1.1"])
    sctx.SetServerCertificate(pem_of(ca, "localhost"), None, "localhost")
    srv = Server(mux, log, prov, sctx)
    LineServer(srv, b"hello from the library\n")
    args = ["openssl", "s_client", "-connect", f"127.0.0.1:{srv.port}", version]
    args += ["-CAfile", files["ca"], "-servername", "localhost", "-verify_hostname", "localhost"]
    args += ["-alpn", "http/1.1,h2", "-verify_return_error", "-ign_eof"]
    with peer(args, b"hello from s_client\n") as proc:
        text = wait_for_exit(mux, proc, "s_client to finish")
    assert "Verify return code: 0 (ok)" in text, text
    assert "ALPN protocol: h2" in text, text
    assert "hello from the library" in text, text
    rec = srv.recs[0]
    assert rec.events[:2] == [("alpn", "h2"), ("accept",)]
    assert bytes(rec.received) == b"hello from s_client\n"
    mux.run_until(lambda: rec.shutdown is not None)
    ended_once(rec, R.SOCKET_SHUTDOWN_NORMAL)
    srv.close()


@contextlib.contextmanager
def s_server(
    extra: list[str], files: dict[str, str]
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    args = ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", files["server"]]
    args += ["-naccept", "1", *extra]
    with ready_peer(args, "ACCEPT") as proc:
        yield proc, port


@pytest.mark.timeout(30)
@pytest.mark.parametrize("variant", ["alpn", "sni+client_cert"])
def test_library_client_against_s_server_www(
    mux: Mux,
    log: IInstanceLog,
    ca: Any,
    prov: ISocketProvider,
    files: dict[str, str],
    variant: str,
) -> None:
    """The library client against `openssl s_server -www`: ALPN (s_server picks by its
    order); SNI (`-servername_fatal` refuses any other name) with `-Verify 1`, which
    requires a client certificate. (s_server sets ALPN only on its first certificate's
    context, so the SNI variant has none.)"""
    extra = ["-www"]
    cctx = make_ctx(prov, log, trust=ca.cert_pem.bytes())
    if variant == "alpn":
        extra += ["-alpn", "http/1.1,h2"]
        cctx.SetALPNProtocols(["h2", "http/1.1"])
    else:
        extra += ["-servername", "localhost", "-servername_fatal", "-cert2", files["server"]]
        extra += ["-Verify", "1", "-CAfile", files["ca"]]
        cctx.SetClientCertificate(pem_of(ca, "client.example"))
    with s_server(extra, files) as (_, port):
        rec = Recorder("client")
        sock = prov.CreateSocket(mux, rec, log, False, cctx)
        call(rec, sock.Connect, f"127.0.0.1:{port}", "localhost")
        call(rec, sock.Send, b"GET / HTTP/1.0\r\n\r\n")
        rec.hooks["recv"] = lambda s, b, n: s.Recv(bytearray(65536), None, True)
        call(rec, sock.Recv, bytearray(65536), None, True)
        mux.run_until(lambda: rec.shutdown is not None, 20, "the page")
        page = rec.received.decode("latin-1")
    if variant == "alpn":
        assert rec.names()[:3] == ["alpn", "connect", "send"], rec.events
        assert rec.events[0] == ("alpn", "http/1.1")
    else:
        assert rec.names()[:2] == ["connect", "send"], rec.events
        assert "client.example" in page, page
    assert "HTTP/1.0 200 ok" in page and "s_server" in page, page
    ended_once(rec, R.SOCKET_SHUTDOWN_BY_PEER)
    delete(sock)


@pytest.mark.timeout(30)
def test_library_client_without_certificate_against_s_server_verify(
    mux: Mux, log: IInstanceLog, ca: Any, prov: ISocketProvider, files: dict[str, str]
) -> None:
    """`s_server -Verify 1` refuses a client without a certificate: the handshake fails
    (TLS 1.2 pinned, where the client learns it inside its handshake)."""
    extra = ["-Verify", "1", "-CAfile", files["ca"], "-tls1_2"]
    with s_server(extra, files) as (_, port):
        rec = Recorder("client")
        sock = prov.CreateSocket(
            mux, rec, log, False, make_ctx(prov, log, trust=ca.cert_pem.bytes())
        )
        call(rec, sock.Connect, f"127.0.0.1:{port}", "localhost")
        mux.run_until(lambda: rec.shutdown is not None, 20, "refusal")
    ended_once(rec, R.SOCKET_TLS_HANDSHAKE_FAILED)
    assert rec.names() == ["shutdown"]
    delete(sock)


class SMTPServer:
    """A tiny SMTP-style server on the library: 220, EHLO -> 250-STARTTLS, STARTTLS ->
    220 and UpgradeToTLSSocket(initServerSide=True), then one line over TLS and a reply."""

    def __init__(self, mux: Mux, log: IInstanceLog, tls: ISocketProvider, sctx: Any) -> None:
        self.mux, self.log, self.tls, self.sctx = mux, log, tls, sctx
        self.tcp_rec = Recorder("smtp-tcp")
        self.tls_rec = Recorder("smtp-tls")
        self.lines: list[bytes] = []
        self.tls_sock: ISocket | None = None
        self.tcp_rec.hooks["accept"] = self.on_accept
        self.tcp_rec.hooks["recv"] = self.on_tcp_recv
        self.tls_rec.hooks["upgraded"] = lambda s: s.Recv(bytearray(4096), None, True)
        self.tls_rec.hooks["recv"] = self.on_tls_recv
        self.buf = b""

    def on_accept(self, sock: ISocket) -> None:
        sock.Send(b"220 usocket_asyncio ESMTP\r\n")
        sock.Recv(bytearray(1), 1)  # byte by byte: nothing past STARTTLS is read here

    def on_tcp_recv(self, sock: ISocket, buf: Any, n: int) -> None:
        self.buf += bytes(buf[:n])
        if not self.buf.endswith(b"\r\n"):
            sock.Recv(bytearray(1), 1)
            return
        line, self.buf = self.buf, b""
        self.lines.append(line)
        if line.upper().startswith(b"EHLO"):
            sock.Send(b"250-localhost\r\n250 STARTTLS\r\n")
            sock.Recv(bytearray(1), 1)
        elif line.upper().startswith(b"STARTTLS"):
            sock.Send(b"220 ready to start TLS\r\n")
            self.tls_sock = self.tls.UpgradeToTLSSocket(
                sock, self.mux, self.tls_rec, self.log, True, self.sctx
            )
        else:
            sock.Send(b"502 what?\r\n")
            sock.Recv(bytearray(1), 1)

    def on_tls_recv(self, sock: ISocket, buf: Any, n: int) -> None:
        if b"\n" in self.tls_rec.received:
            sock.Send(b"250 got it over TLS\r\n")
            sock.Shutdown()
        else:
            sock.Recv(bytearray(4096), None, True)


@pytest.mark.timeout(30)
def test_starttls_with_s_client_smtp(
    mux: Mux, log: IInstanceLog, ca: Any, prov: ISocketProvider, files: dict[str, str]
) -> None:
    """`openssl s_client -starttls smtp` against an SMTP-style library server."""
    tcp = CreateTCPSocketProvider()
    smtp = SMTPServer(mux, log, prov, make_ctx(prov, log, cert=pem_of(ca, "localhost")))
    lrec = Recorder("smtp-listener")
    lrec.hooks["bind"] = lambda s, a, p: s.Listen()
    lrec.hooks["listen"] = lambda s, a, p: s.Accept(smtp.tcp_rec)
    listener = tcp.CreateSocket(mux, lrec, log)
    listener.Bind("127.0.0.1", 0)
    mux.run_until(lambda: "bind" in lrec.names())
    port = lrec.events[0][2]
    args = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-starttls", "smtp"]
    args += ["-CAfile", files["ca"], "-servername", "localhost", "-verify_hostname", "localhost"]
    args += ["-verify_return_error", "-ign_eof"]
    with peer(args, b"MAIL FROM:<a@b>\r\n") as proc:
        text = wait_for_exit(mux, proc, "s_client to finish")
    assert "Verify return code: 0 (ok)" in text, text
    assert "250 got it over TLS" in text, text
    assert [ln.split()[0].upper() for ln in smtp.lines] == [b"EHLO", b"STARTTLS"]
    assert bytes(smtp.tls_rec.received) == b"MAIL FROM:<a@b>\r\n"
    mux.run_until(lambda: smtp.tls_rec.shutdown is not None)
    assert smtp.tls_rec.names()[0] == "upgraded"
    ended_once(smtp.tls_rec, R.SOCKET_SHUTDOWN_NORMAL)
    assert "shutdown" not in smtp.tcp_rec.names() and not smtp.tcp_rec.violations
    assert smtp.tls_sock is not None
    delete(smtp.tls_sock, listener)


@pytest.mark.timeout(30)
@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_curl_against_a_library_https_server(
    mux: Mux, log: IInstanceLog, ca: Any, prov: ISocketProvider, files: dict[str, str]
) -> None:
    """curl --cacert fetches a page from a tiny library HTTPS server (by IP: the
    certificate's IP address is checked)."""
    body = b"<h1>hello from usocket_asyncio</h1>\n"
    reply = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n"
    reply += b"Content-Length: %d\r\n\r\n" % len(body) + body
    sctx = make_ctx(prov, log, cert=pem_of(ca, "localhost", "127.0.0.1"), alpn=["http/1.1"])
    srv = Server(mux, log, prov, sctx)
    LineServer(srv, reply)
    args = ["curl", "-sS", "--max-time", "10", "--cacert", files["ca"]]
    args += [f"https://127.0.0.1:{srv.port}/"]
    with peer(args) as proc:
        text = wait_for_exit(mux, proc, "curl to finish")
        rc = proc.returncode
    assert rc == 0 and text == body.decode(), (rc, text)
    rec = srv.recs[0]
    assert rec.events[:2] == [("alpn", "http/1.1"), ("accept",)]
    assert rec.received.startswith(b"GET / HTTP/1.1\r\n")
    mux.run_until(lambda: rec.shutdown is not None)
    ended_once(rec, R.SOCKET_SHUTDOWN_NORMAL, R.SOCKET_SHUTDOWN_BY_PEER)
    srv.close()
