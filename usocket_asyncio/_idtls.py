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
events, delivered inside the call that caused them (an engine, not a socket).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from OpenSSL import SSL

from ._base import as_view
from ._context import SocketContext, default_server_cert
from ._dtls_core import (
    ApplicationData,
    CloseNotify,
    ConnectionFailed,
    DtlsConfig,
    DtlsConnection,
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

_DEFAULT_CONFIGS: dict[tuple[bool, bool, bool], DtlsConfig] = {}


class UDtls:
    """The app's side of an `IDtls`: override what it needs. Every callback gets the
    `userCtx` given to `IDtls.Create`."""

    def DtlsInitialized(self, ctx: Any, fingerprint: bytes) -> None:
        """The fingerprint (SHA-256, 32 bytes) of this side's certificate, for the SDP."""

    def DtlsConnected(self, ctx: Any) -> None:
        """The handshake is done."""

    def DtlsTimerStart(self, ctx: Any, to: int) -> None:
        """Start (or restart) the app's timer: call `DtlsTimeout` after `to` ms."""

    def DtlsTimerStop(self, ctx: Any) -> None:
        """Stop the app's timer."""

    def DtlsConnectionClosed(self, ctx: Any, error: int) -> None:
        """The connection ended: 0 = closed normally, else a `ShutdownReason` value."""

    def DtlsSend(self, ctx: Any, buf: bytes, len: int) -> None:
        """Send this datagram to the peer."""

    def DtlsRecvApplicationData(self, ctx: Any, buf: bytes, len: int) -> None:
        """One record's cleartext from the peer."""

    def DtlsSrtpKeys(self, ctx: Any, keys: bytes, profile: str) -> None:
        """The RFC 5764 keying material and the SRTP profile (before `DtlsConnected`)."""


class IDtls:
    """One DTLS association, driven by the app. See the module docstring and API.md."""

    __slots__ = (
        "_closed",
        "_conn",
        "_ctx",
        "_log",
        "_now",
        "_paused",
        "_pumping",
        "_repump",
        "_timer_at",
        "_user",
        "_waiting",
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
        self._waiting: list[bytes] = []
        self._pumping = False
        self._repump = False
        self._closed = False

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
    ) -> None:
        """Start the handshake as `server` or client, with `DTLS_OPTION_*` `options`,
        toward the peer at `remoteAddress` (its IP literal, for the cookie and the log).
        `context` holds this side's certificate (None: the default one) and, without a
        `fingerprint`, the verification rule; a `fingerprint` (SHA-256 of the peer's
        certificate, from its SDP) pins the peer's certificate instead. `paused`: no
        datagram is sent until `DtlsUnpause`.

        Raises:
            SocketModeError: called twice on one engine.
            ValueError: a fingerprint that is not 32 bytes; a context's certificate
                OpenSSL refuses.
        """
        if self._conn is not None or self._closed:
            raise SocketModeError(
                "DtlsConnect on an engine that already connected: make a new IDtls per association"
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
            log=self._log,
            tag="idtls",
            log_id=id(self),
        )
        self._conn = conn
        self._log.Log(
            LogFlags.LOG_DTLS,
            "idtls %x: connect as %s to %s, options %d%s%s",
            id(self),
            "server" if server else "client",
            remoteAddress,
            options,
            ", pinned" if fingerprint is not None else "",
            ", paused" if paused else "",
        )
        conn.start(self._now)
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
                _DEFAULT_CONFIGS[key] = cfg
            return cfg
        if not isinstance(context, SocketContext):
            raise TypeError("DtlsConnect: context must come from a provider's CreateSocketContext")
        return DtlsConfig.from_context(
            context, server, use_srtp=use_srtp, mutual=mutual, own_cert_both_sides=True
        )

    def DtlsUnpause(self) -> None:
        """Send what a paused `DtlsConnect` held back; from now on nothing waits."""
        if not self._paused:
            return
        self._paused = False
        self._pump()

    # ------------------------------------------------------------------ running

    def DtlsTimeout(self) -> None:
        """The timer asked for by `DtlsTimerStart` ran out."""
        conn = self._conn
        at = self._timer_at
        self._timer_at = None
        if conn is None or at is None:
            return
        self._now = max(self._now, at)
        conn.handle_timer(self._now)
        self._pump()

    def DtlsRecv(self, buf: Any, len: int | None, remoteAddr: Any, remotePort: int) -> bool:
        """Offer one datagram the app's socket received. Returns True when it is DTLS
        (first byte 20..63, RFC 7983) and the engine took it; False for anything else
        (STUN 0..3, RTP/RTCP 128..191, ...), which stays the app's.

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
        conn = self._conn
        if conn is None or conn.ended:
            return True  # DTLS, but no association takes it: dropped
        conn.receive_datagram(mv[:n].tobytes(), self._now, (str(remoteAddr), int(remotePort)))
        self._pump()
        return True

    def DtlsSendApplicationData(self, buf: Any, len: int | None = None) -> None:
        """Send the first `len` bytes of `buf` (all with None) as one record. Ignored
        after the connection ended.

        Raises:
            SocketModeError: before `DtlsConnected`.
            ValueError: larger than the cleartext MTU (1200 - 37 bytes), or empty.
        """
        conn = self._conn
        if conn is None or (not conn.established and not conn.ended):
            raise SocketModeError(
                "DtlsSendApplicationData before DtlsConnected: send once the handshake is done"
            )
        if conn.ended:
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
        """Send close_notify (once the handshake is done), then
        `DtlsConnectionClosed(ctx, 0)`. Nothing follows it."""
        conn = self._conn
        if conn is None or conn.ended or self._closed:
            return
        conn.close()
        self._pump()
        self._closed = True
        self._user.DtlsConnectionClosed(self._ctx, 0)

    def DtlsAbortConnect(self) -> None:
        """Stop at once: nothing more is sent, a running timer gets `DtlsTimerStop`, and
        no other callback follows."""
        conn = self._conn
        self._closed = True
        self._waiting.clear()
        if conn is not None:
            conn.abort()
        if self._timer_at is not None:
            self._timer_at = None
            self._user.DtlsTimerStop(self._ctx)

    # ------------------------------------------------------------------ the engine's output

    def _pump(self) -> None:
        if self._pumping:
            self._repump = True
            return
        self._pumping = True
        try:
            self._repump = True
            while self._repump:
                self._repump = False
                self._pump_once()
        finally:
            self._pumping = False

    def _pump_once(self) -> None:
        conn = self._conn
        if conn is None:
            return
        user, ctx = self._user, self._ctx
        out = conn.datagrams_to_send()
        if self._closed and not out:
            return
        if self._paused:
            self._waiting.extend(out)
        else:
            if self._waiting:
                out = self._waiting + out
                self._waiting = []
            for d in out:
                user.DtlsSend(ctx, d, d.__len__())
        while not self._closed and (ev := conn.next_event()) is not None:
            if isinstance(ev, HandshakeCompleted):
                if ev.srtp_keys is not None and ev.srtp_profile is not None:
                    user.DtlsSrtpKeys(ctx, ev.srtp_keys, ev.srtp_profile)
                user.DtlsConnected(ctx)
            elif isinstance(ev, ApplicationData):
                user.DtlsRecvApplicationData(ctx, ev.data, ev.data.__len__())
            elif isinstance(ev, CloseNotify):
                self._closed = True
                self._stop_timer()
                user.DtlsConnectionClosed(ctx, 0)
            elif isinstance(ev, ConnectionFailed):  # the engine logged it, under our id
                self._closed = True
                self._stop_timer()
                user.DtlsConnectionClosed(ctx, int(ev.reason))
        if self._closed:
            self._stop_timer()
            return
        if self._paused:
            return
        at = conn.get_timer()
        if at is None:
            self._stop_timer()
        elif at != self._timer_at:
            self._timer_at = at
            user.DtlsTimerStart(ctx, max(0, math.ceil((at - self._now) * 1000)))

    def _stop_timer(self) -> None:
        if self._timer_at is not None:
            self._timer_at = None
            self._user.DtlsTimerStop(self._ctx)
