"""UDP sockets: one datagram per `SendTo`/`Send`, one datagram per `Recv`.

Theory of operation
-------------------
A `UDPSocket` is both the app's `ISocket` and the datagram protocol of its transport
(it derives from no asyncio class, see `SocketBase`; no datagram transport asks), so a
datagram from the transport reaches the app's callback with no hop in between. The
library makes the OS socket itself (so it can tell `SOCKET_OPEN_FAILED`,
`SOCKET_ADDR_IN_USE`, `SOCKET_BIND_FAILED` and `SOCKET_CONNECT_FAILED` apart; the
opening is `_datagram`'s, shared with DTLS sockets) and hands it to
`loop.create_datagram_endpoint(sock=...)`, on asyncio and uvloop alike.

Modes. The first of `Bind` or `Connect` fixes the mode (API.md item 2):

- bound: `SendTo` sends to any peer; each `Recv` gives `SocketRecvFromResult` with the
  source as an `ipaddress` object. `Send` raises `SocketModeError`.
- connected: the peer is fixed; `Send` and `Recv` (`SocketRecvResult`) work datagram by
  datagram; datagrams from other sources never arrive (the kernel filters them).
  `SendTo` raises `SocketModeError`.

`Connect` after `Bind` (or the other way round) raises `SocketModeError`, as for every
socket kind: a connected UDP socket picks its own local port. `Listen` and `Accept`
raise `SocketModeError`: UDP has no connections (DTLS sockets, from the TLS provider
with a context on which `EnableDTLS` was called, do listen).

Receiving. The datagram layer (`_datagram.RecvQueue`, shared with DTLS sockets) keeps
the pending `Recv` buffers. A datagram that finds one is copied into it straight away
(a longer one is truncated to the buffer, and the truncation is logged). A datagram that
finds none waits in the hold, bounded by `HOLD_DATAGRAMS` datagrams and `HOLD_BYTES`
bytes; datagram transports cannot pause reading, so beyond that the newest datagram is
dropped, counted (`dropped`) and logged. `UpgradeToTLSSocket` takes the transport and
the held datagrams over through `hand_over()` (a `_datagram.Handover`).

Sending. Each `SendTo`/`Send` sends one datagram at once (cached while `Bind`/`Connect`
is in progress): while the transport queues nothing, straight to the OS socket from the
app's buffer (the compiled build's helper, `_fastsend.DgramSender`, sends the first `len`
bytes with no copy and keeps the last destination's sockaddr; it is dropped wherever the
OS socket is), else (and when the kernel cannot take it now) through the transport, as
bytes of its own. The
transport's high-water mark is 0, so it calls `pause_writing` as soon as anything stays
queued and `resume_writing` once the queue is empty: a datagram the kernel took is
complete on return, the others complete at `resume_writing`. A send error (also an ICMP
error reported by the kernel later) goes to `error_received`: it is logged and never
ends the socket; the `SocketSendResult` of that datagram still follows, since the
datagram has left the socket.

Callbacks. As in the stream engine, every event enters through `SocketBase._event`
(the per-datagram one, `datagram_received`, calls the user itself), and a result that
completes inside the app's own call (a send, a `Recv` that a held datagram can fill,
`RecvCancel`, an early failure) goes to the socket's deferral queue (`_base`): delivered
in call order right after the app's callback returns, or from the loop's batch.

The end. `SocketBase._end(reason)` is the one place a socket ends. `Shutdown` closes the
transport, which first sends what it still queues; `connection_lost` then gives the
single `SocketShutdown(SOCKET_SHUTDOWN_NORMAL)`. A socket handed to DTLS (`hand_over`)
ends silently: its user hears nothing more.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
from typing import TYPE_CHECKING, Any

from ._address import Address, format_ip
from ._api import Buffer, USocket
from ._base import HELD, S, SocketBase, State, is_owned, transitions
from ._datagram import DROP_LOG_EVERY as DROP_LOG_EVERY
from ._datagram import (
    Handover,
    OpenError,
    RecvQueue,
    clear_reuse,
    copies_needed,
    drop_transport,
    open_bound,
    open_connected,
)
from ._types import IPaddr, LogFlags, ShutdownReason, SocketModeError

DgramSender: Any
try:
    from ._fastsend import DgramSender
except ImportError:  # the pure build: `socket.sendto`
    DgramSender = None

if TYPE_CHECKING:
    from ._iomux import IIoMux
    from ._log import IInstanceLog


HOLD_DATAGRAMS = 256
"""Datagrams held for an app with no pending `Recv` before new ones are dropped."""
HOLD_BYTES = 256 * 1024
"""Bytes held for an app with no pending `Recv` before new datagrams are dropped."""

UDP_TRANSITIONS = transitions(
    {
        S.IDLE: (S.BINDING, S.CONNECTING),
        S.BINDING: (S.BOUND,),
        S.BOUND: (S.CLOSING,),
        S.CONNECTING: (S.CONNECTED,),
        S.CONNECTED: (S.CLOSING,),
        S.CLOSING: (),
    }
)
"""The legal moves of a UDP socket (LISTENING and ACCEPTING are never used)."""

_OPEN = (S.BOUND, S.CONNECTED)
_BOUND = S.BOUND  # IMedia's lane send: a module global is a specialized lookup

_SENDTO_REFUSED = (
    "SendTo before Bind: call Bind first (Bind(None, 0) picks any port), then SendTo; or "
    "Connect and use Send",
    "SendTo on a connected UDP socket: use Send (Connect fixed the peer), or Bind a new "
    "socket to send to any peer",
)
_SEND_REFUSED = (
    "Send before Connect: Connect('ip:port') fixes the peer first; or Bind and use SendTo",
    "Send on a bound UDP socket: use SendTo(buf, len, addr, port), or Connect a new socket "
    "to fix the peer",
)
"""What `SendTo` and `Send` say when refused: before Bind/Connect, in the other mode."""

# Source addresses seen by bound sockets -> ipaddress objects (parsing is the costly
# part of a datagram's way in; peers repeat). Bounded: cleared when full.
_IP_CACHE: dict[str, IPaddr] = {}
_IP_CACHE_MAX = 4096


def ip_of(host: str) -> IPaddr:
    """The `ipaddress` object of a source address string (IPv4-mapped shown as IPv4).

    Raises:
        ValueError: `host` is no IP address.
    """
    ip = _IP_CACHE.get(host)
    if ip is None:
        text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        ip = ipaddress.ip_address(text)
        if ip.version == 6:
            mapped = ip.ipv4_mapped
            if mapped is not None:
                ip = mapped
        if len(_IP_CACHE) >= _IP_CACHE_MAX:
            _IP_CACHE.clear()
        _IP_CACHE[host] = ip
    return ip


class UDPSocket(SocketBase):
    """A UDP socket: bound (`SendTo`, `SocketRecvFromResult`) or connected (`Send`,
    `SocketRecvResult`). See the module docstring for the rules."""

    __slots__ = (
        "_cache",
        "_copy",
        "_family",
        "_last_dst",
        "_last_ip",
        "_last_port",
        "_media_lane",
        "_peer_end",
        "_q",
        "_reuse",
        "_server_name",
        "_shutdown_wanted",
        "_sock",
        "_src",
        "_src_ip",
        "_src_port",
        "_tr",
        "_tx",
    )

    TRANSITIONS = UDP_TRANSITIONS
    LOG_FLAG = LogFlags.LOG_UDP
    KIND = "udp"

    def __init__(
        self, iomux: IIoMux, user: USocket | None, log: IInstanceLog, useIPv6: bool = False
    ) -> None:
        super().__init__(iomux, user, log, useIPv6)
        self._sock: socket.socket | None = None
        self._tx: Any = None  # the compiled build's sender on `_sock` (`_fastsend.DgramSender`)
        self._tr: Any = None
        self._family = 0
        self._copy = True
        self._reuse = False
        self._server_name: str | None = None  # kept for a DTLS upgrade's name check
        # receive side
        self._q = RecvQueue(
            log, self.LOG_FLAG, self.KIND, id(self), "datagram", HOLD_DATAGRAMS, HOLD_BYTES
        )
        # send side
        self._cache: list[tuple[Any, Any]] = []  # (datagram: bytes or bytearray, dst)
        self._shutdown_wanted = False
        # set when the transport is lost: the datagrams held go to Recv first, then this end
        self._peer_end: ShutdownReason | None = None
        self._last_ip: Any = None
        self._last_port = -1
        self._last_dst: Any = None
        # the source of the last datagram delivered: a reply to it needs no parsing
        self._src: Any = None
        self._src_ip: Any = None
        self._src_port = -1
        self._media_lane: Any = None  # IMedia's lane (`_set_media_lane`); None: none

    @property
    def dropped(self) -> int:
        """Beyond the SDK: datagrams dropped because no `Recv` was pending and the hold
        queue was full."""
        return self._q.dropped

    # ------------------------------------------------------------------ state machine

    def _illegal(self, old: State, new: State) -> str:
        if new is S.CONNECTING and old in (S.BINDING, S.BOUND):
            return (
                "Connect on a bound UDP socket: the first of Bind or Connect fixes the mode. "
                "A bound socket reaches any peer with SendTo and Recv (SocketRecvFromResult); "
                "to fix the peer, make a new socket and Connect it (it picks its local port)"
            )
        if new is S.BINDING and old in (S.CONNECTING, S.CONNECTED):
            return (
                "Bind on a connected UDP socket: the first of Bind or Connect fixes the "
                "mode; make a new socket and Bind it to receive from any peer"
            )
        if new is S.CONNECTING or new is S.BINDING:
            return (
                f"Connect/Bind on a UDP socket that is {old.value}: call Bind or Connect "
                "once per socket; make a new socket for another"
            )
        return f"a UDP socket that is {old.value} cannot become {new.value}"

    # ------------------------------------------------------------------ deferral, the end

    def _run_due_held(self) -> None:
        q = self._q
        if q.held and q.rq and self._state in _OPEN:
            self._deliver_held()

    def _release(self) -> None:
        """Cancel the task, drop buffers and queues, abort the transport or close the
        socket."""
        task = self._cancel_task()
        self._q.clear()
        self._cache.clear()
        tr, self._tr = self._tr, None
        sock, self._sock = self._sock, None
        self._tx = None
        if tr is not None:
            tr.abort()
        elif sock is not None and task is None:
            sock.close()
        # else: the task is handing `sock` to a transport; connection_made aborts it

    # ------------------------------------------------------------------ opening

    def Bind(
        self, localAddr: str | None = None, localPort: int = 0, reuseAddr: bool = False
    ) -> None:
        """Bind to `localAddr:localPort` (None: all interfaces, "::" with `useIPv6`, which
        takes IPv4 too; port 0: any) and receive from any peer.

        Leads to `SocketBindResult(socket, addr, port)`, then, per `Recv`, one
        `SocketRecvFromResult`; or to `SocketShutdown` with `SOCKET_ADDRESS_INVALID`,
        `SOCKET_OPEN_FAILED`, `SOCKET_ADDR_IN_USE` or `SOCKET_BIND_FAILED`.

        Raises:
            SocketModeError: Bind or Connect was called before.
        """
        self._check_alive("Bind")
        port = int(localPort)
        self._set_state(S.BINDING)
        self._task = self._loop.create_task(self._bind(localAddr, port, reuseAddr))

    async def _bind(self, localAddr: str | None, localPort: int, reuseAddr: bool) -> None:
        self._reuse = reuseAddr
        opened = await open_bound(self._loop, localAddr, localPort, reuseAddr, self._use_ipv6)
        await self._attach(opened)

    def Connect(self, address: str, serverName: str | None = None) -> None:
        """Fix the peer to `address` ("ip:port", "[v6]:port" or "name:port").

        Leads to `SocketConnectComplete` (no packet is exchanged: UDP has no handshake),
        then, per `Recv`, one `SocketRecvResult`; or to `SocketShutdown` with
        `SOCKET_ADDRESS_INVALID`, `SOCKET_OPEN_FAILED` or `SOCKET_CONNECT_FAILED`.
        `Send` before `SocketConnectComplete` is cached. `serverName` is kept for
        `UpgradeToTLSSocket` (DTLS checks the server's certificate against it).

        Raises:
            SocketModeError: Bind or Connect was called before.
        """
        target = self._connect_target(address)
        self._server_name = serverName
        if target is not None:
            self._task = self._loop.create_task(self._connect(target))

    async def _connect(self, target: Address) -> None:
        await self._attach(await open_connected(self._loop, target, self._use_ipv6))

    async def _attach(self, opened: socket.socket | OpenError) -> None:
        """Make the socket opened the transport's and complete Bind/Connect (`_made`,
        once `connection_made` has returned: see `_datagram`, "Making the transport"),
        or end with the reason it could not be opened. Cancelled (the socket ended
        meanwhile), it leaves the transport to `_release` or to `connection_made`."""
        if isinstance(opened, OpenError):
            self._task = None
            self._event(self._open_failed, opened.reason, opened.what, opened.detail)
            return
        sock = opened
        if self._state is not S.BINDING and self._state is not S.CONNECTING:
            sock.close()
            return
        self._sock = sock
        self._family = sock.family
        try:
            await self._loop.create_datagram_endpoint(self._as_protocol, sock=sock)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self._task = None
            if self._tr is None and self._sock is sock:
                self._sock = None
                sock.close()
            if self._state is S.BINDING or self._state is S.CONNECTING:
                why = repr(e)
                self._event(self._open_failed, ShutdownReason.SOCKET_OPEN_FAILED, "open", why)
            return
        self._task = None
        st = self._state
        if st is S.BINDING or st is S.CONNECTING:
            if self._tr is not None:
                self._event(self._made, st is S.BINDING)
            else:  # lost before it was ours (connection_lost came first)
                why = "the transport closed as it was made"
                self._event(self._open_failed, ShutdownReason.SOCKET_OPEN_FAILED, "open", why)

    def _as_protocol(self) -> Any:
        """The protocol of the socket's transport: the socket itself (neither loop's
        datagram transport asks its protocol's class; see `_stream._Events`)."""
        return self

    # ------------------------------------------------------------------ transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tr: Any = transport
        st = self._state
        if st is not S.BINDING and st is not S.CONNECTING:
            drop_transport(tr)  # ended while the transport was made
            return
        # only recorded here: the socket goes on in `_attach` once this has returned
        self._tr = tr
        self._copy = copies_needed(tr)
        tr.set_write_buffer_limits(high=0)
        if st is S.BINDING and not self._reuse:
            self._clear_reuse(tr)  # at once: the port is ours alone from the start

    def _made(self, bound: bool) -> None:
        """The transport is ours (an event): bound or connected, then `_opened`."""
        self._set_state(S.BOUND if bound else S.CONNECTED)
        sock = self._sock
        if sock is not None:
            try:
                name = sock.getsockname()
                self._local = (format_ip(name[0]), int(name[1]))
            except OSError:
                pass
            if self._qos is not None:
                self._apply_qos()
            if DgramSender is not None:
                self._tx = DgramSender(sock)
        self._opened(bound)

    def _opened(self, bound: bool) -> None:
        """Bound or connected (an event): cached datagrams go out, the app hears of it,
        datagrams read before go to the `Recv`s pending, and a `Shutdown` made meanwhile
        begins."""
        self._recheck_send()  # a SocketSendResult the app set since the socket took its user
        cache, self._cache = self._cache, []
        for data, dst in cache:
            if bound:
                self._flush_to(data, dst)
            else:
                self._put(data, None)
        if bound:
            self._callback("SocketBindResult", self._local[0], self._local[1])
        else:
            self._callback("SocketConnectComplete")
        if self._q.held and self._q.rq and self._state in _OPEN:
            self._push(HELD)  # read between connection_made and now
        if self._shutdown_wanted and self._state in _OPEN:
            self._begin_close()

    def _clear_reuse(self, tr: Any) -> None:
        """libuv (uvloop) turns SO_REUSEADDR on for every UDP socket it opens; without
        `reuseAddr` the port must stay ours alone, as on the default loop."""
        try:
            clear_reuse(tr)
        except OSError as e:
            self._fail_log("cannot clear SO_REUSEADDR", e)

    def _flush_to(self, data: Any, dst: tuple[IPaddr, int]) -> None:
        """Send a datagram cached while binding (its address checked against the family now)."""
        try:
            addr = self._dest(dst[0], dst[1])
        except ValueError as e:
            self._fail_log("SendTo dropped", e)
            self._push_sent(1)
            return
        self._put(data, addr)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        lane = self._media_lane  # IMedia's lane first (`_set_media_lane`), unless some wait
        if lane is not None and not self._q.held:
            # the lane's datagram is an event of this socket's: the results of the sends
            # made in it (the app's echo) are delivered at its end, not from the loop's
            # next batch (one more loop iteration for each packet)
            self._in_event = True
            try:
                taken = lane(data, addr)
            finally:
                self._in_event = False
            if taken:
                if self._due:
                    self._run_due()
                return
        st = self._state
        if st is not S.BOUND and st is not S.CONNECTED:
            if self._tr is not None and (st is S.BINDING or st is S.CONNECTING):
                self._q.hold(data, addr)  # the app hears of the socket first (`_made`)
            return
        q = self._q
        rq = q.rq
        if not rq or q.held:
            q.hold(data, addr)
            if rq:
                self._event(self._deliver_held)
            return
        # `RecvQueue.fill`, written out: the view is released before the callback, so
        # the buffer is the app's again (it may resize it there)
        buf, mv = rq.popleft()
        n = len(data)
        if n <= mv.nbytes:
            mv[:n] = data
        else:
            n = q.truncate(mv, data)
        mv.release()
        # the per-datagram event, written out: see `SocketBase._event`
        self._in_event = True
        try:
            if st is S.CONNECTED:
                self._user.SocketRecvResult(self, buf, n)
            else:
                if addr == self._src:  # the same peer again (the loop makes a new tuple)
                    ip = self._src_ip
                    port = self._src_port
                else:
                    ip = ip_of(addr[0])
                    self._src = addr
                    self._src_ip = ip
                    self._src_port = port = addr[1]
                self._user.SocketRecvFromResult(self, buf, n, ip, port)
        except Exception as e:
            self._raised("SocketRecvResult" if st is S.CONNECTED else "SocketRecvFromResult", e)
        self._in_event = False
        if self._due:
            self._run_due()

    def _deliver_held(self) -> None:
        """Move held datagrams into pending Recvs (we are in an event or in `_run_due`)."""
        q = self._q
        held = q.held
        rq = q.rq
        while rq and held:
            st = self._state
            if st is not S.BOUND and st is not S.CONNECTED:
                return
            data, addr = q.pop_held()
            buf, n = q.fill(data)
            if st is S.CONNECTED:
                self._callback("SocketRecvResult", buf, n)
            else:
                ip = ip_of(addr[0])
                self._src = addr
                self._src_ip = ip
                self._src_port = addr[1]
                self._callback("SocketRecvFromResult", buf, n, ip, addr[1])
        if not held:
            q.drained()
            self._check_end()

    def _check_end(self) -> None:
        """The transport is gone: end once every held datagram went to a Recv."""
        if self._peer_end is not None and not self._q.held and self._state in _OPEN:
            self._end(self._peer_end)

    def error_received(self, exc: Exception) -> None:
        """An ICMP error or a failed send: logged, never the end of the socket."""
        if self._state is not S.DELETED:
            self._fail_log("error (the socket carries on)", repr(exc))

    def connection_lost(self, exc: Exception | None) -> None:
        self._tr = None
        self._sock = None
        self._tx = None
        self._event(self._lost, exc)

    def _lost(self, exc: Exception | None) -> None:
        """The transport is gone (an event)."""
        st = self._state
        if st is S.CLOSING:
            if exc is not None:
                self._fail_log("lost while closing", repr(exc))
            self._end(ShutdownReason.SOCKET_SHUTDOWN_NORMAL)
        elif st is S.BOUND or st is S.CONNECTED:
            # as on a stream socket, what was read already still goes to Recv first;
            # sends are dropped (and logged) from now on, then SOCKET_LOST
            held = self._q.held.__len__()
            what = f"transport lost ({held} held datagrams go to Recv first)"
            self._fail_log(what if held else "transport lost", repr(exc))
            self._peer_end = ShutdownReason.SOCKET_LOST
            self._shutdown_wanted = True
            if held and self._q.rq:
                self._deliver_held()
            self._check_end()

    # ------------------------------------------------------------------ IMedia's lane

    def _set_media_lane(self, lane: Any) -> Any:
        """Internal, for `IMedia` only (its socket's per-packet shortcut): while `lane` is
        set, each datagram of this bound socket goes first to `lane(data, addr)`, the
        transport's `bytes` and source as they came, before any `Recv` buffer, as an
        event of this socket's (the results of the sends made in it are delivered at
        its end); True: the lane took it (nothing more happens here), False: it goes
        the usual way. Not
        while datagrams wait in the hold (they come first). `lane` None disarms it; the
        owner disarms it before `Shutdown` and when it stops taking packets. Returns the
        source of the datagram last given to `SocketRecvFromResult` (the one being
        delivered, when called from there as IMedia does), as the transport gave it;
        None when disarmed, or on a socket that is not bound (which it leaves disarmed)."""
        if lane is not None and self._state is not S.BOUND:
            lane = None
        self._media_lane = lane
        return self._src if lane is not None else None

    def _media_lane_send(self, data: bytes, addr: Any) -> None:
        """Internal, for `IMedia` only: `SendTo(data, None, ...)` of a `bytes` datagram to
        `addr`, a sockaddr `_dest` made; the caller checked the thread. Ignored, as
        `SendTo` is, once the socket is shutting down or its transport is gone."""
        if self._state is _BOUND and not self._shutdown_wanted:
            sock = self._sock
            if sock is not None and not self._blocked and not self._w_send:
                try:  # `_put`'s common case, written out: the kernel takes it, no result due
                    sock.sendto(data, addr)
                    return
                except OSError:  # not sent: `_put` tries again and does what it does then
                    pass
            self._put(data, addr)

    # ------------------------------------------------------------------ ISocket: data

    def _data(self, buf: Buffer, len: int | None, call: str, keep: bool) -> Any:
        """The datagram to hand over: `buf` itself when that is safe, else a copy.
        `keep`: it will be held (cached) after the call returns."""
        if type(buf) is bytes and (len is None or len == buf.__len__()):
            return buf
        if type(buf) is bytearray:  # a copy is as cheap as a view here, and always safe
            if len is None:
                return bytes(buf)
            if 0 <= len <= buf.__len__():
                return buf[:len]
            raise ValueError(f"{call}: len={len} but the buffer holds {buf.__len__()} bytes")
        mv = memoryview(buf)
        if mv.ndim != 1 or mv.itemsize != 1:
            mv = mv.cast("B")
        if len is not None:
            if len < 0 or len > mv.nbytes:
                raise ValueError(f"{call}: len={len} but the buffer holds {mv.nbytes} bytes")
            if len != mv.nbytes:
                mv = mv[:len]
        if keep or self._copy:
            return mv.tobytes()
        return mv

    def _put(self, data: Any, addr: Any) -> None:
        """Send one datagram; its `SocketSendResult` is counted. While the transport
        queues nothing (not `_blocked`) the socket sends it itself (the transport's
        `sendto` costs more than the `send(2)` it makes); a datagram the kernel cannot
        take now (EAGAIN) goes to the transport, which queues it. A datagram the kernel
        refuses goes to `error_received` and is dropped, as both loops' transports do."""
        sock = self._sock
        if data.__len__():
            if sock is not None and not self._blocked:
                try:
                    if addr is None:
                        sock.send(data)
                    else:
                        sock.sendto(data, addr)
                except (BlockingIOError, InterruptedError):
                    self._tr.sendto(data, addr)
                except OSError as e:
                    self.error_received(e)
            else:
                self._tr.sendto(data, addr)
        else:
            self._send_empty(addr)
        self._count_send()

    def _out(self, buf: Buffer, len: int | None, addr: Any, call: str) -> None:
        """`SendTo`/`Send` of an open socket: one datagram of the first `len` bytes of
        `buf` to `addr` (None: the connected peer). The common case (a non-empty bytes or
        bytearray while the transport queues nothing) is `_data`, `_put` and
        `_count_send` written out, in one call: the kernel copies the datagram before
        `send(2)` returns, so it goes from the caller's buffer (the compiled helper,
        `_tx`, sends the first `len` bytes of it with no copy and keeps the last
        destination's sockaddr; without it a whole buffer goes as it is, a part as a
        slice). Other buffers, an empty datagram and a transport that queues take `_put`."""
        sock = self._sock
        t = type(buf)
        if sock is None or self._blocked or (t is not bytearray and t is not bytes):
            self._put(self._data(buf, len, call, False), addr)
            return
        size = buf.__len__()
        if len is None or len == size:
            n = size
        elif 0 <= len < size:
            n = len
        else:
            raise ValueError(f"{call}: len={len} but the buffer holds {size} bytes")
        if not n:
            self._put(b"", addr)
            return
        try:
            tx = self._tx
            if tx is not None:
                tx.send(buf, n, addr)
            elif addr is None:
                sock.send(buf if n == size else buf[:n])
            else:
                sock.sendto(buf if n == size else buf[:n], addr)
        except (BlockingIOError, InterruptedError):
            # the transport queues it (and pauses): it keeps bytes of its own
            self._tr.sendto(buf[:n] if n < size or t is bytearray else buf, addr)
        except OSError as e:
            self.error_received(e)
        # `_count_send`, written out
        if self._blocked:
            self._unreported += 1
        elif self._w_send:
            self._push_sent(1)

    def _send_empty(self, addr: Any) -> None:
        # Both loops' transports drop empty datagrams silently; send it ourselves.
        sock = self._sock
        try:
            if sock is None or self._tr.get_write_buffer_size():
                raise BlockingIOError(errno.EAGAIN, "the transport is still sending")
            if addr is None:
                sock.send(b"")
            else:
                sock.sendto(b"", addr)
        except OSError as e:
            self._fail_log("empty datagram not sent", repr(e))

    def SendTo(self, buf: Buffer, len: int | None, dstAddr: Any, dstPort: Any) -> None:
        # dstAddr, dstPort: Any, so that the compiled build, too, reports a wrong type
        # with the ValueError below instead of its own TypeError
        """Bound sockets: send the first `len` bytes of `buf` (all with None) as one
        datagram to `dstAddr:dstPort`; the caller may reuse `buf` on return.

        `dstAddr` is an `ipaddress` object or an IP literal string ("1.2.3.4", "::1",
        "[::1]"); names are not resolved here (Connect resolves them). An IPv4
        destination on an IPv6 socket is sent IPv4-mapped.

        Leads to one `SocketSendResult` per call, in call order, once the datagram has left
        for the kernel (cached until `SocketBindResult` while binding). A send the network
        refuses is logged and still reported: it never ends the socket. Ignored after
        `Shutdown`.

        Raises:
            ValueError: `dstAddr` is no IP address, `dstPort` is not 1..65535, `len` is
                larger than the buffer, or an IPv6 destination on an IPv4 socket.
            SocketModeError: the socket is connected (use `Send`), not bound yet (call
                `Bind` first), or deleted.
        """
        if not is_owned(self._owner):
            self._mux.on_loop("SendTo")  # the thread check, exact (see `_iomux`)
        st = self._state
        if st is S.BOUND and not self._shutdown_wanted:
            if dstAddr is self._src_ip and dstPort == self._src_port:
                addr = self._src  # a reply: the sender's own address, as the kernel gave it
            elif dstPort == self._last_port and dstAddr == self._last_ip:
                addr = self._last_dst
            else:
                addr = self._dest(dstAddr, dstPort)
                self._last_ip = dstAddr
                self._last_port = dstPort
                self._last_dst = addr
            self._out(buf, len, addr, "SendTo")
            return
        self._later("SendTo", buf, len, dstAddr, dstPort, S.BOUND, _SENDTO_REFUSED)

    def _later(
        self,
        call: str,
        buf: Buffer,
        len: int | None,
        dstAddr: Any,
        dstPort: Any,
        mode: State,
        refused: tuple[str, str],
    ) -> None:
        """`call` when its datagram cannot go at once: cached while Bind/Connect is in
        progress (`SendTo` checks the destination first), ignored once the socket is
        shutting down or closed (`mode`, its open state, after `Shutdown`); else
        `SocketModeError` with the first of `refused` before Bind/Connect, the second in
        the other mode.

        Raises:
            SocketModeError: see above, or the socket is deleted.
            ValueError: a `SendTo` destination that is no IP address and port.
        """
        st = self._state
        bound = mode is S.BOUND
        if st is (S.BINDING if bound else S.CONNECTING):
            if not self._shutdown_wanted:
                dst = (self._parse_dst(dstAddr, dstPort), dstPort) if bound else None
                self._cache.append((self._data(buf, len, call, True), dst))
            return
        if st is S.CLOSING or st is S.CLOSED or st is mode:
            if self._peer_end is not None and st is mode:
                self._fail_log(f"{call} dropped", "the transport is gone")
            return
        self._check_alive(call)
        raise SocketModeError(refused[0] if st is S.IDLE else refused[1])

    @staticmethod
    def _parse_dst(dstAddr: Any, dstPort: Any) -> IPaddr:
        if type(dstPort) is not int or not 1 <= dstPort <= 65535:
            raise ValueError(f"SendTo: dstPort={dstPort!r} must be an int from 1 to 65535")
        if isinstance(dstAddr, ipaddress.IPv4Address | ipaddress.IPv6Address):
            return dstAddr
        if isinstance(dstAddr, str):
            try:
                return ip_of(dstAddr.strip())
            except ValueError:
                pass
        raise ValueError(
            f"SendTo: dstAddr={dstAddr!r} is no IP address; pass an ipaddress object or a "
            "literal like '192.0.2.1' or '2001:db8::1' (resolve names first, or Connect to "
            "'name:port')"
        )

    def _dest(self, dstAddr: Any, dstPort: Any) -> tuple[str, int]:
        """The sockaddr for `sendto` on this socket's family."""
        ip = self._parse_dst(dstAddr, dstPort)
        if self._family == socket.AF_INET6:
            if ip.version == 4:
                return ("::ffff:" + str(ip), dstPort)
            return (str(ip), dstPort)
        if ip.version == 6:
            raise ValueError(
                f"SendTo: {ip} is IPv6 but the socket is IPv4; create it with useIPv6=True "
                "and Bind to '::' (or an IPv6 address)"
            )
        return (str(ip), dstPort)

    def Send(self, buf: Buffer, len: int | None = None) -> None:
        """Connected sockets: send the first `len` bytes of `buf` (all with None) as one
        datagram to the peer; the caller may reuse `buf` on return.

        Leads to one `SocketSendResult` per call, in call order, once the datagram has left
        for the kernel (cached until `SocketConnectComplete`). An ICMP error the peer's
        host sends back is logged and never ends the socket. Ignored after `Shutdown`.

        Raises:
            SocketModeError: the socket is bound (use `SendTo`), idle (call `Connect`
                first), or deleted.
        """
        if not is_owned(self._owner):
            self._mux.on_loop("Send")  # the thread check, exact (see `_iomux`)
        st = self._state
        if st is S.CONNECTED and not self._shutdown_wanted:
            self._out(buf, len, None, "Send")
            return
        self._later("Send", buf, len, None, None, S.CONNECTED, _SEND_REFUSED)

    def Recv(
        self, buf: bytearray | memoryview, len: int | None = None, recvPartial: bool = False
    ) -> None:
        """Receive one datagram into the first `len` bytes of `buf` (all with None).

        Leads to `SocketRecvFromResult(socket, buf, n, srcAddr, srcPort)` on a bound
        socket, `SocketRecvResult(socket, buf, n)` on a connected one, with `n` the
        datagram's size; a longer datagram is truncated to `len` (and logged).
        `recvPartial` makes no difference. Several Recv calls queue in order. Ignored
        once the socket is shutting down.

        Raises:
            ValueError: `buf` is read-only or `len` is not 1..len(buf).
        """
        if not is_owned(self._owner):
            self._mux.on_loop("Recv")  # the thread check, exact (see `_iomux`)
        st = self._state
        q = self._q
        if type(buf) is bytearray and (st is S.BOUND or st is S.CONNECTED):
            # the common case, kept short: an open socket, a bytearray
            size = buf.__len__()
            if (len is None or len == size) and size:
                mv = memoryview(buf)
            elif len is not None and 0 < len < size:
                mv = memoryview(buf)[:len]
            else:
                raise ValueError(
                    f"Recv: len={len} must be between 1 and the buffer's size ({size})"
                )
            q.rq.append((buf, mv))
            if q.held:
                self._push(HELD)
            return
        if self._recv_ignored(st):
            return
        q.add(buf, len, "Recv")
        if q.held:
            self._push(HELD)

    def RecvCancel(self) -> None:
        """Cancel every pending `Recv`: one `SocketRecvCanceled(socket, buf)` each, in
        order, later. Datagrams held meanwhile wait for the next `Recv`."""
        self._check_alive("RecvCancel")
        if not self._q.rq:
            return
        for b in self._q.cancel():
            self._push(("SocketRecvCanceled", (b,)))

    # ------------------------------------------------------------------ ISocket: the rest

    def Listen(self) -> None:
        """Not for UDP.

        Raises:
            SocketModeError: always; UDP has no connections. Receive from any peer with
                Bind + Recv, or make a DTLS socket (TLS provider, `EnableDTLS`) to Listen.
        """
        self._check_alive("Listen")
        raise SocketModeError(
            "Listen on a UDP socket: UDP has no connections; Bind and Recv "
            "(SocketRecvFromResult) to serve any peer, or use a DTLS socket to Listen"
        )

    def Accept(self, remoteUser: USocket | None) -> None:
        """Not for UDP.

        Raises:
            SocketModeError: always; UDP sockets never call `SocketListenResult`.
        """
        self._check_alive("Accept")
        raise SocketModeError(
            "Accept on a UDP socket: UDP has no connections to accept; only DTLS sockets "
            "call SocketListenResult"
        )

    def _qos_socket(self) -> socket.socket | None:
        return self._sock

    def Shutdown(self) -> None:
        """Send what is cached or queued, close, then `SocketShutdown(SOCKET_SHUTDOWN_NORMAL)`
        (after the `SocketSendResult` of every datagram sent). Pending `Recv` buffers are
        dropped without a callback; `Send`/`SendTo` after `Shutdown` are ignored."""
        st = self._state
        self._check_alive("Shutdown")
        if st is S.BOUND or st is S.CONNECTED:
            self._begin_close()
        elif st is S.BINDING or st is S.CONNECTING:
            self._shutdown_wanted = True
        elif st is S.IDLE:
            self._end(ShutdownReason.SOCKET_SHUTDOWN_NORMAL)

    def hand_over(self) -> Handover:
        """Give the transport and the datagrams read so far to the DTLS socket that takes
        this connected socket over (`UpgradeToTLSSocket`): from then on this socket has
        no transport and calls its user back no more. The caller checked `hand_over_refusal`."""
        tr = self._tr
        held = [d for d, _ in self._q.held]
        peer = tr.get_extra_info("peername") if tr is not None else None
        self._tr = None
        self._sock = None
        self._tx = None
        # inside SocketConnectComplete the opening task runs (it is not cancelled, and
        # nothing of it may close the transport the new owner takes over)
        self._task = None
        self._end(ShutdownReason.SOCKET_SHUTDOWN_NORMAL, silent=True)  # its user hears no more
        return Handover(tr, held, peer, self._local, self._server_name)

    def hand_over_refusal(self) -> str | None:
        """None when `hand_over` may run (connected, with its transport), else the
        state the socket is in."""
        if self._state is S.CONNECTED and self._tr is not None:
            return None
        return self._state.value

    def uses_ipv6(self) -> bool:
        """The `useIPv6` this socket was made with (a DTLS socket taking it over keeps it)."""
        return self._use_ipv6

    def deleted(self) -> bool:
        """True once `Delete` was called."""
        return self._state is S.DELETED

    def _begin_close(self) -> None:
        self._set_state(S.CLOSING)
        self._q.clear()
        tr = self._tr
        if tr is None:  # lost underneath (held datagrams were waiting): the honest reason
            self._end(self._peer_end or ShutdownReason.SOCKET_SHUTDOWN_NORMAL)
            return
        tr.close()  # sends what it queues first, then connection_lost
