"""Helpers for the TCP, local, memory and example tests: a listening library socket,
a library client, and small waits. (The generic checker is in conformance.py.)"""

from __future__ import annotations

from typing import Any

from conftest import Mux, Recorder

from usocket_asyncio import IInstanceLog, ISocket, ISocketProvider


def listener(
    mux: Mux,
    log: IInstanceLog,
    provider: ISocketProvider,
    addr: str | None,
    port: int = 0,
    use_ipv6: bool = False,
    accept: bool = True,
) -> tuple[ISocket, Recorder, list[tuple[ISocket, Recorder]]]:
    """A bound and listening library socket; accepted sockets land in the returned list."""
    lrec = Recorder("listener")
    accepted: list[tuple[ISocket, Recorder]] = []

    def on_listen(sock: ISocket, a: str, p: int) -> None:
        if not accept:
            return
        rec = Recorder("server")
        rec.hooks["accept"] = lambda s: accepted.append((s, rec))
        sock.Accept(rec)

    lrec.hooks["bind"] = lambda sock, a, p: sock.Listen()
    lrec.hooks["listen"] = on_listen
    sock = provider.CreateSocket(mux, lrec, log, use_ipv6)
    sock.Bind(addr, port)
    mux.run_until(lambda: bool(lrec.events), what="bind result")
    assert lrec.names() == ["bind"], lrec.events
    return sock, lrec, accepted


def bound_port(rec: Recorder) -> int:
    """The port from a recorder's SocketBindResult."""
    ev: Any = next(e for e in rec.events if e[0] == "bind")
    return int(ev[2])


def client(
    mux: Mux, log: IInstanceLog, provider: ISocketProvider, address: str, use_ipv6: bool = False
) -> tuple[ISocket, Recorder]:
    """A library client socket with Connect called."""
    rec = Recorder("client")
    sock = provider.CreateSocket(mux, rec, log, use_ipv6)
    sock.Connect(address)
    return sock, rec


def ended(mux: Mux, rec: Recorder, what: str = "SocketShutdown") -> None:
    """Run until `rec` saw SocketShutdown, then a little longer (nothing may follow)."""
    mux.run_until(lambda: rec.shutdown is not None, what=what)
    mux.run_for(0.02)
    assert rec.names().count("shutdown") == 1 and rec.names()[-1] == "shutdown", rec.events
    assert not rec.violations, rec.violations
