"""Certificates, PEM files and contexts for the TLS and DTLS tests, a listening `Server`,
a connecting client, and the end-of-socket checks (`ended_once`, `delete`)."""

from __future__ import annotations

import contextlib
import os
import ssl
from typing import Any

from usocket_asyncio import (
    IInstanceLog,
    ISocket,
    ISocketProvider,
    ShutdownReason,
    SocketModeError,
)
from usocket_asyncio._context import SocketContext

from .conformance import call
from .loop import Mux, Recorder

VERSIONS = {"tls12": ssl.TLSVersion.TLSv1_2, "tls13": ssl.TLSVersion.TLSv1_3}


def pem_of(ca: Any, *names: str, **kw: Any) -> bytes:
    """Key + chain PEM of a certificate for `names` issued by `ca`."""
    data: bytes = ca.issue_cert(*names, **kw).private_key_and_cert_chain_pem.bytes()
    return data


def write_pems(ca: Any, d: str) -> dict[str, str]:
    """PEM files in `d` for the command-line peers: "ca", "server" (localhost, 127.0.0.1)
    and "client" (client.example); test certificates only."""
    out = {k: os.path.join(d, k + ".pem") for k in ("ca", "server", "client")}
    ca.cert_pem.write_to_path(out["ca"])
    ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        out["server"]
    )
    ca.issue_cert("client.example").private_key_and_cert_chain_pem.write_to_path(out["client"])
    return out


def make_ctx(
    prov: ISocketProvider,
    log: IInstanceLog,
    *,
    cert: bytes | None = None,
    client_cert: bytes | None = None,
    trust: bytes | None = None,
    alpn: list[str] | None = None,
    version: str | None = None,
    verify: bool = True,
) -> SocketContext:
    """A context with the given settings (`version` pins the highest TLS version)."""
    ctx = prov.CreateSocketContext(log)
    assert isinstance(ctx, SocketContext)
    if version is not None:
        ctx.tls_max_version = VERSIONS[version]
    if cert is not None:
        ctx.SetServerCertificate(cert)
    if client_cert is not None:
        ctx.SetClientCertificate(client_cert)
    if trust is not None:
        ctx.SetTrustedCertificates(trust)
    if alpn is not None:
        ctx.SetALPNProcotols(alpn)
    if not verify:
        ctx.DisableCertificateVerification()
    return ctx


class Server:
    """A listening library socket; each peer is accepted with a fresh Recorder."""

    def __init__(
        self, mux: Mux, log: IInstanceLog, prov: ISocketProvider, ctx: SocketContext | None
    ) -> None:
        self.lrec = Recorder("listener")
        self.recs: list[Recorder] = []
        self.socks: dict[int, ISocket] = {}
        self.lrec.hooks["bind"] = lambda s, a, p: s.Listen()
        self.lrec.hooks["listen"] = self._on_listen
        self.listener = prov.CreateSocket(mux, self.lrec, log, False, ctx)
        call(self.lrec, self.listener.Bind, "127.0.0.1", 0)
        mux.run_until(lambda: self.lrec.events != [], what="bind")
        assert self.lrec.names() == ["bind"], self.lrec.events
        self.port = int(self.lrec.events[0][2])

    def _on_listen(self, sock: ISocket, addr: str, port: int) -> None:
        rec = Recorder(f"server{len(self.recs)}")
        i = len(self.recs)
        self.recs.append(rec)

        def keep(s: ISocket, *_: Any) -> None:
            self.socks[i] = s

        rec.hooks["accept"] = keep
        rec.hooks["alpn"] = keep
        rec.hooks["shutdown"] = keep
        sock.Accept(rec)

    def close(self) -> None:
        for s in [*self.socks.values(), self.listener]:
            with contextlib.suppress(SocketModeError):
                s.Delete()
        for r in [*self.recs, self.lrec]:
            assert not r.violations, r.violations


def connect(
    mux: Mux,
    log: IInstanceLog,
    prov: ISocketProvider,
    ctx: SocketContext | None,
    port: int,
    server_name: str | None = "localhost",
    rec: Recorder | None = None,
) -> tuple[ISocket, Recorder]:
    rec = rec or Recorder("client")
    sock = prov.CreateSocket(mux, rec, log, False, ctx)
    call(rec, sock.Connect, f"127.0.0.1:{port}", server_name)
    return sock, rec


def ended_once(rec: Recorder, *reasons: ShutdownReason) -> None:
    """Exactly one SocketShutdown, with one of `reasons`, and it came last."""
    assert rec.names().count("shutdown") == 1, rec.events
    assert rec.names()[-1] == "shutdown", rec.events
    assert rec.shutdown in reasons, (rec.shutdown, rec.events)
    assert not rec.violations, rec.violations


def delete(*socks: ISocket) -> None:
    for s in socks:
        with contextlib.suppress(SocketModeError):
            s.Delete()


def refuse_alpn(srv: Server, crec: Recorder, side: str) -> None:
    """SocketAcceptSelectedALPNProtocol returns False on `side` ("client": `crec`; else
    the server's next accepted peer)."""
    if side == "client":
        crec.hooks["alpn"] = lambda s, p: False
        return

    def refusing(sock: ISocket, addr: str, port: int) -> None:
        srv._on_listen(sock, addr, port)
        srv.recs[-1].hooks["alpn"] = lambda s, p: False

    srv.lrec.hooks["listen"] = refusing
