"""TLS sockets: the stream engine over asyncio's (or uvloop's) SSL transport.

Theory of operation
-------------------
A `TLSSocket` is a `StreamSocket` whose transport is the loop's SSL transport: the SSL
protocol decrypts into the buffer that `get_buffer` hands out. asyncio's SSL layer keeps
what it was given while `buffer_updated` runs (and the app may resize its buffer inside
the callback), and it slices it: for a large `Recv` (more than `LARGE_READ` bytes to
go) it gets a view of the part of the app's bytearray still wanted, which the socket
releases in `buffer_updated` before the callback (or at the next `get_buffer`,
`RecvCancel` or the end, after a read that decrypted nothing); otherwise the loop's
read area (or the hold area), from which the engine copies the bytes into the app's
buffer. uvloop's lets go of it first: there a whole-buffer `Recv` is decrypted into
directly, as on a plain asyncio TCP transport (the engine's `_zero_copy`).

Opening. A client connects a plain socket first (`sock_connect`), a server socket
accepts with the engine's accept loop; either way the TCP transport is opened with
reading paused (`_Opening`) and the handshake runs with `start_tls`, as for an upgrade
(below): a failure before the TCP connection exists is a connect failure
(`SOCKET_CONNECT_REJECTED`/`_FAILED`), any failure after it is
`SOCKET_TLS_HANDSHAKE_FAILED`. The engine's `connection_made` (and so
`SocketConnectComplete`/`SocketAcceptComplete`) only comes after the handshake, and
after the app accepted the ALPN protocol (`_transport_ready`).

Sending. The SSL layer of asyncio and uvloop encrypts whatever it is given at once and
hands it all to the TCP transport below, which reports "empty" to the SSL layer, not to
us: alone, it would buffer a 64 MiB `Send` twice and report it sent at once. So the
engine's transport is a `_TLSWriter`: it hands the SSL transport `FEED_CHUNK` bytes at a
time, only while the TCP transport below is empty, and it learns when that transport
empties from `_RawWatch`, which stands between the TCP transport and the SSL protocol
(passing every event on) while the TCP transport holds bytes: the writer puts it there
whenever it sees bytes left in the TCP transport, and it steps aside once that transport
is empty again (the loops read faster into their own SSL protocol: uvloop calls its own
directly). A `Send` is complete once its last record left the TCP transport for the
kernel: the writer keeps the engine's `_blocked` set until then, exactly as a TCP
transport with high-water 0 does.

Upgrading (`UpgradeToTLSSocket`). The TCP socket hands over its transport (reading
paused) and the bytes it had read but not delivered (`StreamSocket._hand_over`); it is
then CLOSED without a callback, and is deleted with the TLS socket. Who owns the bytes
in flight:
- bytes the TCP socket still had queued for sending stay in the transport's buffer,
  ahead of the handshake, so they leave first;
- bytes the TCP socket had read but not delivered are the peer's first handshake bytes:
  they are fed into the new SSL protocol (`_inject`) after `start_tls` installed it
  and before it reads anything more from the transport (`start_tls` schedules its
  `connection_made` and `resume_reading`; our feed is scheduled before either);
- application bytes that arrive with the peer's last handshake flight are decrypted
  before `start_tls` returns to us (asyncio reads them at once; uvloop one callback
  later): until our `connection_made` they are staged (`_pre`), then moved into the
  hold area ahead of anything newer. End-of-stream events in that window are replayed.
Nothing is ever delivered as plaintext to the TCP socket's user, and nothing is dropped.

The end. A `close_notify` from the peer is `SOCKET_SHUTDOWN_BY_PEER` (after the bytes
before it are delivered). A TCP EOF without `close_notify` is truncation:
`SOCKET_LOST`. (asyncio reports both as `eof_received`; we ask the SSL object whether
`close_notify` arrived. uvloop reports truncation as `connection_lost(None)` alone.)
A fatal alert after the handshake is `SOCKET_LOST`, except a certificate alert (a TLS 1.3
server rejecting our client certificate), which is `SOCKET_TLS_HANDSHAKE_FAILED`. Our
`Shutdown` flushes, sends `close_notify` and waits at most `SHUTDOWN_TIMEOUT` seconds
for the peer's. A handshake that takes longer than `HANDSHAKE_TIMEOUT` seconds fails.
Every TLS failure's OpenSSL reason is logged under `LOG_TLS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections import deque
from typing import TYPE_CHECKING, Any

from ._api import USocket
from ._base import HELD, S
from ._context import SocketContext
from ._errors import CONNECT, HANDSHAKE, reason_of, translate
from ._stream import _USER, HOLD_LIMIT, StreamSocket, _Events, connect_any
from ._types import LogFlags, ShutdownReason, SocketModeError

if TYPE_CHECKING:
    from ._address import Address
    from ._iomux import IIoMux
    from ._log import IInstanceLog

HANDSHAKE_TIMEOUT = 30.0
"""Seconds a TLS handshake may take before it fails (read when each handshake starts)."""
SHUTDOWN_TIMEOUT = 3.0
"""Seconds `Shutdown` waits for the peer's `close_notify` after sending its own."""
FEED_CHUNK = 256 * 1024
"""Plaintext bytes handed to the SSL layer at a time, once the TCP transport below is
empty: the most a TLS socket holds encrypted beyond the app's own `Send` data."""

LARGE_READ = 4096
"""On asyncio, a head `Recv` that still wants more than this is decrypted into directly
(`TLSSocket.get_buffer`); a smaller one is copied out of the read area, which costs less
than the view."""

_HANDSHAKING = (S.CONNECTING, S.ACCEPTING)
_TRUNCATED = "the peer closed TCP without close_notify (truncated)"


class TLSSocket(StreamSocket):
    """A TLS socket (client, server, or upgraded from TCP)."""

    __slots__ = (
        "_ctx",
        "_early",
        "_early_ends",
        "_pre",
        "_raw_tr",
        "_rview",
        "_scratch",
        "_ssl_held",
        "_tcp",
        "_tcp_up",
        "_upgrade",
        "_views",
    )
    LOG_FLAG = LogFlags.LOG_TLS
    KIND = "tls"
    KEEP_OPEN_ON_EOF = False  # an SSL transport closes after the peer's close_notify

    def __init__(
        self,
        iomux: IIoMux,
        user: USocket | None,
        log: IInstanceLog,
        useIPv6: bool,
        ctx: SocketContext,
    ) -> None:
        super().__init__(iomux, user, log, useIPv6)
        self._ctx = ctx
        self._tcp: StreamSocket | None = None
        self._raw_tr: Any = None
        self._upgrade = False
        self._tcp_up = False
        self._pre = False
        self._early = bytearray()
        self._early_ends: list[tuple[str, Exception | None]] = []
        self._scratch: bytearray | None = None
        # the SSL layer slices the buffer it reads into (asyncio's): hand it a view
        self._views = True
        # the view of the app's buffer handed to such a layer for a large read (see
        # `get_buffer`), until `buffer_updated` (or the next `get_buffer`) releases it
        self._rview: memoryview | None = None
        # the SSL transport holds bytes: between its pause_writing and resume_writing
        self._ssl_held = False

    def _new_accepted(self) -> StreamSocket:
        return TLSSocket(self._mux, None, self._log, self._use_ipv6, self._ctx)

    # ------------------------------------------------------------------ opening

    async def _open(self, target: Address) -> None:
        sock = await connect_any(self._loop, target, self._use_ipv6)
        self._tcp_up = True
        hostname = self._server_name or target.host
        # from here on the loop owns `sock` and closes it on failure
        opening = _Opening()
        tr, _ = await self._loop.create_connection(lambda: opening, sock=sock)
        await self._handshake(tr, opening, False, hostname)

    def _connect_reason(self, exc: BaseException) -> ShutdownReason:
        if not self._tcp_up:
            return reason_of(exc, CONNECT)
        reason, why = translate(exc, HANDSHAKE)
        self._fail_log("TLS handshake failed", why)
        return reason

    async def _open_accepted(self, conn: socket.socket) -> None:
        opening = _Opening()
        tr, _ = await self._loop.connect_accepted_socket(lambda: opening, conn)
        await self._handshake(tr, opening, True, None)

    async def _handshake(
        self, tr: Any, opening: _Opening, server_side: bool, hostname: str | None
    ) -> None:
        """Run the handshake over the fresh TCP transport `tr` (reading paused)."""
        self._raw_tr = tr  # closed by `_release` if the socket ends meanwhile
        self._pre = True
        if opening.ended is not None or tr.is_closing():
            raise ConnectionResetError("the TCP connection closed before the handshake")
        if opening.data:
            self._loop.call_soon(self._inject, tr, bytes(opening.data))
        ssl_tr = await self._loop.start_tls(
            tr,
            self._as_protocol(),
            self._ctx.ssl_context(server_side),
            server_side=server_side,
            server_hostname=hostname,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
            ssl_shutdown_timeout=SHUTDOWN_TIMEOUT,
        )
        assert ssl_tr is not None
        self._task = None
        self._raw_tr = None
        self._views = _slices(ssl_tr)
        writer: Any = _TLSWriter(self, ssl_tr, tr)  # the transport, as the engine sees it
        self.connection_made(writer)

    def _accept_reason(self, exc: BaseException) -> ShutdownReason:
        reason, why = translate(exc, HANDSHAKE)
        self._fail_log("TLS handshake failed", why)
        return reason

    # ------------------------------------------------------------------ upgrade

    def _begin_upgrade(self, tcp: StreamSocket, server_side: bool) -> None:
        tr, pending = tcp._hand_over()
        self._tcp = tcp
        self._server_name = tcp._server_name
        self._upgrade = True
        self._pre = True
        self._raw_tr = tr
        self._set_state(S.ACCEPTING if server_side else S.CONNECTING)
        self._log.Log(
            self.LOG_FLAG,
            "tls %x: upgrading tcp %x as %s, %d bytes already read",
            id(self),
            id(tcp),
            "server" if server_side else "client",
            len(pending),
        )
        self._task = self._loop.create_task(self._run_upgrade(tr, pending, server_side))

    async def _run_upgrade(self, tr: Any, pending: bytes, server_side: bool) -> None:
        try:
            if tr.is_closing():
                raise ConnectionResetError("the TCP connection closed before the handshake")
            if tr.get_write_buffer_size():
                # plaintext the TCP socket sent is still in the transport, which paused
                # that socket's writing: it goes first, whole, and the SSL protocol takes
                # over a transport that is not paused (both loops' SSL protocols assert
                # that a resume_writing follows their own pause_writing)
                drained = _Draining(self._loop)
                tr.set_protocol(drained)
                await asyncio.wait_for(drained.done, HANDSHAKE_TIMEOUT)
                if drained.data:
                    pending += bytes(drained.data)
            tr.set_write_buffer_limits()  # the TCP socket's were for exact send results
            hostname = None
            if not server_side:
                hostname = self._server_name or _peer_ip(tr)
            sslctx = self._ctx.ssl_context(server_side)
            if pending:
                # runs after start_tls installed its protocol, before that protocol's
                # connection_made and resume_reading (both scheduled by start_tls)
                self._loop.call_soon(self._inject, tr, pending)
            ssl_tr = await self._loop.start_tls(
                tr,
                self._as_protocol(),
                sslctx,
                server_side=server_side,
                server_hostname=hostname,
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
                ssl_shutdown_timeout=SHUTDOWN_TIMEOUT,
            )
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self._task = None
            if self._state in _HANDSHAKING:
                reason, why = translate(e, HANDSHAKE)
                self._event(self._open_failed, reason, "TLS upgrade failed", why)
            return
        self._task = None
        self._raw_tr = None
        assert ssl_tr is not None
        self._views = _slices(ssl_tr)
        writer: Any = _TLSWriter(self, ssl_tr, tr)  # the transport, as the engine sees it
        self.connection_made(writer)

    def _inject(self, tr: Any, data: bytes) -> None:
        """Feed bytes the TCP socket had read into the SSL protocol, ahead of the rest."""
        if self._state not in _HANDSHAKING:
            return
        proto = tr.get_protocol()
        if (
            proto is self._tcp
            or proto is self
            or isinstance(proto, _Events)  # a socket's events (the TCP socket's, or ours)
            or not hasattr(proto, "buffer_updated")
        ):
            self._fail_log("TLS upgrade", f"cannot hand {len(data)} read bytes to {proto!r}")
            tr.abort()
            return
        view = memoryview(data)
        while view:
            buf = proto.get_buffer(len(view))
            n = min(len(buf), len(view))
            buf[:n] = view[:n]
            proto.buffer_updated(n)
            view = view[n:]

    def _ready_callback(self, accepted: bool) -> str:
        return "SocketUpgradeToTLSComplete" if self._upgrade else super()._ready_callback(accepted)

    # ------------------------------------------------------------------ transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The opening task is about to return by itself. Forget it, so that ending the
        # socket from a callback here (ALPN refused, Delete) does not cancel it: a
        # cancelled accept closes its socket under the SSL transport's close_notify.
        self._task = None
        if self._pre:
            self._pre = False
            early = self._early
            self._early = bytearray()
            self._scratch = None
            if early:
                n = len(early)
                self._hold = bytearray(max(HOLD_LIMIT, n))
                self._hold[:n] = early
                self._hstart, self._hend = 0, n
        super().connection_made(transport)
        if self._state is not S.CONNECTED:
            return
        # uvloop's SSL layer lets go of the buffer before `buffer_updated` (see
        # `_slices`): it may decrypt straight into the app's Recv buffer
        self._zero_copy = not self._views
        if self._hstart != self._hend:
            if self._rhead:
                self._push(HELD)
            elif self._hend - self._hstart >= HOLD_LIMIT and not self._paused:
                self._paused = True
                self._tr.pause_reading()
        ends, self._early_ends = self._early_ends, []
        for kind, exc in ends:
            if self._state is not S.CONNECTED:
                break
            if kind == "eof":
                self.eof_received()
            else:
                self.connection_lost(exc)

    def _transport_ready(self) -> bool:
        sslobj = self._tr.get_extra_info("ssl_object")
        proto = sslobj.selected_alpn_protocol() if sslobj is not None else None
        if self._log.LogFlagSet(self.LOG_FLAG) and sslobj is not None:
            self._log.Log(
                self.LOG_FLAG,
                "tls %x: handshake done: %s %s, ALPN %s",
                id(self),
                sslobj.version(),
                (sslobj.cipher() or ("?",))[0],
                proto or "none",
            )
        if not proto:
            return True
        ok = self._callback("SocketAcceptSelectedALPNProtocol", proto)
        if self._state is not S.CONNECTED:
            return False
        if ok is not None and not ok:
            self._fail_log("ALPN", f"the app refused {proto!r}")
            self._end(ShutdownReason.SOCKET_ALPN_SELECTION_FAILED)
            return False
        return True

    def get_buffer(self, sizehint: int) -> Any:
        if self._pre:
            if self._scratch is None:
                self._scratch = bytearray(HOLD_LIMIT)
            return memoryview(self._scratch)
        if self._views:
            if self._rview is not None:  # the last read decrypted nothing (a part record)
                self._let_go()
            if self._rhead and self._hstart == self._hend:
                rbuf = self._rbuf
                rpos = self._rpos
                want = self._rwant
                if want - rpos > LARGE_READ and type(rbuf) is bytearray and want <= len(rbuf):
                    # asyncio's SSL layer keeps what it is given in a local while
                    # `buffer_updated` runs: a view, released there before the callback,
                    # so the app may resize its buffer in it. Decrypted into directly,
                    # up to the whole Recv at a time (the read area holds 64 KiB).
                    v = self._rview = memoryview(rbuf)[rpos:want]
                    self._into = _USER
                    return v
        buf = super().get_buffer(sizehint)
        if self._views and type(buf) is not memoryview:
            return memoryview(buf)  # (see `_slices`)
        return buf

    def _let_go(self) -> None:
        """Release the view of the app's buffer a read left unused (see `get_buffer`)."""
        v = self._rview
        if v is not None:
            self._rview = None
            v.release()

    def RecvCancel(self) -> None:
        """As `StreamSocket.RecvCancel`; no view of a cancelled buffer is kept."""
        self._let_go()
        super().RecvCancel()

    def _begin_close(self) -> None:
        self._let_go()
        super()._begin_close()

    def pause_writing(self) -> None:
        """The SSL transport holds bytes (its high-water mark is 1): the writer reads
        `_ssl_held` instead of asking it after each write."""
        self._ssl_held = True

    def resume_writing(self) -> None:
        """The SSL transport's own buffer emptied: let the writer go on."""
        self._ssl_held = False
        w = self._tr
        if w is not None:
            w.pump()

    def buffer_updated(self, nbytes: int) -> None:
        if self._pre:
            assert self._scratch is not None
            self._early += memoryview(self._scratch)[:nbytes]
            return
        if self._rview is not None:  # the bytes are in the app's buffer: no view is kept
            self._let_go()
        super().buffer_updated(nbytes)

    def eof_received(self) -> bool | None:
        if self._pre:
            self._early_ends.append(("eof", None))
            return None
        if self._state is S.CONNECTED and self._peer_end is None and not self._close_notify_seen():
            self._fail_log("connection lost", _TRUNCATED)
            self._peer_end = ShutdownReason.SOCKET_LOST
            self._check_end()
            return None
        return super().eof_received()

    def _close_notify_seen(self) -> bool:
        """Did the peer's close_notify arrive? (asyncio calls `eof_received` for a bare
        TCP EOF too.) Reads what the SSL object still holds into the socket first."""
        sslobj = self._tr.get_extra_info("ssl_object") if self._tr is not None else None
        if sslobj is None:
            return True
        try:
            while True:
                data = sslobj.read(HOLD_LIMIT)
                if not data:
                    return True
                off = 0
                while off < len(data):  # not lost: delivered like any other read
                    if self._state is not S.CONNECTED:
                        return False
                    buf = self.get_buffer(len(data) - off)
                    n = min(len(buf), len(data) - off)
                    buf[:n] = data[off : off + n]
                    # let go of the view before buffer_updated: the next get_buffer may
                    # grow the hold, which a live view of it forbids (BufferError)
                    del buf
                    self.buffer_updated(n)
                    off += n
        except ssl.SSLZeroReturnError:
            return True
        except ssl.SSLError:
            return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._pre:
            self._early_ends.append(("lost", exc))
            return
        if exc is None and self._state is S.CONNECTED and self._peer_end is None:
            # uvloop ends a connection whose reading we paused with this alone, at the
            # peer's EOF: what its SSL object still holds (and a close_notify among it)
            # is read into the hold first, not lost
            sslobj = self._tr.get_extra_info("ssl_object") if self._tr is not None else None
            if sslobj is not None and self._close_notify_seen():
                self._peer_end = ShutdownReason.SOCKET_SHUTDOWN_BY_PEER
            elif self._state is S.CONNECTED:
                self._fail_log("connection lost", _TRUNCATED)
                self._peer_end = ShutdownReason.SOCKET_LOST
        super().connection_lost(exc)

    # ------------------------------------------------------------------ the end

    def _release(self) -> None:
        self._let_go()
        super()._release()
        raw, self._raw_tr = self._raw_tr, None
        if raw is not None:
            raw.close()
        self._pre = False
        self._early = bytearray()
        self._early_ends = []

    def Delete(self) -> None:
        """Release the socket at once (and the TCP socket it was upgraded from): it
        closes and makes no callback, ever again."""
        super().Delete()
        tcp, self._tcp = self._tcp, None
        if tcp is not None:
            with contextlib.suppress(SocketModeError):
                tcp.Delete()


class _Opening(asyncio.Protocol):
    """The TCP transport's protocol until `start_tls` replaces it: reading paused at
    once; whatever still arrives is kept for the SSL protocol."""

    __slots__ = ("data", "ended")

    def __init__(self) -> None:
        self.data = bytearray()
        self.ended: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tr: Any = transport
        tr.pause_reading()

    def data_received(self, data: bytes) -> None:
        self.data += data

    def eof_received(self) -> bool | None:
        self.ended = ConnectionResetError("the peer closed before the handshake")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended = exc or ConnectionResetError("the connection closed before the handshake")


class _Draining(_Opening):
    """The TCP transport's protocol while the plaintext an upgraded socket sent leaves
    (reading stays paused): `done` completes when the transport resumes writing, that is
    when its buffer is empty (the TCP socket's limits: high 0), or fails when the
    connection ends first."""

    __slots__ = ("done",)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.done: asyncio.Future[None] = loop.create_future()

    def resume_writing(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.done.done():
            assert self.ended is not None
            self.done.set_exception(self.ended)


class _RawWatch(asyncio.BufferedProtocol):
    """The TCP transport's protocol once the handshake is done: every event goes on to
    the SSL protocol; an emptied write buffer also tells the writer."""

    __slots__ = ("_proto", "_writer")

    def __init__(self, proto: Any, writer: _TLSWriter) -> None:
        self._proto = proto
        self._writer = writer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._proto.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._proto.connection_lost(exc)

    def get_buffer(self, sizehint: int) -> Any:
        return self._proto.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        self._proto.buffer_updated(nbytes)

    def eof_received(self) -> bool | None:
        result: bool | None = self._proto.eof_received()
        return result

    def pause_writing(self) -> None:
        self._proto.pause_writing()

    def resume_writing(self) -> None:
        self._proto.resume_writing()
        w = self._writer
        w.pump()
        w.unwatch()


class _TLSWriter:
    """The transport a TLS socket's engine writes to (see "Sending" above): the SSL
    transport, fed `FEED_CHUNK` bytes at a time while the TCP transport below is empty.

    The engine's `_blocked` is set while any byte written has not reached the kernel
    (queued here, in the SSL layer, or in the TCP transport), and `pump` clears it (with
    the engine's `_all_sent`) once everything has.
    """

    __slots__ = ("_proto", "_pumping", "_q", "_qbytes", "_raw", "_sock", "_ssl", "_watch")

    def __init__(self, sock: TLSSocket, ssl_tr: Any, raw: Any) -> None:
        self._sock = sock
        self._ssl = ssl_tr
        self._raw = raw
        self._q: deque[memoryview] = deque()
        self._qbytes = 0
        self._pumping = False
        # 1: the SSL transport pauses as soon as it holds a byte, resumes when empty
        ssl_tr.set_write_buffer_limits(high=1, low=0)
        # 0: the TCP transport tells (through _RawWatch, while it holds bytes) when it
        # is empty
        self._proto = raw.get_protocol()  # the SSL protocol
        self._watch: _RawWatch | None = None
        raw.set_write_buffer_limits(high=0)
        if raw.get_write_buffer_size():
            self.watch()

    def watch(self) -> None:
        """The TCP transport holds bytes: put `_RawWatch` between it and the SSL protocol
        (if it is not there), so that its emptying reaches `pump`."""
        if self._watch is None:
            w = self._watch = _RawWatch(self._proto, self)
            self._raw.set_protocol(w)

    def unwatch(self) -> None:
        """(From `_RawWatch.resume_writing`.) The TCP transport is empty: the SSL
        protocol is its protocol again."""
        raw = self._raw
        if self._watch is not None and not raw.get_write_buffer_size() and not raw.is_closing():
            self._watch = None
            raw.set_protocol(self._proto)

    def write(self, data: bytes | bytearray) -> None:
        # `_blocked` clear: what was written before has left (`pump`); bytes the SSL
        # layer sent of its own accord (a session ticket) may still be in the TCP
        # transport: then this one chunk goes behind them, and the check below holds
        # the next ones back
        if not self._q and data.__len__() <= FEED_CHUNK and not self._sock._blocked:
            self._ssl.write(data)
            if self._raw.get_write_buffer_size():
                self._sock._blocked = True
                self.watch()
            elif self._sock._ssl_held:  # (both loops' SSL layers pause it within write)
                self._sock._blocked = True
            return
        self._q.append(memoryview(data))
        self._qbytes += data.__len__()
        self._sock._blocked = True
        self.pump()

    def pump(self) -> None:
        """Feed the SSL transport while the TCP transport below is empty; once every
        byte has gone to the kernel, tell the engine."""
        if self._pumping:
            return
        raw, ssl_tr, q = self._raw, self._ssl, self._q
        self._pumping = True
        try:
            while True:
                if raw.get_write_buffer_size():
                    self.watch()
                    return
                if ssl_tr.get_write_buffer_size():
                    return
                if not q:
                    break
                if ssl_tr.is_closing():  # the SSL layer would drop it: it stays unsent
                    return
                head = q[0]
                if head.__len__() <= FEED_CHUNK:
                    q.popleft()
                    chunk = head
                else:
                    chunk = head[:FEED_CHUNK]
                    q[0] = head[FEED_CHUNK:]
                self._qbytes -= chunk.__len__()
                ssl_tr.write(chunk)
        finally:
            self._pumping = False
        sock = self._sock
        if sock._blocked and sock._tr is self:
            sock._all_sent()

    # the rest of the transport interface the engine uses

    def get_write_buffer_size(self) -> int:
        return int(
            self._qbytes + self._raw.get_write_buffer_size() + self._ssl.get_write_buffer_size()
        )

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """The engine's limits are the writer's own (see `__init__`)."""

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._ssl.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._ssl.pause_reading()

    def resume_reading(self) -> None:
        self._ssl.resume_reading()

    def is_closing(self) -> bool:
        return bool(self._ssl.is_closing())

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:
        raise NotImplementedError("TLS closes with close_notify: close()")

    def close(self) -> None:
        """Send `close_notify` after what the SSL layer holds; what is queued here is
        dropped (the engine closes only after everything left, or when it gives up)."""
        self._q.clear()
        self._qbytes = 0
        self._ssl.close()

    def abort(self) -> None:
        self._q.clear()
        self._qbytes = 0
        self._ssl.abort()


def _slices(ssl_tr: Any) -> bool:
    """Does the SSL layer of `ssl_tr` fill the buffer `get_buffer` gives in pieces by
    slicing it? asyncio's does (`buf[offset:]`: a bytearray's slice would be a copy, so
    it needs a view, and that view lives on while `buffer_updated` runs); uvloop's takes
    the buffer's memory itself, makes its own views of the rest and lets go of it all
    before `buffer_updated`, so a bytearray goes as it is (a view per read costs about
    1,500 Ir per 1 KiB TLS request, compiled uvloop), the app's own included."""
    return not type(ssl_tr).__module__.startswith("uvloop")


def _peer_ip(tr: Any) -> str | None:
    peer = tr.get_extra_info("peername")
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return None
