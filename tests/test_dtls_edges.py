"""Datagram edge cases a hostile user tries: Recv buffers resized inside and after their
result (UDP and DTLS), strided views refused, a DTLS listener ended inside the
`SocketListenResult` that accepted a peer, and `Delete` of a connected DTLS socket
telling the peer with close_notify. Both loops each.
"""

from __future__ import annotations

from typing import Any

import pytest
from kit.certs import Server, connect, delete, ended_once
from kit.conformance import call
from kit.dtls import dtls_ctx, wait_connected
from kit.loop import Mux, R, Recorder

from usocket_asyncio import (
    CreateUDPSocketProvider,
    IInstanceLog,
    IPaddr,
    ISocket,
    ISocketProvider,
)


class Resizer(Recorder):
    """Resizes the Recv buffer inside each result (`del buf[:]`, then `extend`), and
    records whether that worked; queues the next Recv in the same buffer."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.got: list[bytes] = []
        self.errors: list[str] = []

    def _resize(self, socket: ISocket, buf: Any, n: int) -> None:
        self.got.append(bytes(buf[:n]))
        try:
            del buf[:]
            buf.extend(bytes(64))
        except BufferError as e:
            self.errors.append(str(e))
            return
        socket.Recv(buf)

    def SocketRecvResult(self, socket: ISocket, buf: Any, len: int) -> None:
        super().SocketRecvResult(socket, buf, len)
        self._resize(socket, buf, len)

    def SocketRecvFromResult(
        self, socket: ISocket, buf: Any, len: int, srcAddr: IPaddr, srcPort: int
    ) -> None:
        super().SocketRecvFromResult(socket, buf, len, srcAddr, srcPort)
        self._resize(socket, buf, len)


def test_udp_recv_buffer_is_the_apps_inside_its_result(mux: Mux, log: IInstanceLog) -> None:
    """Bound UDP: the buffer is resized inside SocketRecvFromResult, both for a datagram
    that found the Recv waiting and for one that was held first."""
    prov = CreateUDPSocketProvider()
    rec = Resizer("udp")
    rec.hooks["bind"] = lambda s, a, p: None
    sock = prov.CreateSocket(mux, rec, log)
    call(rec, sock.Bind, "127.0.0.1", 0)
    mux.run_until(lambda: rec.events != [])
    port = int(rec.events[0][2])
    out = prov.CreateSocket(mux, Recorder("out"), log)
    out.Bind("127.0.0.1", 0)
    for i in range(3):  # held: no Recv pending yet
        out.SendTo(b"held %d" % i, None, "127.0.0.1", port)
    mux.run_for(0.05)
    call(rec, sock.Recv, bytearray(64))
    mux.run_until(lambda: len(rec.got) == 3 or bool(rec.errors))
    out.SendTo(b"direct", None, "127.0.0.1", port)  # a Recv is pending: straight in
    mux.run_until(lambda: len(rec.got) == 4 or bool(rec.errors))
    assert rec.errors == []
    assert rec.got == [b"held 0", b"held 1", b"held 2", b"direct"]
    delete(sock, out)


def test_udp_connected_recv_buffer_resized_inside_its_result(mux: Mux, log: IInstanceLog) -> None:
    prov = CreateUDPSocketProvider()
    srec = Recorder("srv")
    srv = prov.CreateSocket(mux, srec, log)
    srv.Bind("127.0.0.1", 0)
    mux.run_until(lambda: srec.events != [])
    port = int(srec.events[0][2])
    rec = Resizer("cli")
    cli = prov.CreateSocket(mux, rec, log)
    call(rec, cli.Connect, f"127.0.0.1:{port}")
    mux.run_until(lambda: "connect" in rec.names())
    buf = bytearray(64)
    call(rec, cli.Recv, buf)
    cli.Send(b"hi")
    srv.Recv(bytearray(64))
    mux.run_until(lambda: "recvfrom" in srec.names())
    src = srec.events[-1]
    srv.SendTo(b"reply", None, src[2], src[3])
    mux.run_until(lambda: bool(rec.got) or bool(rec.errors))
    assert rec.errors == [] and rec.got == [b"reply"]
    delete(cli, srv)


@pytest.mark.parametrize("kind", ["udp", "dtls"])
def test_strided_recv_buffer_is_refused(
    mux: Mux, log: IInstanceLog, prov: ISocketProvider, kind: str
) -> None:
    if kind == "udp":
        sock = CreateUDPSocketProvider().CreateSocket(mux, Recorder(), log)
        sock.Bind("127.0.0.1", 0)
        mux.run_for(0.05)
    else:
        srv = Server(mux, log, prov, dtls_ctx(prov, log))
        sock, crec = connect(mux, log, prov, dtls_ctx(prov, log, verify=False), srv.port)
        wait_connected(mux, srv, crec)
    with pytest.raises(ValueError, match="contiguous"):
        sock.Recv(memoryview(bytearray(64))[::2])
    delete(sock)
    if kind == "dtls":
        srv.close()


def test_dtls_recv_buffer_resized_inside_its_result(
    mux: Mux, log: IInstanceLog, prov: ISocketProvider
) -> None:
    srv = Server(mux, log, prov, dtls_ctx(prov, log))
    rec = Resizer("client")
    cli, crec = connect(mux, log, prov, dtls_ctx(prov, log, verify=False), srv.port, rec=rec)
    peer = wait_connected(mux, srv, crec)
    call(rec, cli.Recv, bytearray(64))
    for i in range(3):
        peer.Send(b"record %d" % i)
    mux.run_until(lambda: len(rec.got) == 3 or bool(rec.errors))
    assert rec.errors == [] and rec.got == [b"record 0", b"record 1", b"record 2"]
    delete(cli)
    srv.close()


@pytest.mark.parametrize("how", ["Shutdown", "Delete"])
def test_dtls_peer_accepted_outlives_the_listener_ended_in_the_same_callback(
    mux: Mux, log: IInstanceLog, prov: ISocketProvider, how: str
) -> None:
    """Accept(user), then Shutdown/Delete of the listener inside SocketListenResult:
    the peer completes its handshake and gets SocketAcceptComplete, as on TCP."""
    srv = Server(mux, log, prov, dtls_ctx(prov, log))
    prec = Recorder("peer")
    peers: list[ISocket] = []
    prec.hooks["accept"] = lambda s: peers.append(s)

    def on_listen(sock: ISocket, addr: str, port: int) -> None:
        sock.Accept(prec)
        getattr(sock, how)()

    srv.lrec.hooks["listen"] = on_listen
    cli, crec = connect(mux, log, prov, dtls_ctx(prov, log, verify=False), srv.port)
    mux.run_until(lambda: crec.events != [] and prec.events != [], 10, "both handshakes")
    assert crec.names() == ["connect"], crec.events
    assert prec.names() == ["accept"], prec.events
    if how == "Shutdown":
        mux.run_until(lambda: srv.lrec.shutdown is not None)
        ended_once(srv.lrec, R.SOCKET_SHUTDOWN_NORMAL)
    else:
        assert srv.lrec.names() == ["bind", "listen"]
    call(prec, peers[0].Recv, bytearray(64))
    call(crec, cli.Send, b"after the listener")
    mux.run_until(lambda: "recv" in prec.names())
    assert bytes(prec.received) == b"after the listener"
    call(crec, cli.Shutdown)
    mux.run_until(lambda: prec.shutdown is not None and crec.shutdown is not None)
    ended_once(prec, R.SOCKET_SHUTDOWN_BY_PEER)
    delete(cli, *peers)
    srv.close()


@pytest.mark.parametrize("who", ["client", "peer"])
def test_delete_of_a_connected_dtls_socket_sends_close_notify(
    mux: Mux, log: IInstanceLog, prov: ISocketProvider, who: str
) -> None:
    """Delete (no callback for the deleted socket) still tells the other side, which
    ends with SOCKET_SHUTDOWN_BY_PEER instead of waiting forever."""
    srv = Server(mux, log, prov, dtls_ctx(prov, log))
    cli, crec = connect(mux, log, prov, dtls_ctx(prov, log, verify=False), srv.port)
    peer = wait_connected(mux, srv, crec)
    prec = srv.recs[0]
    gone, other, orec = (cli, peer, prec) if who == "client" else (peer, cli, crec)
    gone.Delete()
    mux.run_until(lambda: orec.shutdown is not None, 5, "close_notify")
    ended_once(orec, R.SOCKET_SHUTDOWN_BY_PEER)
    n = len((crec if who == "client" else prec).events)
    mux.run_for(0.05)
    assert len((crec if who == "client" else prec).events) == n  # nothing for the deleted
    delete(other)
    srv.close()
