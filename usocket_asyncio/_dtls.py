"""DTLS 1.2 sockets (with DTLS-SRTP keying) over UDP, on pyOpenSSL memory BIOs.

Theory of operation
-------------------
A `DTLSSocket` is made by the TLS provider for a context on which `EnableDTLS` was
called (or by `UpgradeToTLSSocket` from a connected UDP socket). OpenSSL never sees a
socket: each `SSL.Connection` runs over memory BIOs, and this module moves the bytes.

The endpoint. One `_Endpoint` (the `DatagramProtocol` of one UDP transport) carries
either one connected DTLS socket (a client, or an upgraded UDP socket), or a listening
DTLS socket and every peer socket it accepted: datagrams are demultiplexed by source
address (`_Endpoint.peers`); a datagram from an unknown source goes to the listener.
The endpoint closes when nobody uses it any more, so peer sockets outlive the
listener's `Shutdown`/`Delete`, as accepted TCP sockets do.

Who owns the bytes in flight.
- Incoming: a datagram is written into its connection's read BIO and processed
  (handshake step, or record reads) before the next one is written, so OpenSSL always
  sees one datagram as one packet and a malformed one is dropped whole. Each decrypted
  record is one `Recv`'s worth: it goes straight to the pending `Recv` or waits in a
  bounded hold queue (`HOLD_RECORDS`; beyond it the record is dropped and logged).
- Outgoing: after each OpenSSL call the write BIO is drained; the bytes are split into
  DTLS records (13-byte headers) and packed into datagrams of at most the path MTU
  (`DEFAULT_MTU`, `SetMtu`). OpenSSL is told the same MTU, so no record is larger.
  Each `Send` is one record: a `Send` larger than the cleartext MTU raises
  `ValueError`; nothing is fragmented silently. `Send` before the handshake completes is
  cached and sent after it.

Server side. Before any per-peer state exists, a ClientHello must carry a cookie: the
listener owns one spare `SSL.Connection` on which it runs `DTLSv1_listen` for every
datagram from an unknown source; the cookie is HMAC-SHA256 over the source address
and a minute counter under a per-process random secret (stateless: a spoofed
ClientHello costs one HelloVerifyRequest and nothing else). A ClientHello with a valid
cookie turns the spare connection into that peer's: `SocketListenResult`, then, if the
app called `Accept(user)` inside it, a peer socket continues the handshake
(`SocketAcceptComplete` when done); otherwise the peer gets a fatal alert. Peers in
handshake and established peers are capped (`MAX_HANDSHAKING_PEERS`, `MAX_PEERS`);
ClientHellos beyond the caps are dropped and logged.

ALPN and SNI. A client offers the context's `SetALPNProtocols` list and sends its
`serverName` (not an IP literal) by SNI. A server picks the first of its own list the
client offered (its order of preference; no common protocol: no ALPN, as the TLS
sockets) and, by the client's SNI, the certificate set for that `hostName` (a
servername callback switches the connection to a context built for it; an unknown name
or none keeps the default certificate). Once a side's handshake is done it offers the
negotiated protocol to `SocketAcceptSelectedALPNProtocol`, before its
`SocketConnectComplete`/`SocketAcceptComplete`; False sends close_notify and ends it
with `SOCKET_ALPN_SELECTION_FAILED`. The peer completes its handshake all the same
(a refusing server sent its Finished just before): its own ALPN callback and
Connect/AcceptComplete come first, then `SOCKET_SHUTDOWN_BY_PEER`. (Should a refusing
server's last flight be lost, the client's handshake runs into its deadline instead.)

Timers. OpenSSL's retransmission timer (`DTLSv1_get_timeout`/`DTLSv1_handle_timeout`)
is one `call_later` handle, re-armed after each step; a handshake also has a deadline
(`HANDSHAKE_TIMEOUT`). Both handles are stored and cancelled on every way out.

What ends a connection (`_finish` is the one place): our `Shutdown` (close_notify, then
`SOCKET_SHUTDOWN_NORMAL`), the peer's close_notify (`SOCKET_SHUTDOWN_BY_PEER`, after
the records before it were handed to `Recv`), a failed handshake, a failed
verification, no agreed SRTP profile or the deadline (`SOCKET_TLS_HANDSHAKE_FAILED`),
the app refusing the ALPN protocol (`SOCKET_ALPN_SELECTION_FAILED`), a fatal alert or
record error after the handshake or a lost transport (`SOCKET_LOST`).
Every detail is logged under `LOG_DTLS`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import secrets
import socket
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL, crypto

from ._address import Address, AddressError, format_ip, parse_address
from ._api import Buffer, ISocket, USocket
from ._base import _ENDED, _LIVE, S, SocketBase, State, _as_view
from ._context import SocketContext
from ._datagram import RecvQueue, recv_view
from ._types import IPaddr, LogFlags, ShutdownReason, SocketModeError
from ._udp import (
    OpenError,
    UDPSocket,
    bind_target,
    bound_udp_socket,
    connect_infos,
    connected_udp_socket,
    copies_needed,
)

if TYPE_CHECKING:
    from ._iomux import IIoMux
    from ._log import IInstanceLog

DEFAULT_MTU = 1200
"""Path MTU (bytes of UDP payload) of new DTLS sockets; change one socket with `SetMtu`."""
MIN_MTU = 256
"""The smallest path MTU `SetMtu` accepts."""
MAX_MTU = 65507
"""The largest path MTU `SetMtu` accepts (the largest IPv4 UDP payload)."""
RECORD_OVERHEAD = 37
"""Bytes a record adds to its cleartext: 13 header + 8 explicit nonce + 16 tag (AES-GCM,
the largest of the AEAD suites DTLS sockets negotiate)."""
HANDSHAKE_TIMEOUT = 30.0
"""Seconds a DTLS handshake may take before it fails (read when each handshake starts)."""
MAX_HANDSHAKING_PEERS = 64
"""Peers of one listening socket that may be in handshake at once; more are dropped."""
MAX_PEERS = 1024
"""Peers (in handshake or established) of one listening socket; more are dropped."""
HOLD_RECORDS = 256
"""Records held for an app with no pending `Recv` before new ones are dropped."""
CIPHERS = b"ECDHE+AESGCM:ECDHE+CHACHA20"
"""The DTLS 1.2 cipher suites: AEAD only, forward secret."""
SRTP_PROFILES = b"SRTP_AEAD_AES_128_GCM:SRTP_AES128_CM_SHA1_80"
"""The SRTP protection profiles offered with `EnableDTLS(True)`, most preferred first."""
SRTP_LABEL = b"EXTRACTOR-dtls_srtp"
"""The RFC 5764 exporter label of the SRTP keying material."""
SRTP_KEY_LENGTHS = {
    "SRTP_AES128_CM_SHA1_80": 2 * (16 + 14),
    "SRTP_AES128_CM_SHA1_32": 2 * (16 + 14),
    "SRTP_AEAD_AES_128_GCM": 2 * (16 + 12),
    "SRTP_AEAD_AES_256_GCM": 2 * (32 + 12),
}
"""Keying material per profile: client key, server key, client salt, server salt."""
COOKIE_WINDOW = 60.0
"""Seconds per cookie generation; a cookie from this or the previous one is valid."""

DTLS1_2_VERSION = 0xFEFD
"""The protocol version DTLS sockets speak (OpenSSL's DTLS1_2_VERSION)."""

_COOKIE_SECRET = secrets.token_bytes(32)
_RECV_MAX = 16384 + 256
_HEADER = 13
_LIMIT_LOG_EVERY = 1000

DTLS_TRANSITIONS: dict[State, frozenset[State]] = {
    S.IDLE: frozenset({S.CONNECTING, S.ACCEPTING, S.BINDING, S.CLOSED, S.DELETED}),
    S.CONNECTING: frozenset({S.CONNECTED, S.CLOSED, S.DELETED}),
    S.ACCEPTING: frozenset({S.CONNECTED, S.CLOSED, S.DELETED}),
    S.CONNECTED: frozenset({S.CLOSED, S.DELETED}),
    S.BINDING: frozenset({S.BOUND, S.CLOSED, S.DELETED}),
    S.BOUND: frozenset({S.LISTENING, S.CLOSED, S.DELETED}),
    S.LISTENING: frozenset({S.CLOSED, S.DELETED}),
    S.CLOSED: frozenset({S.DELETED}),
    S.DELETED: frozenset(),
}
"""The legal moves of a DTLS socket (a DTLS `Shutdown` completes at once: no CLOSING)."""

_HANDSHAKING = (S.CONNECTING, S.ACCEPTING)


# --------------------------------------------------------------------------- helpers


def split_records(data: bytes) -> Iterator[bytes]:
    """The DTLS records in `data` (a drained write BIO); a truncated tail is yielded whole."""
    off = 0
    n = len(data)
    while off < n:
        if n - off < _HEADER:
            yield data[off:]
            return
        end = off + _HEADER + int.from_bytes(data[off + 11 : off + 13], "big")
        yield data[off:end]
        off = end


def pack_records(data: bytes, mtu: int) -> list[bytes]:
    """Pack the DTLS records in `data` into datagrams of at most `mtu` bytes each
    (records are never split; a record larger than `mtu` travels alone)."""
    out: list[bytes] = []
    cur = bytearray()
    for rec in split_records(data):
        if cur and len(cur) + len(rec) > mtu:
            out.append(bytes(cur))
            cur = bytearray()
        cur += rec
    if cur:
        out.append(bytes(cur))
    return out


def _cookie_for(addr: Any, window: int) -> bytes:
    msg = f"{addr[0]}|{addr[1]}|{window}".encode()
    return hmac.new(_COOKIE_SECRET, msg, hashlib.sha256).digest()


def _window() -> int:
    return int(time.time() // COOKIE_WINDOW)


def _ssl_detail(exc: BaseException) -> str:
    """The OpenSSL reasons of a pyOpenSSL error, for the log."""
    if isinstance(exc, SSL.Error) and exc.args and isinstance(exc.args[0], list):
        parts = [str(t[2]) for t in exc.args[0] if isinstance(t, tuple) and len(t) == 3]
        if parts:
            return "; ".join(parts)
    return f"{type(exc).__name__}: {exc}" if str(exc) else repr(exc)


def _alert_record(seq: int) -> bytes:
    """A plaintext (epoch 0) fatal handshake_failure alert."""
    return (
        bytes([21, 0xFE, 0xFD, 0, 0])
        + (seq & 0xFFFFFFFFFFFF).to_bytes(6, "big")
        + bytes([0, 2, 2, 40])
    )


def name_matches(cert: x509.Certificate, name: str) -> bool:
    """Does `cert` carry `name` (a DNS name, or an IP literal) in its subjectAltName
    (or, without one, its common name)?"""
    try:
        ip: IPaddr | None = ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        ip = None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    if ip is not None:
        return san is not None and ip in san.get_values_for_type(x509.IPAddress)
    want = name.rstrip(".").lower()
    if san is not None:
        names = san.get_values_for_type(x509.DNSName)
    else:
        names = [
            str(a.value) for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        ]
    for pattern in names:
        p = pattern.rstrip(".").lower()
        if p == want:
            return True
        if p.startswith("*.") and "." in want:
            head, _, rest = want.partition(".")
            if head and rest == p[2:]:
                return True
    return False


def _load_cert_key(sslctx: SSL.Context, pem: bytes) -> None:
    """Key and chain (PEM, as `SocketContext.cert_pem_for`) into a pyOpenSSL context."""
    certs = x509.load_pem_x509_certificates(pem)
    key = serialization.load_pem_private_key(pem, password=None)
    sslctx.use_certificate(certs[0])
    for c in certs[1:]:
        sslctx.add_extra_chain_cert(c)
    sslctx.use_privatekey(key)  # type: ignore[arg-type]
    sslctx.check_privatekey()


def _verify_cb(conn: SSL.Connection, cert: crypto.X509, err: int, depth: int, ok: int) -> bool:
    sock = conn.get_app_data()
    if not isinstance(sock, DTLSSocket):
        return bool(ok)
    return sock._verify(cert, err, depth, bool(ok))


def _cookie_generate(conn: SSL.Connection) -> bytes:
    sock = conn.get_app_data()
    addr = sock._cookie_addr() if isinstance(sock, DTLSSocket) else None
    if addr is None:
        return b"\0" * 32
    return _cookie_for(addr, _window())


def _cookie_verify(conn: SSL.Connection, cookie: bytes) -> bool:
    sock = conn.get_app_data()
    addr = sock._cookie_addr() if isinstance(sock, DTLSSocket) else None
    if addr is None:
        return False
    w = _window()
    return hmac.compare_digest(cookie, _cookie_for(addr, w)) or hmac.compare_digest(
        cookie, _cookie_for(addr, w - 1)
    )


def _alpn_picker(
    ours: list[bytes],
) -> Callable[[SSL.Connection, list[bytes]], bytes | object]:
    """The server's ALPN choice: the first of its own protocols the client offered
    (the server's order of preference); without one, no protocol (as the TLS sockets:
    the handshake goes on without ALPN)."""

    def pick(conn: SSL.Connection, offered: list[bytes]) -> bytes | object:
        for p in ours:
            if p in offered:
                return p
        sock = conn.get_app_data()
        if isinstance(sock, DTLSSocket):
            sock._fail_log("ALPN", f"no common protocol: the client offered {offered!r}")
        return SSL.NO_OVERLAPPING_PROTOCOLS

    return pick


def _sni_picker(by_name: dict[str, SSL.Context]) -> Callable[[SSL.Connection], None]:
    """Switch a server connection to the context of the certificate set for the name
    the client asked for by SNI (an unknown name or none keeps the default one)."""

    def pick(conn: SSL.Connection) -> None:
        raw = conn.get_servername()
        name = raw.decode("ascii", "replace").lower() if raw else None
        other = by_name.get(name) if name else None
        if other is not None:
            conn.set_context(other)
        sock = conn.get_app_data()
        if isinstance(sock, DTLSSocket) and sock._log.LogFlagSet(sock.LOG_FLAG):
            sock._log.Log(
                sock.LOG_FLAG,
                "dtls %x: SNI %r: %s certificate",
                id(sock),
                name,
                "its" if other is not None else "the default",
            )

    return pick


def build_dtls_context(ctx: SocketContext, server: bool) -> SSL.Context:
    """A pyOpenSSL DTLS 1.2 context from the socket context's description; a server's
    picks the certificate by SNI among those set with a `hostName`."""
    c = _build_dtls_context(ctx, server, ctx.cert_pem_for(server))
    if server:
        by_name = {
            name: _build_dtls_context(ctx, True, ctx.cert_pem_for(True, name))
            for name in ctx.server_names
        }
        if by_name:
            c.set_tlsext_servername_callback(_sni_picker(by_name))
    return c


def _build_dtls_context(ctx: SocketContext, server: bool, pem: bytes | None) -> SSL.Context:
    c = SSL.Context(SSL.DTLS_METHOD)
    c.set_min_proto_version(DTLS1_2_VERSION)
    c.set_max_proto_version(DTLS1_2_VERSION)
    c.set_cipher_list(CIPHERS)
    c.set_options(SSL.OP_NO_QUERY_MTU | SSL.OP_NO_TICKET | SSL.OP_NO_RENEGOTIATION)
    if ctx.use_srtp:
        c.set_tlsext_use_srtp(SRTP_PROFILES)
    alpn = [p.encode() for p in ctx.alpn]
    if alpn and server:
        # the stub wants pyOpenSSL's private NO_OVERLAPPING_PROTOCOLS type
        c.set_alpn_select_callback(_alpn_picker(alpn))  # type: ignore[arg-type]
    elif alpn:
        c.set_alpn_protos(alpn)
    if pem is not None:
        _load_cert_key(c, pem)
    trusted = ctx.trusted_pem
    if trusted is not None:
        store = c.get_cert_store()
        assert store is not None
        for cert in x509.load_pem_x509_certificates(trusted):
            store.add_cert(crypto.X509.from_cryptography(cert))
    if server:
        mode = SSL.VERIFY_PEER  # ask for a client certificate (its fingerprint, for pinning)
        if ctx.verify and trusted is not None:
            mode |= SSL.VERIFY_FAIL_IF_NO_PEER_CERT
        c.set_verify(mode, _verify_cb)
        c.set_cookie_generate_callback(_cookie_generate)
        c.set_cookie_verify_callback(_cookie_verify)
    elif ctx.verify:
        if trusted is None:
            c.set_default_verify_paths()
        c.set_verify(SSL.VERIFY_PEER, _verify_cb)
    else:
        c.set_verify(SSL.VERIFY_NONE)
    return c


# --------------------------------------------------------------------------- endpoint


class _Endpoint(asyncio.DatagramProtocol):
    """One UDP transport: one connected DTLS socket (`owner`), or a listener and the
    peers it accepted (`listener`, `peers` by source address)."""

    __slots__ = ("copy", "listener", "offering", "owner", "peers", "qos_sock", "tr")

    def __init__(self) -> None:
        self.tr: Any = None
        self.owner: DTLSSocket | None = None
        self.listener: DTLSSocket | None = None
        self.peers: dict[Any, DTLSSocket] = {}
        self.copy = True
        self.qos_sock: socket.socket | None = None
        self.offering = 0  # SocketListenResult callbacks running (a peer may be accepted)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.tr = transport
        self.copy = copies_needed(transport)

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
            if u._state not in _ENDED:
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
        "_conn",
        "_cookie_peer",
        "_ctx",
        "_deadline",
        "_ep",
        "_final",
        "_in_alpn",
        "_in_listen_result",
        "_kind",
        "_limit_drops",
        "_listen_conn",
        "_listen_wanted",
        "_mtu",
        "_peer",
        "_peer_end",
        "_peer_fp",
        "_pending",
        "_q",
        "_rtx",
        "_server_ctx",
        "_shutdown_wanted",
        "_srtp_keys",
        "_srtp_profile",
        "_udp",
        "_verify_error",
        "_verify_name",
    )

    TRANSITIONS: ClassVar[dict[State, frozenset[State]]] = DTLS_TRANSITIONS
    LOG_FLAG: ClassVar[int] = LogFlags.LOG_DTLS
    KIND: ClassVar[str] = "dtls"

    def __init__(
        self, iomux: IIoMux, user: USocket | None, log: IInstanceLog, useIPv6: bool,
        ctx: SocketContext,
    ) -> None:  # fmt: skip
        super().__init__(iomux, user, log, useIPv6)
        self._ctx = ctx
        self._kind = "client"
        self._ep: _Endpoint | None = None
        self._peer: Any = None  # source address, for a listener's peer
        self._conn: SSL.Connection | None = None
        self._rtx: asyncio.TimerHandle | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._mtu = DEFAULT_MTU
        self._udp: UDPSocket | None = None
        self._verify_name: str | None = None
        self._verify_error: str | None = None
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
        self._server_ctx: SSL.Context | None = None
        self._listen_conn: SSL.Connection | None = None
        self._listen_wanted = False
        self._cookie_peer: Any = None
        self._in_listen_result = False
        self._accept_decided = False
        self._accept_user: USocket | None = None
        self._limit_drops = 0
        self._in_alpn = False
        # callbacks
        self._pending: deque[tuple[str, tuple[Any, ...]]] = deque()
        self._final = False
        _LIVE.add(self)

    def __repr__(self) -> str:
        return f"<DTLSSocket {self._kind} {self._state.value} {self._local[0]}:{self._local[1]}>"

    # ------------------------------------------------------------------ state, log

    @staticmethod
    def _illegal(old: State, new: State) -> str:
        if old is S.DELETED:
            return "the socket was deleted; make a new one with the provider's CreateSocket"
        if new in (S.CONNECTING, S.BINDING):
            return (
                f"Connect/Bind on a DTLS socket that is {old.value}: the first of Bind or "
                "Connect fixes the mode, once per socket; make a new socket for another"
            )
        if new is S.LISTENING:
            return f"Listen on a DTLS socket that is {old.value}: call Bind first, then Listen"
        return f"a DTLS socket that is {old.value} cannot become {new.value}"

    # ------------------------------------------------------------------ callbacks

    def _event(self, fn: Callable[..., None], *args: Any) -> None:
        """Run a loop event's handler; callbacks it queued run right after it."""
        if self._state is S.DELETED:
            return
        if self._in_event:
            fn(*args)
            return
        self._in_event = True
        try:
            fn(*args)
            self._drain()
        finally:
            self._in_event = False

    def _emit(self, name: str, *args: Any) -> None:
        """Queue a callback: run at the end of the current event, or from the loop's
        batch when we are inside an app call."""
        if self._state is S.DELETED or self._final:
            return
        self._pending.append((name, args))
        if not self._in_event and not self._due:
            self._due = True
            self._mux._deferred.add(self)

    def _run_due(self) -> None:
        self._due = False
        self._event(self._drain)

    def _drain(self) -> None:
        while self._pending:
            name, args = self._pending.popleft()
            if self._state is S.DELETED or self._final:
                self._pending.clear()
                return
            if name == "SocketShutdown":
                self._final = True
            self._callback(name, *args)

    # ------------------------------------------------------------------ the end

    def _finish(self, reason: ShutdownReason) -> None:
        """The one place a socket ends: cancels timers, releases the connection and the
        endpoint, and queues the single `SocketShutdown`."""
        if self._state in _ENDED:
            return
        self._set_state(S.CLOSED)
        self._log.Log(self.LOG_FLAG, "%s %x: shutdown %s", self.KIND, id(self), reason.name)
        self._release()
        self._emit("SocketShutdown", reason)

    def _release(self) -> None:
        for h in (self._rtx, self._deadline):
            if h is not None:
                h.cancel()
        self._rtx = self._deadline = None
        self._cancel_task()
        self._conn = None
        self._listen_conn = None
        self._q.clear()
        self._cache.clear()
        ep, self._ep = self._ep, None
        if ep is not None:
            ep.release(self)

    def _hs_fail(self, what: str, detail: object) -> None:
        if self._verify_error:
            detail = f"{detail} ({self._verify_error})"
        self._fail_log(what, detail)
        self._finish(ShutdownReason.SOCKET_TLS_HANDSHAKE_FAILED)

    def _lost(self, exc: BaseException | None) -> None:
        if self._state in _HANDSHAKING:
            self._hs_fail("transport lost during the handshake", repr(exc))
        elif self._state is S.CONNECTED:
            # records already read still go to Recv first, as on a stream socket
            self._fail_log("transport lost", repr(exc))
            if self._peer_end is None:
                self._peer_end = ShutdownReason.SOCKET_LOST
            self._check_end()
        elif self._state not in _ENDED:
            self._fail_log("transport lost", repr(exc))
            self._finish(ShutdownReason.SOCKET_LOST)

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
        self._check_alive("Connect")
        self._set_state(S.CONNECTING)
        try:
            target = parse_address(address, need_port=True)
        except AddressError as e:
            self._fail_log("Connect: address invalid", e)
            self._finish(ShutdownReason.SOCKET_ADDRESS_INVALID)
            return
        self._verify_name = serverName or target.host
        self._task = self._loop.create_task(self._connect(target))

    async def _connect(self, target: Address) -> None:
        try:
            infos = await connect_infos(self._loop, target, self._use_ipv6)
            if self._state is not S.CONNECTING:
                return
            sock = connected_udp_socket(infos)
        except OpenError as e:
            self._task = None
            self._event(self._open_failed, e)
            return
        if not await self._attach(sock):
            return
        self._task = None
        self._event(self._start_client)

    def _refused(self, exc: Exception) -> None:
        """The peer's host refused the ClientHello (ICMP port unreachable): nobody serves
        the port, a connect failure like TCP's."""
        self._fail_log("Connect: refused during the handshake", repr(exc))
        self._finish(ShutdownReason.SOCKET_CONNECT_REJECTED)

    def _open_failed(self, e: OpenError) -> None:
        self._fail_log(e.what, e.detail)
        self._finish(e.reason)

    async def _attach(self, sock: socket.socket) -> bool:
        ep = _Endpoint()
        try:
            await self._loop.create_datagram_endpoint(lambda: ep, sock=sock)
        except asyncio.CancelledError:
            sock.close()
            raise
        except Exception as e:
            self._task = None
            if ep.tr is None:
                sock.close()
            self._event(self._open_failed, OpenError(ShutdownReason.SOCKET_OPEN_FAILED, "open", e))
            return False
        if self._state in _ENDED:
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
            sslctx = build_dtls_context(self._ctx, False)
        except (SSL.Error, ValueError) as e:
            self._hs_fail("cannot set up DTLS", _ssl_detail(e))
            return
        conn = self._new_conn(sslctx)
        name = self._verify_name or ""
        if name and not _is_ip(name):
            conn.set_tlsext_host_name(name.encode("idna"))
        conn.set_connect_state()
        self._begin_handshake(conn)

    def _new_conn(self, sslctx: SSL.Context) -> SSL.Connection:
        conn = SSL.Connection(sslctx, None)
        conn.set_app_data(self)
        conn.set_ciphertext_mtu(self._mtu)
        return conn

    def _begin_handshake(self, conn: SSL.Connection) -> None:
        self._conn = conn
        conn.set_app_data(self)
        conn.set_ciphertext_mtu(self._mtu)
        self._deadline = self._loop.call_later(HANDSHAKE_TIMEOUT, self._on_deadline)
        self._log.Log(
            self.LOG_FLAG, "dtls %x: handshake starts (%s, mtu %d)", id(self), self._kind, self._mtu
        )
        self._step()

    def _on_deadline(self) -> None:
        self._deadline = None
        if self._state in _HANDSHAKING:
            self._event(self._hs_fail, "handshake", f"no result after {HANDSHAKE_TIMEOUT}s")

    # ------------------------------------------------------------------ the handshake

    def _step(self) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            conn.do_handshake()
        except SSL.WantReadError:
            self._flush()
            self._arm()
            return
        except SSL.Error as e:
            self._flush()  # the alert, if OpenSSL made one
            self._hs_fail("handshake failed", _ssl_detail(e))
            return
        self._flush()
        self._arm()
        self._handshake_done(conn)

    def _verify(self, cert: crypto.X509, err: int, depth: int, ok: bool) -> bool:
        server = self._kind != "client" and self._kind != "upgraded-client"
        if server and not (self._ctx.verify and self._ctx.trusted_pem is not None):
            return True  # asked only for the fingerprint
        if not ok:
            self._verify_error = (
                f"certificate verification failed at depth {depth}: "
                f"{_verify_message(err)} (X509 error {err})"
            )
            return False
        name = self._verify_name
        if depth == 0 and not server and name and not name_matches(cert.to_cryptography(), name):
            self._verify_error = f"the certificate does not match the name {name!r}"
            return False
        return True

    def _handshake_done(self, conn: SSL.Connection) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self._ctx.use_srtp:
            profile = conn.get_selected_srtp_profile().decode("ascii", "replace")
            length = SRTP_KEY_LENGTHS.get(profile)
            if not profile or length is None:
                self._send_close(conn)
                self._hs_fail("SRTP", f"no SRTP profile agreed (offered {SRTP_PROFILES!r})")
                return
            self._srtp_profile = profile
            self._srtp_keys = conn.export_keying_material(SRTP_LABEL, length)
        peer = conn.get_peer_certificate(as_cryptography=True)
        if peer is not None:
            der = peer.public_bytes(serialization.Encoding.DER)
            self._peer_fp = hashlib.sha256(der).digest()
        alpn = conn.get_alpn_proto_negotiated()
        proto = alpn.decode("utf-8", "replace") if alpn else None
        self._log.Log(
            self.LOG_FLAG,
            "dtls %x: handshake done: %s %s, SRTP %s, ALPN %s, cleartext MTU %d",
            id(self),
            conn.get_protocol_version_name(),
            conn.get_cipher_name(),
            self._srtp_profile or "none",
            proto or "none",
            self.GetCleartextMtu(),
        )
        if proto is not None and not self._alpn_accepted(conn, proto):
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
            return
        self._read_records()

    def _alpn_accepted(self, conn: SSL.Connection, proto: str) -> bool:
        """Offer the negotiated protocol to `SocketAcceptSelectedALPNProtocol` (after
        the callbacks queued before it). False from the app sends close_notify (the
        peer, whose handshake is done, ends with `SOCKET_SHUTDOWN_BY_PEER`) and ends
        this socket with `SOCKET_ALPN_SELECTION_FAILED`. A `Shutdown` inside the
        callback does the same with `SOCKET_SHUTDOWN_NORMAL`; after a `Delete` inside
        it, nothing more happens. Returns whether the handshake may complete."""
        st = self._state
        self._drain()
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
        self._send_close(conn)
        self._finish(reason)
        return False

    def _send_close(self, conn: SSL.Connection) -> None:
        try:
            conn.shutdown()
        except SSL.Error:
            pass
        self._flush()

    def _arm(self) -> None:
        if self._rtx is not None:
            self._rtx.cancel()
            self._rtx = None
        conn = self._conn
        if conn is None:
            return
        t = conn.DTLSv1_get_timeout()
        if t is not None:
            self._rtx = self._loop.call_later(max(t, 0.0), self._on_rtx)

    def _on_rtx(self) -> None:
        self._rtx = None
        self._event(self._retransmit)

    def _retransmit(self) -> None:
        conn = self._conn
        if conn is None or self._state in _ENDED:
            return
        try:
            if conn.DTLSv1_handle_timeout():
                self._log.Log(self.LOG_FLAG, "dtls %x: retransmitting", id(self))
        except SSL.Error as e:
            self._flush()
            if self._state in _HANDSHAKING:
                self._hs_fail("handshake failed after retransmissions", _ssl_detail(e))
            else:
                self._fail_log("retransmission failed", _ssl_detail(e))
                self._finish(ShutdownReason.SOCKET_LOST)
            return
        self._flush()
        self._arm()

    def _flush(self) -> None:
        """Send what OpenSSL wrote, as records packed into datagrams of at most the MTU."""
        conn = self._conn
        if conn is None:
            return
        out = b""
        while True:
            try:
                out += conn.bio_read(65536)
            except SSL.WantReadError:
                break
        ep = self._ep
        if not out or ep is None:
            return
        for dgram in pack_records(out, self._mtu):
            ep.send(dgram, self._peer)

    # ------------------------------------------------------------------ receiving

    def _on_datagram(self, data: bytes) -> None:
        conn = self._conn
        st = self._state
        if conn is None or st in _ENDED or not data:
            return  # a zero-length datagram holds no record (and BIO_write refuses it)
        conn.bio_write(data)
        if st in _HANDSHAKING:
            self._step()
        else:
            self._read_records()

    def _read_records(self) -> None:
        conn = self._conn
        while conn is not None and self._state is S.CONNECTED and self._peer_end is None:
            try:
                rec = conn.recv(_RECV_MAX)
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:
                self._log.Log(self.LOG_FLAG, "dtls %x: close_notify from the peer", id(self))
                self._peer_end = ShutdownReason.SOCKET_SHUTDOWN_BY_PEER
                break
            except SSL.Error as e:
                self._flush()
                self._fail_log("DTLS error", _ssl_detail(e))
                self._peer_end = ShutdownReason.SOCKET_LOST
                break
            self._deliver(rec)
        self._flush()
        self._arm()
        self._check_end()

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
            self._finish(self._peer_end)

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
        try:
            family, sockaddr = await bind_target(self._loop, localAddr, localPort, self._use_ipv6)
            if self._state is not S.BINDING:
                return
            sock = bound_udp_socket(family, sockaddr, reuseAddr)
        except OpenError as e:
            self._task = None
            self._event(self._open_failed, e)
            return
        if not await self._attach(sock):
            return
        self._task = None
        if not reuseAddr and self._ep is not None:
            _clear_reuse(self._ep.tr)
        self._event(self._bound)

    def _bound(self) -> None:
        if self._state is not S.BINDING or self._ep is None:
            return
        self._ep.listener = self
        self._set_state(S.BOUND)
        self._emit("SocketBindResult", self._local[0], self._local[1])
        if self._shutdown_wanted:
            self._finish(ShutdownReason.SOCKET_SHUTDOWN_NORMAL)
        elif self._listen_wanted:
            self._start_listen()

    def Listen(self) -> None:
        """Serve DTLS on the bound address: each new peer that passed the cookie exchange
        leads to `SocketListenResult(socket, addr, port)`; `Accept(user)` inside it gives
        that peer a socket, whose `SocketAcceptComplete` follows once its handshake is
        done (or its `SocketShutdown(SOCKET_TLS_HANDSHAKE_FAILED)`).

        Raises:
            SocketModeError: the socket is not bound (call `Bind` first).
        """
        self._check_alive("Listen")
        if self._state is S.BINDING and not self._listen_wanted:
            self._listen_wanted = True
        elif self._state is S.BOUND:
            self._start_listen()
        else:
            raise SocketModeError(self._illegal(self._state, S.LISTENING))

    def _start_listen(self) -> None:
        try:
            self._server_ctx = build_dtls_context(self._ctx, True)
        except (SSL.Error, ValueError) as e:
            self._fail_log("Listen: cannot set up DTLS", _ssl_detail(e))
            self._finish(ShutdownReason.SOCKET_LISTEN_FAILED)
            return
        self._set_state(S.LISTENING)
        self._log.Log(self.LOG_FLAG, "dtls %x: listening on %s:%d", id(self), *self._local)

    def _handshaking_peers(self) -> int:
        ep = self._ep
        if ep is None:
            return 0
        return sum(1 for p in ep.peers.values() if p._state is S.ACCEPTING)

    def _limit(self, what: str) -> None:
        self._limit_drops += 1
        if self._limit_drops % _LIMIT_LOG_EVERY == 1:
            self._fail_log("new peer dropped", f"{what} ({self._limit_drops} dropped so far)")

    def _on_new_peer_datagram(self, data: bytes, addr: Any) -> None:
        """A datagram from a source with no peer socket: the cookie exchange."""
        if self._state is not S.LISTENING or self._server_ctx is None or self._ep is None:
            return
        # only an epoch-0 handshake record holding a ClientHello is worth OpenSSL's time
        if len(data) < _HEADER + 12 or data[0] != 22 or data[3:5] != b"\0\0" or data[13] != 1:
            return
        peers = self._ep.peers
        if len(peers) >= MAX_PEERS:
            self._limit(f"MAX_PEERS={MAX_PEERS} reached")
            return
        if self._handshaking_peers() >= MAX_HANDSHAKING_PEERS:
            self._limit(f"MAX_HANDSHAKING_PEERS={MAX_HANDSHAKING_PEERS} reached")
            return
        lc = self._listen_conn
        if lc is None:
            lc = SSL.Connection(self._server_ctx, None)
            lc.set_app_data(self)
            lc.set_ciphertext_mtu(self._mtu)
            lc.set_accept_state()
            self._listen_conn = lc
        self._cookie_peer = addr
        try:
            lc.bio_write(data)
            lc.DTLSv1_listen()
        except SSL.WantReadError:
            self._send_listen_output(lc, addr)
            return
        except SSL.Error as e:
            self._listen_conn = None
            self._log.Log(
                self.LOG_FLAG,
                "dtls %x: bad ClientHello from %s: %s",
                id(self),
                addr,
                _ssl_detail(e),
            )
            return
        finally:
            self._cookie_peer = None
        self._listen_conn = None
        self._offer(lc, addr, int.from_bytes(data[5:11], "big"))

    def _cookie_addr(self) -> Any:
        """The peer address a cookie is made for: the datagram's source while the
        listener runs `DTLSv1_listen`, the peer's own address after."""
        return self._cookie_peer if self._cookie_peer is not None else self._peer

    def _send_listen_output(self, lc: SSL.Connection, addr: Any) -> None:
        out = b""
        while True:
            try:
                out += lc.bio_read(65536)
            except SSL.WantReadError:
                break
        if out and self._ep is not None:
            for dgram in pack_records(out, self._mtu):
                self._ep.send(dgram, addr)

    def _offer(self, conn: SSL.Connection, addr: Any, seq: int) -> None:
        host = format_ip(addr[0])
        if host.startswith("::ffff:") and "." in host:
            host = host[7:]
        self._drain()  # callbacks queued before this one go first
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
            return
        if user is None:
            self._log.Log(self.LOG_FLAG, "dtls %x: peer %s:%d denied", id(self), host, addr[1])
            ep.send(_alert_record(seq + 1), addr)
            ep.close_if_unused()
            return
        peer = DTLSSocket(self._mux, user, self._log, self._use_ipv6, self._ctx)
        peer._kind = "peer"
        peer._state = S.ACCEPTING
        peer._ep = ep
        peer._peer = addr
        peer._mtu = self._mtu
        peer._local = self._local
        ep.peers[addr] = peer
        peer._event(peer._begin_handshake, conn)

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
        sslctx = build_dtls_context(self._ctx, server_side)
        conn = self._new_conn(sslctx)
        if server_side:
            conn.set_accept_state()
        else:
            name = self._verify_name or ""
            if name and not _is_ip(name):
                conn.set_tlsext_host_name(name.encode("idna"))
            conn.set_connect_state()
        self._begin_handshake(conn)
        for d in held:
            if self._state in _ENDED:
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
        self._listen_conn = None  # a listener makes its next one with the new MTU
        if self._conn is not None:
            self._conn.set_ciphertext_mtu(mtu)

    def _put(self, data: bytes) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            conn.send(data)
        except SSL.Error as e:
            self._fail_log("Send failed", _ssl_detail(e))
        self._flush()
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
        mv = _as_view(buf, "Send")
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
        q.rq.append((buf, recv_view(buf, len, "Recv")))
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
        elif st is S.CONNECTING and self._conn is None:
            self._finish(ShutdownReason.SOCKET_SHUTDOWN_NORMAL)
        elif st in _HANDSHAKING:
            self._shutdown_wanted = True
            if not self._in_alpn:  # else the handshake is done: close_notify after the callback
                self._finish(ShutdownReason.SOCKET_SHUTDOWN_NORMAL)
        elif st is S.CONNECTED:
            self._close_now()
        elif st in (S.IDLE, S.BOUND, S.LISTENING):
            self._finish(ShutdownReason.SOCKET_SHUTDOWN_NORMAL)

    def _close_now(self) -> None:
        conn = self._conn
        if conn is not None:
            self._send_close(conn)
        self._finish(ShutdownReason.SOCKET_SHUTDOWN_NORMAL)

    def Delete(self) -> None:
        """Release the socket at once (and the UDP socket it was upgraded from): it makes
        no callback, ever again. A listener's accepted peers carry on."""
        self._check_alive("Delete")
        conn = self._conn
        if self._state is S.CONNECTED and conn is not None and self._peer_end is None:
            self._send_close(conn)  # best effort: the peer learns it is gone
        self._set_state(S.DELETED)
        self._release()
        self._pending.clear()
        self._user = None
        _LIVE.discard(self)
        udp, self._udp = self._udp, None
        if udp is not None and not udp.deleted():
            udp.Delete()


# --------------------------------------------------------------------------- helpers


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


def _verify_message(err: int) -> str:
    from OpenSSL._util import ffi, lib

    try:
        return str(ffi.string(lib.X509_verify_cert_error_string(err)).decode())
    except Exception:  # pragma: no cover - the binding lacks the function
        return f"X509 error {err}"


def _clear_reuse(tr: Any) -> None:
    """libuv (uvloop) sets SO_REUSEADDR on every UDP socket; without `reuseAddr` the
    port must stay ours alone."""
    sock = tr.get_extra_info("socket") if tr is not None else None
    try:
        if sock is not None and sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
    except OSError:
        pass


def create_dtls_socket(
    iomux: IIoMux, user: USocket, log: IInstanceLog, useIPv6: bool, ctx: SocketContext
) -> ISocket:
    """A new DTLS socket (the TLS provider's `CreateSocket` for a DTLS context)."""
    return DTLSSocket(iomux, user, log, useIPv6, ctx)


def upgrade_udp_socket(
    udp: ISocket,
    iomux: IIoMux,
    user: USocket,
    log: IInstanceLog,
    server_side: bool,
    ctx: SocketContext,
) -> ISocket:
    """Run DTLS over the connected UDP socket `udp` (the TLS provider's
    `UpgradeToTLSSocket`); the DTLS socket owns it from then on.

    Raises:
        SocketModeError: `udp` is already DTLS, or not a connected UDP socket.
    """
    if isinstance(udp, DTLSSocket):
        raise SocketModeError(
            "UpgradeToTLSSocket on a DTLS socket: it already speaks DTLS; pass the UDP socket"
        )
    if not isinstance(udp, UDPSocket):
        raise TypeError("UpgradeToTLSSocket takes a TCP socket (TLS) or a UDP socket (DTLS)")
    refusal = udp.hand_over_refusal()
    if refusal is not None:
        raise SocketModeError(
            "UpgradeToTLSSocket needs a connected UDP socket: Connect it and upgrade after "
            f"SocketConnectComplete (it is {refusal})"
        )
    sock = DTLSSocket(iomux, user, log, udp.uses_ipv6(), ctx)
    try:
        sock._begin_upgrade(udp, bool(server_side))
    except BaseException:
        sock._abandon()
        raise
    return sock
