"""`IDtls` / `UDtls`: the SDK's DTLS engine (`common/interface/dtls.h`), sans-IO.

The engine owns no socket, no loop and no timer. A media app runs DTLS-SRTP on the one
UDP port that also carries its RTP, RTCP and STUN (RFC 5764 §5.1.2): its UDP socket
receives everything and hands each datagram to `DtlsRecv`, which takes the DTLS ones
(first byte 20..63, RFC 7983) and returns False for the others, which stay the app's.
What the engine wants sent comes back by `UDtls.DtlsSend`; the retransmission timer it
wants by `DtlsTimerStart`/`DtlsTimerStop`, and the app calls `DtlsTimeout` when it ran
out. The engine keeps time only by those timeouts (its clock advances to each timer's
end), and OpenSSL keeps its own: `to` is what OpenSSL's timer has left.

It is a thin layer over `_dtls_core.DtlsConnection`: the callbacks are the engine's
events, delivered inside the call that caused them (an engine, not a socket) when that
call was made outside any callback, else once the callback it was made in returned.

Theory of operation
-------------------
Who owns each datagram. Outgoing: what the core wants sent moves into `_sendq`, and
leaves it one `DtlsSend` at a time, oldest first; a paused engine keeps it there until
`DtlsUnpause`. Incoming: `DtlsRecv` gives a DTLS datagram to the core at once; one that
comes before `DtlsConnect` (a browser's ClientHello ahead of its ICE nomination) is
held in `_early`, at most `EARLY_MAX` datagrams and `EARLY_MAX_BYTES` bytes (beyond that
it is dropped and logged under LOG_DTLS), and fed to the core at `DtlsConnect`, in order.

One delivery loop (`_deliver`) makes every callback, one at a time; a call made inside a
callback only changes the core's state, and the loop, which runs until nothing is due,
delivers what it caused once that callback has returned. Each turn of the loop takes,
in this order: a datagram of `_sendq` (`DtlsSend`); else the core's next event; else the
end, if it is due (`DtlsTimerStop` if a timer runs, then `DtlsConnectionClosed`); else
the timer the core wants (`DtlsTimerStart`/`DtlsTimerStop`). So the datagrams a call
produces reach `DtlsSend` before any event the same call causes (the close_notify
before `DtlsConnectionClosed`), and an event comes only after every callback before it
returned.

Log (LOG_DTLS). Besides the engine's lines (one id per association: the handshake's
result with the version and cipher agreed, a failure with OpenSSL's detail), `DtlsRecv`
gathers a copy of the peer's first ClientHello from its fragments (a browser's DTLS 1.3
offer spans two datagrams; at most `HELLO_MAX` bytes over `HELLO_PIECES` datagrams) and
logs the versions it offers, so that what a peer asked for and what was agreed (DTLS 1.2,
the only version of this engine) read side by side.

What ends the association: the peer's close_notify (`DtlsConnectionClosed(0)`, once
our reply is sent) or a failure (`DtlsConnectionClosed(reason)`), both from the core;
`DtlsClose` (`DtlsConnectionClosed(0)`, after the close_notify; events the core still
held are dropped); `DtlsAbortConnect` (nothing more: no datagram, no event, only
`DtlsTimerStop` for a running timer). After `DtlsConnectionClosed` nothing is called
back. Calls after the end: `DtlsSendApplicationData` raises `SocketModeError` once the
app knows the association is over (its own `DtlsClose`/`DtlsAbortConnect`, or
`DtlsConnectionClosed` begun) and drops the record while the end it has not yet been
told of is on its way; `DtlsClose`, `DtlsAbortConnect`, `DtlsTimeout`, `DtlsUnpause`
do nothing, and `DtlsRecv` still says True for a DTLS datagram (a peer's datagram or a
fired timer may race with the end; none is the caller's mistake).
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Any

from OpenSSL import SSL

from ._base import as_view
from ._context import SocketContext, default_server_cert
from ._dtls_core import (
    PIN_HASHES,
    RTO_INITIAL,
    RTO_MAX,
    ApplicationData,
    CloseNotify,
    ConnectionFailed,
    DtlsConfig,
    DtlsConnection,
    DtlsEvent,
    HandshakeCompleted,
)
from ._errors import detail
from ._types import LogFlags, SocketModeError

if TYPE_CHECKING:
    from ._api import ISocketContext
    from ._log import IInstanceLog

DTLS_OPTION_NO_COOKIE = 1
"""Server: no HelloVerifyRequest (ICE already checked the peer's address)."""
DTLS_OPTION_NO_MUTUAL = 2
"""Server: ask for no client certificate."""
DTLS_OPTION_USE_SRTP = 4
"""Negotiate use_srtp; the keys arrive by `DtlsSrtpKeys`."""

EARLY_MAX = 4
"""DTLS datagrams held when they come before `DtlsConnect` (more are dropped, logged)."""
EARLY_MAX_BYTES = 8192
"""Bytes held when DTLS datagrams come before `DtlsConnect`."""

_DEFAULT_CONFIGS: dict[tuple[bool, bool, bool], DtlsConfig] = {}
CONTEXT_CONFIGS = 32
"""OpenSSL contexts kept for the socket contexts given to `DtlsConnect`, by what they hold
(the least recently used one goes beyond): associations of equal contexts share one."""
_CONTEXT_CONFIGS: OrderedDict[tuple[Any, ...], DtlsConfig] = OrderedDict()


def _shared(cfg: DtlsConfig) -> DtlsConfig:
    """`cfg` made fit to serve many associations: no session cache (no association is
    resumed; a shared cache would only grow), and each connection's buffers released
    while idle (a connected stream keeps its DTLS association for close_notify)."""
    cfg.ssl_ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    cfg.ssl_ctx.set_mode(SSL.MODE_RELEASE_BUFFERS)
    return cfg


class UDtls:
    """The app's side of an `IDtls`: override what it needs. Every callback gets the
    `userCtx` given to `IDtls.Create`. Callbacks run one at a time: what a call made
    inside one causes is called back once it returned."""

    def DtlsInitialized(self, ctx: Any, fingerprint: bytes) -> None:
        """The fingerprint (SHA-256, 32 bytes) of this side's certificate, for the SDP."""

    def DtlsConnected(self, ctx: Any) -> None:
        """The handshake is done."""

    def DtlsTimerStart(self, ctx: Any, to: int) -> None:
        """Start (or restart) the app's timer: call `DtlsTimeout` after `to` ms."""

    def DtlsTimerStop(self, ctx: Any) -> None:
        """Stop the app's timer."""

    def DtlsConnectionClosed(self, ctx: Any, error: int) -> None:
        """The connection ended: 0 = closed normally, else a `ShutdownReason` value.
        Every datagram due (a close_notify) went to `DtlsSend` before, and nothing is
        called back after it: the app may close its socket here."""

    def DtlsSend(self, ctx: Any, buf: bytes, len: int) -> None:
        """Send this datagram to the peer."""

    def DtlsRecvApplicationData(self, ctx: Any, buf: bytes, len: int) -> None:
        """One record's cleartext from the peer."""

    def DtlsSrtpKeys(self, ctx: Any, keys: bytes, profile: str) -> None:
        """The RFC 5764 keying material and the SRTP profile (before `DtlsConnected`)."""


_VERSIONS = {0xFEFF: "DTLSv1.0", 0xFEFD: "DTLSv1.2", 0xFEFC: "DTLSv1.3"}
HELLO_MAX = 8192
"""The longest ClientHello whose offered versions `IDtls` reads for its log (bytes)."""
HELLO_PIECES = 8
"""Datagrams `IDtls` looks at for the fragments of the peer's first ClientHello."""


def hello_fragment(datagram: bytes) -> tuple[int, int, int, bytes] | None:
    """(message_seq, length, fragment_offset, fragment) of the ClientHello fragment in the
    datagram's first record; None when that record holds none."""
    d = datagram
    if len(d) < 25 or d[0] != 22 or d[13] != 1:
        return None
    length = int.from_bytes(d[14:17], "big")
    offset = int.from_bytes(d[19:22], "big")
    frag = d[25 : 25 + int.from_bytes(d[22:25], "big")]
    if offset + len(frag) > length or 25 + len(frag) > 13 + int.from_bytes(d[11:13], "big"):
        return None
    return int.from_bytes(d[17:19], "big"), length, offset, frag


def hello_versions(body: bytes) -> list[str]:
    """The DTLS versions a ClientHello's body offers, most preferred first: its
    supported_versions extension (RFC 9147 §5.3), else its legacy client_version. Empty
    when the body cannot be read."""
    if len(body) < 35:
        return []
    legacy = int.from_bytes(body[0:2], "big")
    at = 34  # client_version, random
    try:
        at += 1 + body[at]  # session_id
        at += 1 + body[at]  # cookie
        at += 2 + int.from_bytes(body[at : at + 2], "big")  # cipher_suites
        at += 1 + body[at]  # compression_methods
        end = min(at + 2 + int.from_bytes(body[at : at + 2], "big"), len(body))
        at += 2
        while at + 4 <= end:
            kind = int.from_bytes(body[at : at + 2], "big")
            size = int.from_bytes(body[at + 2 : at + 4], "big")
            if kind == 43:  # supported_versions: a length byte, then 2-byte versions
                vs = body[at + 5 : at + 5 + body[at + 4]]
                return [
                    _VERSIONS.get(int.from_bytes(vs[i : i + 2], "big"), f"0x{vs[i : i + 2].hex()}")
                    for i in range(0, len(vs) - 1, 2)
                ]
            at += 4 + size
    except IndexError:
        return []
    return [_VERSIONS.get(legacy, f"0x{legacy:04x}")]


class IDtls:
    """One DTLS association, driven by the app. See the module docstring and API.md."""

    __slots__ = (
        "_by_app",
        "_conn",
        "_connect_due",
        "_connected",
        "_ctx",
        "_done",
        "_early",
        "_early_bytes",
        "_early_drops",
        "_end",
        "_hello",
        "_log",
        "_now",
        "_paused",
        "_pumping",
        "_sendq",
        "_timer_at",
        "_user",
    )

    def __init__(self, user: UDtls, userCtx: object, log: IInstanceLog) -> None:
        if not callable(getattr(user, "DtlsSend", None)):
            raise TypeError("IDtls.Create takes a UDtls (the object that gets the callbacks)")
        self._user = user
        self._ctx = userCtx
        self._log = log
        self._conn: DtlsConnection | None = None
        self._now = 0.0
        self._timer_at: float | None = None
        self._paused = False
        self._sendq: deque[bytes] = deque()
        self._pumping = False
        # the end: the DtlsConnectionClosed error due (None: none yet); the app ended it
        # (DtlsClose, DtlsAbortConnect); no callback more (DtlsConnectionClosed begun, or
        # the abort's DtlsTimerStop)
        self._end: int | None = None
        self._by_app = False
        self._done = False
        # DtlsConnected is due (after DtlsSrtpKeys) / was called
        self._connect_due = False
        self._connected = False
        # DTLS datagrams that came before DtlsConnect: (data, address, port)
        self._early: list[tuple[bytes, str, int]] = []
        self._early_bytes = 0
        self._early_drops = 0
        # the peer's first ClientHello, gathered for the log: [message_seq, body, bytes
        # still missing, datagrams looked at]; None: none yet; False: logged (or given up)
        self._hello: list[Any] | bool | None = None

    @staticmethod
    def Create(user: UDtls, userCtx: object, log: IInstanceLog) -> IDtls:
        """A new engine calling back `user` with `userCtx`."""
        return IDtls(user, userCtx, log)

    # ------------------------------------------------------------------ setting up

    def DtlsInitialize(self, certificateFingerprint: bytes | None = None) -> None:
        """Leads to `DtlsInitialized(ctx, fingerprint)`: the SHA-256 of the process's
        default DTLS certificate (`certificateFingerprint` is kept for the SDK's
        signature; an app with its own certificate takes the fingerprint from its
        context's `GetCertificateFingerprint`)."""
        import hashlib

        fp = hashlib.sha256(default_server_cert().leaf_der).digest()
        self._user.DtlsInitialized(self._ctx, fp)

    def DtlsConnect(
        self,
        server: bool,
        options: int,
        remoteAddress: str,
        context: ISocketContext | None,
        fingerprint: bytes | None,
        paused: bool = False,
        *,
        rtoInitial: float = RTO_INITIAL,
    ) -> None:
        """Start the handshake as `server` or client, with `DTLS_OPTION_*` `options`,
        toward the peer at `remoteAddress` (its IP literal, for the cookie and the log).
        `context` holds this side's certificate (None: the default one) and, without a
        `fingerprint`, the verification rule; a `fingerprint` (the digest of the peer's
        certificate, from its SDP's a=fingerprint) pins the peer's certificate instead.
        Its length names the hash (beyond the SDK, which pins SHA-256 only): 20 bytes
        SHA-1, 28 SHA-224, 32 SHA-256, 48 SHA-384, 64 SHA-512. `paused`: no datagram is
        sent until `DtlsUnpause`.

        `rtoInitial` (beyond the SDK, keyword only): seconds before a flight is first
        resent (`RTO_INITIAL`, 0.1 s, as media stacks use; RFC 6347 suggests 1 s where
        the round trip is unknown); each resend doubles the wait up to 60 s. The
        `DtlsTimerStart` that follows a flight asks for that many ms.

        The DTLS datagrams `DtlsRecv` took before this call are given to the engine
        now, in the order they came; what they lead to (`DtlsSend` of the answer,
        `DtlsTimerStart`) is called back inside this call.

        Raises:
            SocketModeError: called twice on one engine, or after `DtlsAbortConnect`.
            ValueError: a fingerprint of none of those lengths; an `rtoInitial` that is
                not a number of seconds from 0.001 to 60; a context's certificate
                OpenSSL refuses.
        """
        if self._conn is not None or self._by_app:
            raise SocketModeError(
                "DtlsConnect on an engine that already connected (or was aborted): make a "
                "new IDtls per association"
            )
        if (
            isinstance(rtoInitial, bool)
            or not isinstance(rtoInitial, (int, float))
            or not 0.001 <= rtoInitial <= RTO_MAX
        ):
            raise ValueError(
                f"DtlsConnect: rtoInitial={rtoInitial!r}; pass the seconds before a lost "
                f"flight is first resent, from 0.001 to {RTO_MAX:g} (0.1 suits media)"
            )
        use_srtp = bool(options & DTLS_OPTION_USE_SRTP)
        mutual = not (server and options & DTLS_OPTION_NO_MUTUAL)
        try:
            config = self._config(bool(server), use_srtp, mutual, context)
        except SSL.Error as e:
            raise ValueError(f"DtlsConnect: the context's certificate: {detail(e)}") from e
        self._paused = bool(paused)
        conn = DtlsConnection(
            config,
            peer=(str(remoteAddress), 0),
            cookie=bool(server) and not options & DTLS_OPTION_NO_COOKIE,
            verify_name=None if fingerprint is not None else str(remoteAddress),
            fingerprint=fingerprint,
            rto_initial=rtoInitial,
            log=self._log,
            tag="idtls",
            log_id=id(self),
        )
        self._conn = conn
        log = self._log
        log.Log(
            LogFlags.LOG_DTLS,
            "idtls %x: connect as %s to %s, options %d%s%s",
            id(self),
            "server" if server else "client",
            remoteAddress,
            options,
            f", pinned by {PIN_HASHES.get(len(fingerprint), '?')}"
            if fingerprint is not None
            else "",
            ", paused" if paused else "",
        )
        early, self._early, self._early_bytes = self._early, [], 0
        if early or self._early_drops:
            log.Log(
                LogFlags.LOG_DTLS,
                "idtls %x: %d DTLS datagrams came before DtlsConnect: fed to the engine "
                "now (%d more were dropped)",
                id(self),
                early.__len__(),
                self._early_drops,
            )
        conn.start(self._now)
        self._pump()
        for data, addr, port in early:
            if self._end is not None or self._done or conn.ended:
                break
            conn.receive_datagram(data, self._now, (addr, port))
            self._pump()

    @staticmethod
    def _config(
        server: bool, use_srtp: bool, mutual: bool, context: ISocketContext | None
    ) -> DtlsConfig:
        if context is None:
            key = (server, use_srtp, mutual)
            cfg = _DEFAULT_CONFIGS.get(key)
            if cfg is None:
                # no context: present the default certificate (its fingerprint is the
                # one DtlsInitialized gave) and pin or verify the peer by the caller's word
                cfg = DtlsConfig(
                    server,
                    default_server_cert().pem,
                    use_srtp=use_srtp,
                    verify=True,
                    mutual=mutual,
                )
                _DEFAULT_CONFIGS[key] = _shared(cfg)
            return cfg
        if not isinstance(context, SocketContext):
            raise TypeError("DtlsConnect: context must come from a provider's CreateSocketContext")
        # one OpenSSL context per distinct content, not per association: each costs
        # hundreds of KB (a client's that verifies loads the system's CA store)
        sni = (
            tuple((n, context.cert_pem_for(True, n)) for n in context.server_names)
            if server
            else ()
        )
        ckey = (
            server,
            use_srtp,
            mutual,
            context.cert_pem_for(True),
            tuple(context.alpn),
            context.verify,
            context.trusted_pem,
            sni,
        )
        cfg = _CONTEXT_CONFIGS.get(ckey)
        if cfg is not None:
            _CONTEXT_CONFIGS.move_to_end(ckey)
            return cfg
        cfg = _shared(
            DtlsConfig.from_context(
                context, server, use_srtp=use_srtp, mutual=mutual, own_cert_both_sides=True
            )
        )
        _CONTEXT_CONFIGS[ckey] = cfg
        if len(_CONTEXT_CONFIGS) > CONTEXT_CONFIGS:
            _CONTEXT_CONFIGS.popitem(last=False)
        return cfg

    def DtlsUnpause(self) -> None:
        """Send what a paused `DtlsConnect` held back; from now on nothing waits.
        Does nothing when not paused, or after the end."""
        if not self._paused:
            return
        self._paused = False
        if self._conn is not None:
            self._pump()

    # ------------------------------------------------------------------ running

    def DtlsTimeout(self) -> None:
        """The timer asked for by `DtlsTimerStart` ran out. Does nothing when no timer
        runs (one that fired while its `DtlsTimerStop` was on the way) or after the end."""
        conn = self._conn
        at = self._timer_at
        if conn is None or at is None or self._end is not None or self._done:
            return
        self._timer_at = None
        self._now = max(self._now, at)
        conn.handle_timer(self._now)
        self._pump()

    def DtlsRecv(self, buf: Any, len: int | None, remoteAddr: Any, remotePort: int) -> bool:
        """Offer one datagram the app's socket received. Returns True when it is DTLS
        (first byte 20..63, RFC 7983) and the engine took it; False for anything else
        (STUN 0..3, RTP/RTCP 128..191, ...), which stays the app's.

        A DTLS datagram that comes before `DtlsConnect` is held (at most `EARLY_MAX`
        datagrams, `EARLY_MAX_BYTES` bytes; beyond that dropped and logged under
        LOG_DTLS) and given to the engine at `DtlsConnect`. After the end the engine
        still takes DTLS datagrams (True), and drops them.

        Raises:
            ValueError: `len` is larger than the buffer.
        """
        mv = as_view(buf, "DtlsRecv")
        n = mv.nbytes if len is None else len
        if n > mv.nbytes:
            raise ValueError(
                f"DtlsRecv: len={n} but the buffer holds {mv.nbytes} bytes; pass the "
                "number of bytes received (None: the whole buffer)"
            )
        if n <= 0 or not 20 <= mv[0] <= 63:
            return False
        if (
            self._hello is not False
            and mv[0] == 22
            and n > 25
            and mv[13] == 1
            and self._log.LogFlagSet(LogFlags.LOG_DTLS)
        ):
            self._gather_hello(mv[:n].tobytes(), remoteAddr, remotePort)
        conn = self._conn
        if conn is None:
            if not self._by_app:
                self._hold_early(mv[:n].tobytes(), str(remoteAddr), int(remotePort))
            return True
        if self._end is not None or self._done or conn.ended:
            return True  # DTLS, but the association is over: dropped
        conn.receive_datagram(mv[:n].tobytes(), self._now, (str(remoteAddr), int(remotePort)))
        self._pump()
        return True

    def _gather_hello(self, data: bytes, addr: Any, port: int) -> None:
        """Gather the peer's first ClientHello (it may come in fragments: a browser's
        DTLS 1.3 offer, with its post-quantum key share, spans two datagrams) and log
        the DTLS versions it offers under LOG_DTLS. Bounded: `HELLO_MAX` bytes,
        `HELLO_PIECES` datagrams, then it gives up. A copy for the log only: the
        datagrams reach the engine unchanged."""
        piece = hello_fragment(data)
        if piece is None:
            return
        seq, length, offset, frag = piece
        hello = self._hello
        if not isinstance(hello, list):
            if length > HELLO_MAX:
                self._hello = False
                return
            hello = self._hello = [seq, bytearray(length), bytearray(b"\1" * length), 0]
        hello[3] += 1
        if seq == hello[0] and length == len(hello[1]):
            hello[1][offset : offset + len(frag)] = frag
            hello[2][offset : offset + len(frag)] = bytes(len(frag))
        if any(hello[2]):
            if hello[3] >= HELLO_PIECES:
                self._hello = False
            return
        self._hello = False
        offered = hello_versions(bytes(hello[1]))
        self._log.Log(
            LogFlags.LOG_DTLS,
            "idtls %x: ClientHello from %s:%d offers %s",
            id(self),
            addr,
            port,
            ", ".join(offered) if offered else "versions this engine cannot read",
        )

    def _hold_early(self, data: bytes, addr: str, port: int) -> None:
        size = data.__len__()
        early = self._early
        if early.__len__() < EARLY_MAX and self._early_bytes + size <= EARLY_MAX_BYTES:
            early.append((data, addr, port))
            self._early_bytes += size
            return
        self._early_drops += 1
        if self._early_drops == 1:
            self._log.Log(
                LogFlags.LOG_DTLS,
                "idtls %x: a DTLS datagram of %d bytes from %s:%d before DtlsConnect: dropped "
                "(%d datagrams, %d bytes held; at most %d, %d bytes)",
                id(self),
                size,
                addr,
                port,
                early.__len__(),
                self._early_bytes,
                EARLY_MAX,
                EARLY_MAX_BYTES,
            )

    def DtlsSendApplicationData(self, buf: Any, len: int | None = None) -> None:
        """Send the first `len` bytes of `buf` (all with None) as one record: a
        `DtlsSend` of it follows (inside this call, or, made inside a callback, once
        that callback returned). Dropped when the association ended by the peer or a
        failure and `DtlsConnectionClosed` is still on its way.

        Raises:
            SocketModeError: before `DtlsConnected`; after the app's own `DtlsClose` or
                `DtlsAbortConnect`, or inside or after `DtlsConnectionClosed`.
            ValueError: larger than the cleartext MTU (1200 - 37 bytes), or empty.
        """
        conn = self._conn
        if self._by_app or self._done:
            raise SocketModeError(
                "DtlsSendApplicationData after DtlsClose, DtlsAbortConnect or "
                "DtlsConnectionClosed: the association is over; make a new IDtls for a new one"
            )
        if conn is None or not self._connected:
            raise SocketModeError(
                "DtlsSendApplicationData before DtlsConnected: send once the handshake is done"
            )
        if self._end is not None or conn.ended:
            return
        mv = as_view(buf, "DtlsSendApplicationData")
        if len is not None:
            if len < 0 or len > mv.nbytes:
                raise ValueError(
                    f"DtlsSendApplicationData: len={len} but the buffer holds {mv.nbytes} bytes"
                )
            mv = mv[:len]
        conn.send_data(mv.tobytes())
        self._pump()

    def DtlsClose(self) -> None:
        """End the association: `DtlsSend` of the close_notify (once the handshake is
        done), `DtlsTimerStop` if a timer runs, then `DtlsConnectionClosed(ctx, 0)`;
        nothing follows it. Inside a callback these come once that callback returned.
        Does nothing before `DtlsConnect` and once the end is on its way or done."""
        conn = self._conn
        if conn is None or self._end is not None or self._done:
            return
        self._by_app = True
        self._end = 0
        conn.close()
        self._pump()

    def DtlsAbortConnect(self) -> None:
        """Stop at once: nothing more is sent, a running timer gets `DtlsTimerStop`, and
        no other callback follows. Does nothing once `DtlsConnectionClosed` has begun."""
        self._early.clear()
        self._early_bytes = 0
        if self._done:
            return
        self._by_app = True
        self._done = True
        self._sendq.clear()
        conn = self._conn
        if conn is not None:
            conn.abort()
        if self._pumping:
            return  # the delivery loop stops the timer once the callback returned
        self._stop_timer()

    # ------------------------------------------------------------------ the engine's output

    def _pump(self) -> None:
        """Deliver what is due; inside a callback, leave it to the loop already running."""
        if self._pumping:
            return
        self._pumping = True
        try:
            self._deliver()
        finally:
            self._pumping = False

    def _deliver(self) -> None:
        """The one place that calls back: see "Theory of operation"."""
        conn = self._conn
        assert conn is not None
        user, ctx, q = self._user, self._ctx, self._sendq
        while True:
            if self._done:
                q.clear()
                self._stop_timer()  # after DtlsAbortConnect; after the end, none runs
                return
            out = conn.datagrams_to_send()
            if out:
                q.extend(out)
            if q and not self._paused:
                d = q.popleft()
                user.DtlsSend(ctx, d, d.__len__())
                continue
            end = self._end
            if end is None:
                if self._connect_due:
                    self._connect_due = False
                    self._connected = True
                    user.DtlsConnected(ctx)
                    continue
                ev = conn.next_event()
                if ev is not None:
                    self._event(ev)
                    continue
            else:
                if self._timer_at is not None:
                    self._stop_timer()
                    continue
                q.clear()  # a paused engine's flight, never sent
                self._done = True
                user.DtlsConnectionClosed(ctx, end)
                return
            if self._paused:
                return
            at = conn.get_timer()
            if at is None:
                if self._timer_at is None:
                    return
                self._stop_timer()
            elif at != self._timer_at:
                self._timer_at = at
                user.DtlsTimerStart(ctx, max(0, math.ceil((at - self._now) * 1000)))
            else:
                return

    def _event(self, ev: DtlsEvent) -> None:
        user, ctx = self._user, self._ctx
        if isinstance(ev, ApplicationData):
            user.DtlsRecvApplicationData(ctx, ev.data, ev.data.__len__())
        elif isinstance(ev, HandshakeCompleted):
            self._connect_due = True
            if ev.srtp_keys is not None and ev.srtp_profile is not None:
                user.DtlsSrtpKeys(ctx, ev.srtp_keys, ev.srtp_profile)
        elif isinstance(ev, CloseNotify):
            self._end = 0  # DtlsConnectionClosed once our close_notify in reply is sent
        elif isinstance(ev, ConnectionFailed):  # the engine logged it, under our id
            self._end = int(ev.reason)

    def _stop_timer(self) -> None:
        if self._timer_at is not None:
            self._timer_at = None
            self._user.DtlsTimerStop(self._ctx)
