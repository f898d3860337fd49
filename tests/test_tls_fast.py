"""The TLS socket's short paths: what its SSL layer reads into, and the watch on the TCP
transport below it that stands there only while that transport holds bytes.

What a user checks, on both loops: the bytes arrive intact (hashed) whatever the read
sizes; a `Send` the peer does not read yet gets its `SocketSendResult` only once the
peer took the bytes, and then promptly; a connection whose TCP transport filled and
drained carries on in both directions and ends normally.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from kit.certs import Server, connect, delete, ended_once, make_ctx, pem_of
from kit.conformance import call, sha
from kit.loop import Mux, R, Recorder

from usocket_asyncio import IInstanceLog, ISocket, ISocketProvider


def inside(sock: ISocket) -> Any:
    """The library socket, for a look at its private fields."""
    return sock


def pair(
    mux: Mux, log: IInstanceLog, ca: Any, prov: ISocketProvider
) -> tuple[Server, ISocket, Recorder, ISocket, Recorder]:
    sctx = make_ctx(prov, log, cert=pem_of(ca, "localhost", "127.0.0.1"))
    cctx = make_ctx(prov, log, trust=ca.cert_pem.bytes())
    srv = Server(mux, log, prov, sctx)
    client, crec = connect(mux, log, prov, cctx, srv.port)
    mux.run_until(lambda: "connect" in crec.names() and bool(srv.socks), what="handshake")
    return srv, client, crec, srv.socks[0], srv.recs[0]


def receive(mux: Mux, sock: ISocket, rec: Recorder, total: int, *sizes: int) -> None:
    """Recv partial pieces (of each of `sizes` in turn) until `total` bytes came (into
    `rec.received`)."""
    bufs = [bytearray(n) for n in sizes]
    turn = [0]

    def more(s: ISocket, b: Any, n: int) -> None:
        if len(rec.received) < total:
            turn[0] += 1
            s.Recv(bufs[turn[0] % len(bufs)], None, True)

    rec.hooks["recv"] = more
    call(rec, sock.Recv, bufs[0], None, True)
    mux.run_until(lambda: len(rec.received) >= total, timeout=30, what=f"{total} bytes")


def test_the_ssl_layer_reads_into_what_fits_its_loop(
    mux: Mux, log: IInstanceLog, ca: Any, prov: ISocketProvider
) -> None:
    """uvloop's SSL layer takes the read area as it is (it makes its own views of it),
    and the app's buffer itself for a Recv of all of it; asyncio's gets a view of the
    read area (it slices what it fills); records of many sizes, read in pieces of many
    sizes, arrive intact either way."""
    srv, client, crec, server, srec = pair(mux, log, ca, prov)
    try:
        s = inside(server)
        assert s._views is (mux.kind != "uvloop"), (mux.kind, s._views)
        # ... and uvloop's into the app's own buffer, when a Recv takes all of it
        assert s._zero_copy is (mux.kind == "uvloop"), (mux.kind, s._zero_copy)
        seen: list[Any] = []
        app = bytearray(4096)
        srec.hooks["recv"] = lambda sock, b, n: seen.append(s._into)
        call(srec, server.Recv, app, None, True)
        call(crec, client.Send, b"whole")
        mux.run_until(lambda: bool(seen), what="the first bytes")
        assert bytes(srec.received) == b"whole" and app[:5] == b"whole"
        assert seen == [1 if mux.kind == "uvloop" else 2], seen  # _USER / _AREA
        srec.received.clear()
        data = os.urandom(300_000)
        off = 0
        for n in (1, 5, 700, 1024, 4096, 16384, 16385, 40000):
            call(crec, client.Send, bytearray(data[off : off + n]))
            off += n
        call(crec, client.Send, data[off:])
        receive(mux, server, srec, len(data), 3, 1024, 70000, 16384, 1)
        assert sha(bytes(srec.received)) == sha(data)
    finally:
        delete(client)
        srv.close()


def test_a_send_the_peer_reads_late_completes_once_it_has_left(
    mux: Mux, log: IInstanceLog, ca: Any, prov: ISocketProvider
) -> None:
    """A Send larger than the socket buffers while the peer reads nothing: the TCP
    transport below fills, the watch stands between it and the SSL protocol, and the
    SocketSendResult waits; once the peer reads, the result comes, the watch steps aside,
    and the connection goes on both ways, bytes intact, to a normal end."""
    srv, client, crec, server, srec = pair(mux, log, ca, prov)
    try:
        c = inside(client)
        assert c._tr._watch is None, "nothing held yet: no watch"
        raw = c._tr._raw.get_extra_info("socket")
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        big = os.urandom(4 << 20)
        call(crec, client.Send, bytearray(big))
        mux.run_for(0.3)
        assert crec.sends_done == 0, "the peer has not read: the bytes are not all gone"
        assert c._tr._watch is not None, "the TCP transport holds bytes: the watch is there"
        receive(mux, server, srec, len(big), 65536)
        assert sha(bytes(srec.received)) == sha(big)
        mux.run_until(lambda: crec.sends_done == 1, what="the send result")
        assert c._tr._watch is None, "the TCP transport is empty: the watch stepped aside"
        # and again, the other way and back, after the switch
        for rnd in range(3):
            msg = os.urandom(5000 + rnd)
            srec.received.clear()
            call(crec, client.Send, bytearray(msg))
            receive(mux, server, srec, len(msg), 8192)
            assert bytes(srec.received) == msg
            crec.received.clear()
            call(srec, server.Send, msg[::-1])
            receive(mux, client, crec, len(msg), 8192)
            assert bytes(crec.received) == msg[::-1]
        mux.run_until(lambda: crec.sends_done == 4 and srec.sends_done == 3)
        crec.hooks["recv"] = lambda *_: None
        call(crec, client.Shutdown)
        call(srec, server.Recv, bytearray(1))
        mux.run_until(lambda: crec.shutdown is not None and srec.shutdown is not None)
        ended_once(crec, R.SOCKET_SHUTDOWN_NORMAL)
        ended_once(srec, R.SOCKET_SHUTDOWN_BY_PEER)
    finally:
        delete(client)
        srv.close()


class FakeSSL:
    """An SSL transport that keeps what it is given (as when the TCP transport below
    cannot take it) and pauses its protocol as the real ones do (high-water mark 1)."""

    def __init__(self, proto: Any) -> None:
        self.proto = proto
        self.held = 0
        self.keep = True  # False: what it is given goes on to the TCP transport

    def write(self, data: Any) -> None:
        if self.keep:
            self.held += len(data)
            self.proto.pause_writing()

    def get_write_buffer_size(self) -> int:
        return self.held

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def abort(self) -> None:
        pass


class FakeSSLProtocol:
    """The SSL protocol below the SSL transport: counts the events it is passed."""

    def __init__(self) -> None:
        self.resumed = 0

    def resume_writing(self) -> None:
        self.resumed += 1


class FakeRaw:
    """A TCP transport whose buffer the test fills and empties."""

    def __init__(self) -> None:
        self.size = 0
        self.ssl_proto = FakeSSLProtocol()
        self.protocol: Any = self.ssl_proto

    def get_write_buffer_size(self) -> int:
        return self.size

    def get_protocol(self) -> Any:
        return self.protocol

    def set_protocol(self, p: Any) -> None:
        self.protocol = p

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def is_closing(self) -> bool:
        return False


def test_the_writer_holds_the_result_while_either_layer_holds_bytes(
    mux: Mux, log: IInstanceLog, prov: ISocketProvider
) -> None:
    """The writer alone, over stand-ins: bytes the SSL layer keeps (it paused the socket)
    or the TCP transport keeps (the watch goes in) hold the socket's send results back
    (`_blocked`) until that layer is empty again; the watch then steps aside."""
    from usocket_asyncio._tls import _RawWatch, _TLSWriter

    sock = prov.CreateSocket(mux, Recorder("tls"), log, False, prov.CreateSocketContext(log))
    s = inside(sock)
    raw = FakeRaw()
    ssl_tr = FakeSSL(s)
    w = _TLSWriter(s, ssl_tr, raw)
    s._tr = w
    try:
        w.write(b"x" * 100)  # the SSL layer keeps it
        assert s._blocked and s._ssl_held and raw.protocol is raw.ssl_proto
        ssl_tr.held = 0
        s.resume_writing()  # the SSL layer emptied
        assert not s._blocked and not s._ssl_held
        raw.size = 5000
        ssl_tr.keep = False
        w.write(b"y" * 100)  # the TCP transport keeps it
        assert s._blocked and isinstance(raw.protocol, _RawWatch)
        raw.size = 0
        raw.protocol.resume_writing()  # the TCP transport emptied
        assert not s._blocked and raw.protocol is raw.ssl_proto
        assert raw.ssl_proto.resumed == 1, "the watch passed the event on"
    finally:
        s._tr = None
        sock.Delete()


def test_large_reads_fill_an_exact_recv_in_pieces(
    mux: Mux, log: IInstanceLog, ca: Any, prov: ISocketProvider
) -> None:
    """Exact Recvs filled by several reads larger than a record (copied out of the read
    area view to view on asyncio), at offsets inside the buffer: every byte arrives, in
    order, and nothing lands beyond the `len` asked for."""
    srv, client, crec, server, srec = pair(mux, log, ca, prov)
    try:
        data = os.urandom(500_001)
        want = [150_000, 250_001, 100_000]
        bufs = [bytearray(n + 7) for n in want]
        for b, n in zip(bufs, want, strict=True):
            call(srec, server.Recv, b, n)
        call(crec, client.Send, data[:500_001])
        mux.run_until(lambda: srec.names().count("recv") == 3, what="three exact Recvs")
        assert bytes(srec.received) == data[:500_001]
        assert all(b[n:] == bytes(7) for b, n in zip(bufs, want, strict=True))
    finally:
        delete(client)
        srv.close()


def test_a_large_recv_is_decrypted_into_directly_and_let_go(
    mux: Mux, log: IInstanceLog, ca: Any, prov: ISocketProvider
) -> None:
    """A Recv that wants more than `_tls.LARGE_READ` bytes is decrypted straight into the
    app's bytearray on both loops (asyncio's SSL layer through a view the socket releases
    before the callback): the app resizes its buffer inside `SocketRecvResult`, and after
    `RecvCancel` of a Recv whose read decrypted nothing yet; the bytes arrive intact."""
    srv, client, crec, server, srec = pair(mux, log, ca, prov)
    try:
        s = inside(server)
        seen: list[Any] = []
        data = os.urandom(400_000)
        bufs = [bytearray(200_000), bytearray(200_000)]

        def more(sock: ISocket, b: Any, n: int) -> None:
            seen.append(s._into)
            b.extend(b"resized")  # no view of the buffer is left
            del b[-7:]
            if len(srec.received) < len(data):
                sock.Recv(bufs[len(seen) % 2], None, True)

        srec.hooks["recv"] = more
        call(srec, server.Recv, bufs[0], None, True)
        call(crec, client.Send, data)
        mux.run_until(lambda: len(srec.received) >= len(data), timeout=30, what="400 kB")
        assert sha(bytes(srec.received)) == sha(data)
        assert seen and set(seen) == {1}, seen  # _USER: into the app's buffer
        # a read that decrypted nothing (part of a record) leaves the view with the
        # socket until the next read; RecvCancel lets go of it
        big = bytearray(100_000)
        call(srec, server.Recv, big, None, True)
        target = s.get_buffer(-1)  # what the SSL layer asks for before such a read
        assert len(target) == 100_000
        call(srec, server.RecvCancel)
        mux.run_until(lambda: "canceled" in srec.names(), what="SocketRecvCanceled")
        del target
        big.extend(b"resized")  # no BufferError: the socket keeps no view of it
        call(crec, client.Send, b"after")
        call(srec, server.Recv, bytearray(8), None, True)
        mux.run_until(lambda: bytes(srec.received).endswith(b"after"), what="the last bytes")
    finally:
        delete(client)
        srv.close()
