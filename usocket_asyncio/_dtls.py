"""DTLS 1.2 sockets (with DTLS-SRTP keying) over UDP: an asyncio adapter over the engine.

Theory of operation
-------------------
A `DTLSSocket` is made by the TLS provider for a context on which `EnableDTLS` was
called (or by `UpgradeToTLSSocket` from a connected UDP socket). The DTLS protocol itself
(handshake, cookies, retransmission, MTU packing, verification, ALPN, SNI, SRTP keying,
close_notify) is the sans-IO engine of `_dtls_core`: each connected socket holds one
`DtlsConnection`, a listener one `CookieListener`. This module only moves datagrams,
time and events between the engine, the UDP endpoint and the app.

The endpoint. One `_Endpoint` (the `DatagramProtocol` of one UDP transport) carries
either one connected DTLS socket (a client, or an upgraded UDP socket), or a listening
DTLS socket and every peer socket it accepted: datagrams are demultiplexed by source
address (`_Endpoint.peers`); a datagram from an unknown source goes to the listener.
The endpoint closes when nobody uses it any more, so peer sockets outlive the
listener's `Shutdown`/`Delete`, as accepted TCP sockets do.

Who owns each datagram.
- Incoming: the endpoint hands each datagram to its socket, which gives it to its
  engine (`receive_datagram`, with the loop's time) and then pumps (`_pump`): it sends
  what the engine wants sent, maps each engine event to the app's callbacks, and re-arms
  the socket's one loop timer from `get_timer`. Each decrypted record is one `Recv`'s
  worth: it goes straight to the pending `Recv` or waits in the bounded hold queue of
  the shared datagram layer (`RecvQueue`, `HOLD_RECORDS`; beyond it the record is
  dropped and logged).
- Outgoing: the engine packs records into datagrams of at most the path MTU
  (`DEFAULT_MTU`, `SetMtu`); the socket sends them to its peer at once. Each `Send` is
  one record: a `Send` larger than the cleartext MTU raises `ValueError`; nothing is
  fragmented silently. `Send` before the handshake completes is cached and sent after it.

Server side. A datagram from an unknown source goes to the listener's `CookieListener`:
a ClientHello without a valid cookie gets a HelloVerifyRequest and leaves nothing behind
(stateless: a spoofed ClientHello costs one HelloVerifyRequest); one with a valid cookie
becomes a connection: `SocketListenResult`, then, if the app called `Accept(user)` inside
it, a peer socket takes the connection on (`SocketAcceptComplete` when its handshake is
done); otherwise the peer gets a fatal alert. Peers in handshake and established peers
are capped (`MAX_HANDSHAKING_PEERS`, `MAX_PEERS`); ClientHellos beyond the caps are
dropped and logged.

ALPN and SNI are the engine's (see `_dtls_core`). Once a side's handshake is done the
socket offers the negotiated protocol to `SocketAcceptSelectedALPNProtocol`, before its
`SocketConnectComplete`/`SocketAcceptComplete`; False sends close_notify and ends it
with `SOCKET_ALPN_SELECTION_FAILED`. The peer completes its handshake all the same
(a refusing server sent its Finished just before): its own ALPN callback and
Connect/AcceptComplete come first, then `SOCKET_SHUTDOWN_BY_PEER`. (Should a refusing
server's last flight be lost, the client's handshake runs into its deadline instead.)

Timers. The engine keeps the retransmission schedule and the handshake deadline
(`HANDSHAKE_TIMEOUT`) on the loop's clock; the socket holds one `call_at` handle for the
engine's `get_timer()`, moved when that changes and cancelled on every way out.

Callbacks. Each endpoint datagram, timer and task step enters the socket through
`SocketBase._event`; the callbacks it gives (records, send results, the handshake's
completion) are queued on the socket's deferral queue, the one stream and UDP sockets
use, and delivered in order when the event ends (from the loop's batch when an app call
made them). A callback that answers (`SocketListenResult`, the ALPN choice) first lets
the queue deliver what came before it (`_run_due`). An upgrade takes the connected UDP
socket's transport and held datagrams (`UDPSocket.hand_over`, which ends that socket
silently through `_end`).

What ends a connection (`SocketBase._end` is the one place): our `Shutdown` (close_notify, then
`SOCKET_SHUTDOWN_NORMAL`), `Delete` (close_notify, no callback), the engine's
`CloseNotify` (`SOCKET_SHUTDOWN_BY_PEER`, after the records before it were handed to
`Recv`), its `ConnectionFailed` with the engine's reason (a failed handshake or
verification, no agreed SRTP profile or the deadline: `SOCKET_TLS_HANDSHAKE_FAILED`;
a fatal alert or record error after the handshake: `SOCKET_LOST`, after the records
before it), the app refusing the ALPN protocol (`SOCKET_ALPN_SELECTION_FAILED`), or a
lost transport (`SOCKET_LOST`). Every detail is logged under `LOG_DTLS`.
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING, Any

from OpenSSL import SSL

from ._address import Address, format_ip
from ._api import Buffer, USocket
from ._base import ENDED, S, SocketBase, State, as_view, transitions
from ._context import SocketContext
from ._datagram import (
    RecvQueue,
    clear_reuse,
    copies_needed,
    drop_transport,
    open_bound,
    open_connected,
)
from ._dtls_core import COOKIE_WINDOW as COOKIE_WINDOW
from ._dtls_core import DEFAULT_MTU as DEFAULT_MTU
from ._dtls_core import DTLS1_2_VERSION as DTLS1_2_VERSION
from ._dtls_core import HANDSHAKE_TIMEOUT as HANDSHAKE_TIMEOUT
from ._dtls_core import MAX_HANDSHAKING_PEERS as MAX_HANDSHAKING_PEERS
from ._dtls_core import MAX_MTU as MAX_MTU
from ._dtls_core import MAX_PEERS as MAX_PEERS
from ._dtls_core import MIN_MTU as MIN_MTU
from ._dtls_core import RECORD_OVERHEAD as RECORD_OVERHEAD
from ._dtls_core import SRTP_KEY_LENGTHS as SRTP_KEY_LENGTHS
from ._dtls_core import SRTP_LABEL as SRTP_LABEL
from ._dtls_core import SRTP_PROFILES as SRTP_PROFILES
from ._dtls_core import (
    ApplicationData,
    CloseNotify,
    ConnectionFailed,
    CookieListener,
    DtlsConfig,
    DtlsConnection,
    DtlsEvent,
    HandshakeCompleted,
    alert_record,
    is_client_hello,
)
from ._dtls_core import name_matches as name_matches
from ._dtls_core import pack_records as pack_records
from ._dtls_core import split_records as split_records
from ._errors import detail
from ._types import IPaddr, LogFlags, ShutdownReason, SocketModeError
from ._udp import UDPSocket

if TYPE_CHECKING:
    from ._datagram import OpenError
    from ._iomux import IIoMux
    from ._log import IInstanceLog

HOLD_RECORDS = 256
"""Records held for an app with no pending `Recv` before new ones are dropped."""

_LIMIT_LOG_EVERY = 1000

DTLS_TRANSITIONS = transitions(
    {
        S.IDLE: (S.CONNECTING, S.ACCEPTING, S.BINDING),
        S.CONNECTING: (S.CONNECTED,),
        S.ACCEPTING: (S.CONNECTED,),
        S.CONNECTED: (),
        S.BINDING: (S.BOUND,),
        S.BOUND: (S.LISTENING,),
        S.LISTENING: (),
    }
)
"""The legal moves of a DTLS socket (a DTLS `Shutdown` completes at once: no CLOSING)."""

_HANDSHAKING = (S.CONNECTING, S.ACCEPTING)


def dtls_config(ctx: SocketContext, server: bool) -> DtlsConfig:
    """The engine's config for one side of a DTLS socket context (the SRTP profiles
    offered are this module's `SRTP_PROFILES`, read at each call).

    Raises:
        SSL.Error, ValueError: a certificate or key OpenSSL refuses."""
    return DtlsConfig.from_context(ctx, server, srtp_profiles=SRTP_PROFILES)


# --------------------------------------------------------------------------- endpoint


class _Endpoint(asyncio.DatagramProtocol):
    """One UDP transport: one connected DTLS socket (`owner`), or a listener and the
    peers it accepted (`listener`, `peers` by source address)."""

    __slots__ = ("abandoned", "copy", "listener", "offering", "owner", "peers", "qos_sock", "tr")

    def __init__(self) -> None:
        self.tr: Any = None
        self.abandoned = False  # the socket it was made for ended while it was made
        self.owner: DTLSSocket | None = None
        self.listener: DTLSSocket | None = None
        self.peers: dict[Any, DTLSSocket] = {}
        self.copy = True
        self.qos_sock: socket.socket | None = None
        self.offering = 0  # SocketListenResult callbacks running (a peer may be accepted)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.abandoned:
            drop_transport(transport)
            return
        self.tr = transport
        self.copy = copies_needed(transport)

    def abandon(self) -> None:
        """The opening was cancelled (see `_datagram`, "Making the transport"): close the
        transport now if it came, else as soon as it comes."""
        self.abandoned = True
        tr, self.tr = self.tr, None
        if tr is not None:
            tr.abort()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        owner = self.owner
        if owner is not None:
            owner._event(owner._on_datagram, data)
            return
        peer = self.peers.get(addr)
        if peer is not None:
            peer._event(peer._on_datagram, data)
            return
        lst = self.listener
        if lst is not None:
            lst._event(lst._on_new_peer_datagram, data, addr)

    def error_received(self, exc: Exception) -> None:
        owner = self.owner
        if (
            owner is not None
            and owner._state is S.CONNECTING
            and isinstance(exc, ConnectionRefusedError)
        ):
            owner._event(owner._refused, exc)
            return
        who = owner or self.listener
        if who is not None:
            who._fail_log("error (the socket carries on)", repr(exc))

    def connection_lost(self, exc: Exception | None) -> None:
        self.tr = None
        users = [u for u in (self.owner, self.listener) if u is not None]
        users += list(self.peers.values())
        for u in users:
            if u._state not in ENDED:
                u._event(u._lost, exc)

    def send(self, data: bytes, addr: Any) -> None:
        tr = self.tr
        if tr is not None and not tr.is_closing():
            tr.sendto(data, addr)

    def release(self, who: DTLSSocket) -> None:
        """`who` no longer uses the endpoint; close it once nobody does."""
        if self.owner is who:
            self.owner = None
        if self.listener is who:
            self.listener = None
        if who._peer is not None and self.peers.get(who._peer) is who:
            del self.peers[who._peer]
        self.close_if_unused()

    def close_if_unused(self) -> None:
        if self.owner is None and self.listener is None and not self.peers and not self.offering:
            tr, self.tr = self.tr, None
            if tr is not None:
                tr.close()


# --------------------------------------------------------------------------- the socket


class DTLSSocket(SocketBase):
    """A DTLS socket: client (`Connect`), listening server (`Bind`, `Listen`), a peer
    accepted by a listener, or a connected UDP socket upgraded. See the module docstring."""

    __slots__ = (
        "_accept_decided",
        "_accept_user",
        "_cache",
        "_core",
        "_ctx",
        "_ep",
        "_in_alpn",
        "_in_listen_result",
        "_kind",
        "_listener",
        "_mtu",
        "_peer",
        "_peer_end",
        "_peer_fp",
        "_q",
        "_shutdown_wanted",
        "_srtp_keys",
        "_srtp_profile",
        "_timer",
        "_timer_at",
        "_udp",
        "_verify_name",
    )

    TRANSITIONS = DTLS_TRANSITIONS
    LOG_FLAG = LogFlags.LOG_DTLS
    KIND = "dtls"

    def __init__(
        self, iomux: IIoMux, user: USocket | None, log: IInstanceLog, useIPv6: bool,
        ctx: SocketContext,
    ) -> None:  # fmt: skip
        super().__init__(iomux, user, log, useIPv6)
        self._ctx = ctx
        self._kind = "client"
        self._ep: _Endpoint | None = None
        self._peer: Any = None  # source address, for a listener's peer
        self._core: DtlsConnection | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._mtu = DEFAULT_MTU
        self._udp: UDPSocket | None = None
        self._verify_name: str | None = None
        self._srtp_profile: str | None = None
        self._srtp_keys: bytes | None = None
        self._peer_fp: bytes | None = None
        self._q = RecvQueue(
            log, self.LOG_FLAG, self.KIND, id(self), "record", HOLD_RECORDS, 1 << 62
        )
        self._cache: list[bytes] = []
        self._shutdown_wanted = False
        self._peer_end: ShutdownReason | None = None
        # listener
        self._listener: CookieListener | None = None
        self._in_listen_result = False
        self._accept_decided = False
        self._accept_user: USocket | None = None
        self._in_alpn = False

    def __repr__(self) -> str:
        return f"<DTLSSocket {self._kind} {self._state.value} {self._local[0]}:{self._local[1]}>"

    # ------------------------------------------------------------------ state, log

    def _illegal(self, old: State, new: State) -> str:
        if new in (S.CONNECTING, S.BINDING):
            return (
                f"Connect/Bind on a DTLS socket that is {old.value}: the first of Bind or "
                "Connect fixes the mode, once per socket; make a new socket for another"
            )
        if new is S.LISTENING:
            return f"Listen on a DTLS socket that is {old.value}: call Bind first, then Listen"
        return f"a DTLS socket that is {old.value} cannot become {new.value}"

    # ------------------------------------------------------------------ the end

    def _release(self) -> None:
        h, self._timer = self._timer, None
        if h is not None:
            h.cancel()
        self._cancel_task()
        core, self._core = self._core, None
        if core is not None:
            core.abort()  # what had to be sent (close_notify) was sent before
        self._listener = None
        self._q.clear()
        self._cache.clear()
        ep, self._ep = self._ep, None
        if ep is not None:
            ep.release(self)

    def _hs_fail(self, what: str, detail: object) -> None:
        self._fail_log(what, detail)
        self._end(ShutdownReason.SOCKET_TLS_HANDSHAKE_FAILED)

    def _lost(self, exc: BaseException | None) -> None:
        if self._state in _HANDSHAKING:
            self._hs_fail("transport lost during the handshake", repr(exc))
        elif self._state is S.CONNECTED:
            # records already read still go to Recv first, as on a stream socket
            self._fail_log("transport lost", repr(exc))
            if self._peer_end is None:
                self._peer_end = ShutdownReason.SOCKET_LOST
            core = self._core
            if core is not None:
                core.abort()
            self._check_end()
        elif self._state not in ENDED:
            self._fail_log("transport lost", repr(exc))
            self._end(ShutdownReason.SOCKET_LOST)

    # ------------------------------------------------------------------ the engine

    def _pump(self) -> None:
        """After each call into the engine: send what it wants sent, turn its events
        into callbacks, and move the loop timer to its `get_timer()`."""
        core = self._core
        if core is None:
            return
        self._flush(core)
        while self._core is core:
            ev = core.next_event()
            if ev is None:
                break
            self._on_engine_event(core, ev)
        if self._core is core:
            self._flush(core)
            self._arm(core)
            self._check_end()

    def _flush(self, core: DtlsConnection) -> None:
        out = core.datagrams_to_send()
        ep = self._ep
        if ep is not None:
            for dgram in out:
                ep.send(dgram, self._peer)

    def _arm(self, core: DtlsConnection) -> None:
        t = core.get_timer()
        h = self._timer
        if h is not None:
            if t == self._timer_at:
                return
            h.cancel()
            self._timer = None
        if t is not None:
            self._timer_at = t
            self._timer = self._loop.call_at(t, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._event(self._fire)

    def _fire(self) -> None:
        core = self._core
        if core is None or self._state in ENDED:
            return
        # the loop may run a handle up to its clock resolution early
        core.handle_timer(max(self._loop.time(), self._timer_at))
        self._pump()

    def _on_engine_event(self, core: DtlsConnection, ev: DtlsEvent) -> None:
        if isinstance(ev, ApplicationData):
            if self._state is S.CONNECTED and self._peer_end is None:
                self._deliver(ev.data)
        elif isinstance(ev, HandshakeCompleted):
            self._handshake_done(core, ev)
        elif isinstance(ev, CloseNotify):
            # the engine logged it, under this socket's id (as the failures below)
            if self._peer_end is None:
                self._peer_end = ShutdownReason.SOCKET_SHUTDOWN_BY_PEER
        elif isinstance(ev, ConnectionFailed):
            if self._state in _HANDSHAKING:
                self._end(ev.reason)
            elif self._peer_end is None:
                self._peer_end = ev.reason

    def _handshake_done(self, core: DtlsConnection, ev: HandshakeCompleted) -> None:
        self._srtp_profile = ev.srtp_profile
        self._srtp_keys = ev.srtp_keys
        self._peer_fp = ev.peer_fingerprint
        proto = ev.alpn
        if proto is not None and not self._alpn_accepted(core, proto):
            return
        accepted = self._state is S.ACCEPTING
        self._set_state(S.CONNECTED)
        if self._udp is not None:
            self._emit("SocketUpgradeToTLSComplete")
        elif accepted:
            self._emit("SocketAcceptComplete")
        else:
            self._emit("SocketConnectComplete")
        cache, self._cache = self._cache, []
        for data in cache:
            self._put(data)
        if self._shutdown_wanted:
            self._close_now()

    def _alpn_accepted(self, core: DtlsConnection, proto: str) -> bool:
        """Offer the negotiated protocol to `SocketAcceptSelectedALPNProtocol` (after
        the callbacks queued before it). False from the app sends close_notify (the
        peer, whose handshake is done, ends with `SOCKET_SHUTDOWN_BY_PEER`) and ends
        this socket with `SOCKET_ALPN_SELECTION_FAILED`. A `Shutdown` inside the
        callback does the same with `SOCKET_SHUTDOWN_NORMAL`; after a `Delete` inside
        it, nothing more happens. Returns whether the handshake may complete."""
        st = self._state
        self._run_due()  # callbacks queued before this one go first
        self._in_alpn = True
        try:
            ok = self._callback("SocketAcceptSelectedALPNProtocol", proto)
        finally:
            self._in_alpn = False
        if self._state is not st:
            return False  # deleted inside the callback
        if self._shutdown_wanted:
            reason = ShutdownReason.SOCKET_SHUTDOWN_NORMAL
        elif ok is not None and not ok:
            self._fail_log("ALPN", f"the app refused {proto!r}")
            reason = ShutdownReason.SOCKET_ALPN_SELECTION_FAILED
        else:
            return True
        core.close()
        self._flush(core)
        self._end(reason)
        return False

    # ------------------------------------------------------------------ opening: client

    def Connect(self, address: str, serverName: str | None = None) -> None:
        """Connect to `address` ("ip:port", "[v6]:port" or "name:port") and run the DTLS
        handshake; the server's certificate is checked against `serverName` (else the
        host of `address`) unless the context disabled verification.

        Leads to `SocketConnectComplete` once the handshake is done (with `useSrtp`, the
        SRTP keys are then available), or to `SocketShutdown` with
        `SOCKET_ADDRESS_INVALID`, `SOCKET_OPEN_FAILED`, `SOCKET_CONNECT_FAILED` or
        `SOCKET_TLS_HANDSHAKE_FAILED`. `Send` before it is cached.

        Raises:
            SocketModeError: Bind or Connect was called before.
        """
        target = self._connect_target(address)
        if target is None:
            return
        self._verify_name = serverName or target.host
        self._task = self._loop.create_task(self._connect(target))

    async def _connect(self, target: Address) -> None:
        if await self._attach(await open_connected(self._loop, target, self._use_ipv6)):
            self._event(self._start_client)

    def _refused(self, exc: Exception) -> None:
        """The peer's host refused the ClientHello (ICMP port unreachable): nobody serves
        the port, a connect failure like TCP's."""
        self._fail_log("Connect: refused during the handshake", repr(exc))
        self._end(ShutdownReason.SOCKET_CONNECT_REJECTED)

    async def _attach(self, opened: socket.socket | OpenError) -> bool:
        """An endpoint over the socket opened (True), or the end with the reason it
        could not be opened (False)."""
        if not isinstance(opened, socket.socket):
            self._task = None
            self._event(self._open_failed, opened.reason, opened.what, opened.detail)
            return False
        sock = opened
        if self._state is not S.BINDING and self._state is not S.CONNECTING:
            sock.close()
            return False
        ep = _Endpoint()
        try:
            await self._loop.create_datagram_endpoint(lambda: ep, sock=sock)
        except asyncio.CancelledError:
            # the transport has the socket: closing it closes the socket (on uvloop, a
            # socket.close() of ours would leave the descriptor to the transport)
            ep.abandon()
            raise
        except Exception as e:
            self._task = None
            if ep.tr is None:
                sock.close()
            self._event(self._open_failed, ShutdownReason.SOCKET_OPEN_FAILED, "open", e)
            return False
        self._task = None
        if self._state in ENDED:
            ep.tr.abort()
            return False
        ep.qos_sock = sock
        self._ep = ep
        try:
            name = sock.getsockname()
            self._local = (format_ip(name[0]), int(name[1]))
        except OSError:
            pass
        self._apply_qos()
        return True

    def _start_client(self) -> None:
        if self._state is not S.CONNECTING or self._ep is None:
            return
        self._ep.owner = self
        try:
            config = dtls_config(self._ctx, False)
        except (SSL.Error, ValueError) as e:
            self._hs_fail("cannot set up DTLS", detail(e))
            return
        name = self._verify_name or None
        self._begin(self._new_core(config, None, name))

    def _new_core(self, config: DtlsConfig, peer: Any, name: str | None) -> DtlsConnection:
        return DtlsConnection(
            config,
            peer=peer,
            cookie=False,
            server_name=None if config.server else name,
            verify_name=None if config.server else name,
            mtu=self._mtu,
            handshake_timeout=HANDSHAKE_TIMEOUT,
            log=self._log,
            tag=self.KIND,
            log_id=id(self),
        )

    def _begin(self, core: DtlsConnection) -> None:
        """Start the engine's handshake (a client sends its ClientHello; a server's
        deadline starts)."""
        self._core = core
        self._log.Log(
            self.LOG_FLAG, "dtls %x: handshake starts (%s, mtu %d)", id(self), self._kind, self._mtu
        )
        core.start(self._loop.time(), deadline=True)
        self._pump()

    def _begin_accepted(self) -> None:
        core = self._core
        if core is None or self._state is not S.ACCEPTING:
            return
        self._log.Log(
            self.LOG_FLAG,
            "dtls %x: handshake goes on (%s, mtu %d)",
            id(self),
            self._kind,
            self._mtu,
        )
        core.accept_verified(self._loop.time())
        self._pump()

    # ------------------------------------------------------------------ receiving

    def _on_datagram(self, data: bytes) -> None:
        core = self._core
        if core is None or self._state in ENDED or not data:
            return  # a zero-length datagram holds no record
        core.receive_datagram(data, self._loop.time())
        self._pump()

    def _deliver(self, rec: bytes) -> None:
        q = self._q
        if q.rq and not q.held:
            self._give(rec)
            return
        if q.hold(rec, None):
            self._pump_held()

    def _give(self, rec: bytes) -> None:
        buf, n = self._q.fill(rec)  # its view released: the app's once its result runs
        self._emit("SocketRecvResult", buf, n)

    def _pump_held(self) -> None:
        q = self._q
        while q.rq and q.held:
            self._give(q.pop_held()[0])
        if not q.held:
            q.drained()

    def _check_end(self) -> None:
        if self._peer_end is not None and not self._q.held and self._state is S.CONNECTED:
            self._end(self._peer_end)

    # ------------------------------------------------------------------ server side

    def Bind(
        self, localAddr: str | None = None, localPort: int = 0, reuseAddr: bool = False
    ) -> None:
        """Bind to `localAddr:localPort` (None: all interfaces; port 0: any).

        Leads to `SocketBindResult(socket, addr, port)`, or to `SocketShutdown` with
        `SOCKET_ADDRESS_INVALID`, `SOCKET_OPEN_FAILED`, `SOCKET_ADDR_IN_USE` or
        `SOCKET_BIND_FAILED`. Call `Listen` next (inside `SocketBindResult` or before it).

        Raises:
            SocketModeError: Bind or Connect was called before.
        """
        self._check_alive("Bind")
        port = int(localPort)
        self._set_state(S.BINDING)
        self._kind = "listener"
        self._task = self._loop.create_task(self._bind(localAddr, port, reuseAddr))

    async def _bind(self, localAddr: str | None, localPort: int, reuseAddr: bool) -> None:
        opened = await open_bound(self._loop, localAddr, localPort, reuseAddr, self._use_ipv6)
        if not await self._attach(opened):
            return
        if not reuseAddr and self._ep is not None:
            try:
                clear_reuse(self._ep.tr)
            except OSError as e:
                self._fail_log("cannot clear SO_REUSEADDR", e)
        self._event(self._bound)

    def _bound(self) -> None:
        if self._state is not S.BINDING or self._ep is None:
            return
        self._ep.listener = self
        self._set_state(S.BOUND)
        self._emit("SocketBindResult", self._local[0], self._local[1])
        if self._shutdown_wanted:
            self._end(ShutdownReason.SOCKET_SHUTDOWN_NORMAL)
        elif self._listen_wanted:
            self._start_listen()

    def _start_listen(self) -> None:
        try:
            config = dtls_config(self._ctx, True)
        except (SSL.Error, ValueError) as e:
            self._fail_log("Listen: cannot set up DTLS", detail(e))
            self._end(ShutdownReason.SOCKET_LISTEN_FAILED)
            return
        self._listener = CookieListener(config, self._mtu, self._log, self.KIND)
        self._set_state(S.LISTENING)
        self._log.Log(self.LOG_FLAG, "dtls %x: listening on %s:%d", id(self), *self._local)

    def _handshaking_peers(self) -> int:
        ep = self._ep
        if ep is None:
            return 0
        return sum(1 for p in ep.peers.values() if p._state is S.ACCEPTING)

    def _on_new_peer_datagram(self, data: bytes, addr: Any) -> None:
        """A datagram from a source with no peer socket: the engine's cookie exchange."""
        lst = self._listener
        ep = self._ep
        if self._state is not S.LISTENING or lst is None or ep is None:
            return
        if not is_client_hello(data):
            return  # the only datagram from an unknown source worth OpenSSL's time
        lst.handshake_timeout = HANDSHAKE_TIMEOUT  # read when each handshake starts
        out, conn, why = lst.receive(
            data,
            addr,
            self._loop.time(),
            len(ep.peers),
            self._handshaking_peers(),
            max_peers=MAX_PEERS,
            max_handshaking=MAX_HANDSHAKING_PEERS,
        )
        for dgram in out:
            ep.send(dgram, addr)
        if why is not None:
            if lst.drops % _LIMIT_LOG_EVERY == 1:
                self._fail_log("new peer dropped", f"{why} ({lst.drops} dropped so far)")
            return
        if conn is not None:
            self._offer(conn, addr, int.from_bytes(data[5:11], "big"))

    def _offer(self, conn: DtlsConnection, addr: Any, seq: int) -> None:
        host = format_ip(addr[0])
        if host.startswith("::ffff:") and "." in host:
            host = host[7:]
        self._run_due()  # callbacks queued before this one go first
        ep = self._ep
        if ep is not None:
            ep.offering += 1  # a Shutdown/Delete inside the callback keeps it for the peer
        self._in_listen_result = True
        self._accept_decided = False
        self._accept_user = None
        try:
            self._callback("SocketListenResult", host, int(addr[1]))
        finally:
            self._in_listen_result = False
            if ep is not None:
                ep.offering -= 1
        user: USocket | None = self._accept_user
        self._accept_user = None
        if ep is None or ep.tr is None:
            conn.abort()
            return
        if user is None:
            self._log.Log(self.LOG_FLAG, "dtls %x: peer %s:%d denied", id(self), host, addr[1])
            conn.abort()
            ep.send(alert_record(seq + 1), addr)
            ep.close_if_unused()
            return
        peer = DTLSSocket(self._mux, user, self._log, self._use_ipv6, self._ctx)
        peer._kind = "peer"
        peer._set_state(S.ACCEPTING)
        peer._ep = ep
        peer._peer = addr
        peer._mtu = conn.mtu
        peer._local = self._local
        peer._core = conn
        conn.log_id = id(peer)  # the engine's lines carry the peer socket's id
        ep.peers[addr] = peer
        peer._event(peer._begin_accepted)

    def Accept(self, remoteUser: USocket | None) -> None:
        """Only inside `SocketListenResult`: give the new peer a socket calling back
        `remoteUser` (its `SocketAcceptComplete` follows after the handshake), or deny
        it with None (the peer gets a fatal alert). Returns None.

        Raises:
            SocketModeError: outside `SocketListenResult`, or called twice in it.
        """
        self._check_alive("Accept")
        if not self._in_listen_result:
            raise SocketModeError(
                "Accept is only allowed inside SocketListenResult, on the listening socket "
                "that reported the peer"
            )
        if self._accept_decided:
            raise SocketModeError("Accept was already called for this peer")
        self._accept_decided = True
        if remoteUser is not None:
            if not callable(getattr(remoteUser, "SocketShutdown", None)):
                raise TypeError("Accept takes a USocket (or None to deny)")
            self._accept_user = remoteUser

    # ------------------------------------------------------------------ upgrade

    def _begin_upgrade(self, udp: UDPSocket, server_side: bool) -> None:
        config = dtls_config(self._ctx, server_side)
        handed = udp.hand_over()
        tr = handed.transport
        held = handed.held
        peer = handed.peer
        self._udp = udp
        self._local = handed.local
        self._kind = "upgraded-server" if server_side else "upgraded-client"
        self._set_state(S.ACCEPTING if server_side else S.CONNECTING)
        ep = _Endpoint()
        ep.tr = tr
        ep.copy = copies_needed(tr)
        ep.owner = self
        ep.qos_sock = tr.get_extra_info("socket")
        tr.set_protocol(ep)
        self._ep = ep
        if handed.server_name:
            self._verify_name = handed.server_name
        elif isinstance(peer, tuple) and peer:
            self._verify_name = format_ip(str(peer[0]))
        self._log.Log(
            self.LOG_FLAG,
            "dtls %x: upgrading udp %x as %s, %d datagrams already read",
            id(self),
            id(udp),
            "server" if server_side else "client",
            len(held),
        )
        self._begin(self._new_core(config, peer, self._verify_name))
        for d in held:
            if self._state in ENDED:
                break
            self._on_datagram(d)

    # ------------------------------------------------------------------ sending

    def GetCleartextMtu(self) -> int:
        """Beyond the SDK: the largest `Send` (bytes of cleartext per record) for the
        current path MTU: the MTU less `RECORD_OVERHEAD`."""
        return self._mtu - RECORD_OVERHEAD

    def SetMtu(self, mtu: int) -> None:
        """Beyond the SDK: the path MTU (bytes of UDP payload, default `DEFAULT_MTU`).
        Handshake datagrams and records are never larger. On a listening socket it
        applies to peers accepted from now on.

        Raises:
            ValueError: `mtu` is not `MIN_MTU`..`MAX_MTU`.
        """
        self._check_alive("SetMtu")
        if type(mtu) is not int or not MIN_MTU <= mtu <= MAX_MTU:
            raise ValueError(f"SetMtu: mtu={mtu!r} must be an int from {MIN_MTU} to {MAX_MTU}")
        self._mtu = mtu
        if self._listener is not None:
            self._listener.mtu = mtu  # a listener's next peers get the new MTU
        if self._core is not None:
            self._core.set_mtu(mtu)

    def _put(self, data: bytes) -> None:
        core = self._core
        if core is None or not core.established:
            self._fail_log("Send dropped", "the connection has ended")
            return
        core.send_data(data)
        self._flush(core)
        if core.established:
            self._emit("SocketSendResult")

    def Send(self, buf: Buffer, len: int | None = None) -> None:
        """Send the first `len` bytes of `buf` (all with None) as one DTLS record; the
        caller may reuse `buf` on return.

        Leads to one `SocketSendResult` per call, in call order, once the record has left
        for the kernel (cached until the handshake is done). Ignored after `Shutdown`.

        Raises:
            ValueError: the record would be larger than the cleartext MTU
                (`GetCleartextMtu`), it is empty, or `len` is larger than the buffer.
            SocketModeError: the socket is idle (call `Connect` first), listening (send
                on the sockets `Accept` gave), or deleted.
        """
        st = self._state
        self._check_alive("Send")
        mv = as_view(buf, "Send")
        if len is not None:
            if len < 0 or len > mv.nbytes:
                raise ValueError(f"Send: len={len} but the buffer holds {mv.nbytes} bytes")
            mv = mv[:len]
        n = mv.nbytes
        limit = self.GetCleartextMtu()
        if n > limit:
            self._fail_log("Send refused", f"{n} bytes > cleartext MTU {limit}")
            raise ValueError(
                f"Send: {n} bytes do not fit one DTLS record: the cleartext MTU is {limit} "
                f"bytes (path MTU {self._mtu}); split the data, or raise the MTU with SetMtu"
            )
        if n == 0:
            raise ValueError("Send: empty buffer; a DTLS record carries at least one byte")
        if st is S.CONNECTED and not self._shutdown_wanted:
            self._put(mv.tobytes())
            core = self._core
            if core is not None and not core.established:
                self._pump()  # the send failed: the engine's event ends the socket
        elif st in _HANDSHAKING:
            if not self._shutdown_wanted:
                self._cache.append(mv.tobytes())
        elif st is S.IDLE:
            raise SocketModeError("Send before Connect: Connect('ip:port') first")
        elif st in (S.BINDING, S.BOUND, S.LISTENING):
            raise SocketModeError(
                "Send on a listening DTLS socket: send on the peer sockets that Accept gave"
            )

    def SendTo(self, buf: Buffer, len: int | None, dstAddr: IPaddr | str, dstPort: int) -> None:
        """UDP only: ignored on a DTLS socket (use `Send` on the connected socket)."""
        self._check_alive("SendTo")

    def Recv(
        self, buf: bytearray | memoryview, len: int | None = None, recvPartial: bool = False
    ) -> None:
        """Receive one record's cleartext into the first `len` bytes of `buf`.

        Leads to `SocketRecvResult(socket, buf, n)`; a longer record is truncated to
        `len` (and logged). `recvPartial` makes no difference. Several Recv calls queue
        in order. Ignored once the socket has ended.

        Raises:
            ValueError: `buf` is read-only or `len` is not 1..len(buf).
        """
        self._check_thread("Recv")
        if self._state is S.CLOSED:
            return
        self._check_alive("Recv")
        q = self._q
        q.add(buf, len, "Recv")
        if q.held:
            self._pump_held()
            self._check_end()

    def RecvCancel(self) -> None:
        """Cancel every pending `Recv`: one `SocketRecvCanceled(socket, buf)` each, later."""
        self._check_alive("RecvCancel")
        for buf in self._q.cancel():
            self._emit("SocketRecvCanceled", buf)

    # ------------------------------------------------------------------ the rest

    def _qos_socket(self) -> socket.socket | None:
        ep = self._ep
        return None if ep is None else ep.qos_sock

    def GetSrtpProfile(self) -> str | None:
        """The SRTP profile agreed by the handshake ("SRTP_AES128_CM_SHA1_80" or
        "SRTP_AEAD_AES_128_GCM"), None before it or without `useSrtp`."""
        return self._srtp_profile

    def GetSrtpKeys(self) -> bytes | None:
        """The RFC 5764 keying material (client key, server key, client salt, server
        salt): 60 bytes for AES128_CM_SHA1_80, 56 for AEAD_AES_128_GCM; None before the
        handshake or without `useSrtp`."""
        return self._srtp_keys

    def GetPeerCertificateFingerprint(self) -> bytes | None:
        """Beyond the SDK: SHA-256 (32 bytes) of the DER of the peer's certificate once
        the handshake is done (None if the peer sent none): pin the peer with it when
        verification is disabled (WebRTC's a=fingerprint)."""
        return self._peer_fp

    def Shutdown(self) -> None:
        """Send close_notify, then `SocketShutdown(SOCKET_SHUTDOWN_NORMAL)` (after the
        `SocketSendResult` of every record sent). A handshake in progress is abandoned;
        a listener stops taking new peers (the peers it accepted carry on). Pending
        `Recv` buffers are dropped without a callback; `Send` after it is ignored."""
        self._check_alive("Shutdown")
        st = self._state
        if st is S.BINDING:
            self._shutdown_wanted = True
        elif st is S.CONNECTING and self._core is None:
            self._end(ShutdownReason.SOCKET_SHUTDOWN_NORMAL)
        elif st in _HANDSHAKING:
            self._shutdown_wanted = True
            if not self._in_alpn:  # else the handshake is done: close_notify after the callback
                self._end(ShutdownReason.SOCKET_SHUTDOWN_NORMAL)
        elif st is S.CONNECTED:
            self._close_now()
        elif st in (S.IDLE, S.BOUND, S.LISTENING):
            self._end(ShutdownReason.SOCKET_SHUTDOWN_NORMAL)

    def _close_now(self) -> None:
        core = self._core
        if core is not None:
            core.close()  # close_notify, unless the connection already ended
            self._flush(core)
        self._end(ShutdownReason.SOCKET_SHUTDOWN_NORMAL)

    def Delete(self) -> None:
        """Release the socket at once (and the UDP socket it was upgraded from): it makes
        no callback, ever again. A listener's accepted peers carry on."""
        self._check_alive("Delete")
        core = self._core
        if self._state is S.CONNECTED and core is not None and self._peer_end is None:
            core.close()  # best effort: the peer learns it is gone
            self._flush(core)
        super().Delete()
        udp, self._udp = self._udp, None
        if udp is not None and not udp.deleted():
            udp.Delete()
