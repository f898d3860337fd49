"""The DTLS 1.2 engine, sans-IO: datagrams in, datagrams out, timers asked for, events out.

Theory of operation
-------------------
A `DtlsConnection` is one DTLS association (client or server) on a pyOpenSSL
`SSL.Connection` over memory BIOs. It owns no socket, no loop and no clock: every call
that may depend on time takes `now` (seconds, on whatever clock the caller keeps: the
loop's, or a simulated one in the tests), and the engine tells the caller when it next
wants to be woken (`get_timer`, an absolute time on that clock, or None). It is driven
the way a QUIC connection is in a sans-IO stack:

    conn.start(now)                      # a client sends its ClientHello
    conn.receive_datagram(data, now)     # each datagram from the peer
    conn.handle_timer(now)               # once `now >= conn.get_timer()`
    for d in conn.datagrams_to_send(): send d to the peer
    while (ev := conn.next_event()) is not None: handle ev

Who owns each datagram.
- Incoming: the caller hands over one datagram per `receive_datagram`. The engine
  first reads the record headers (`valid_prefix`): only the leading run of well-formed
  records (a DTLS content type, version and epoch, a length within `MAX_RECORD_LENGTH`
  and within the datagram, at most `MAX_RECORDS`) goes on; the rest of the datagram is
  dropped there, so junk costs a header parse. What goes on is written into the read
  BIO in packets OpenSSL reads whole (`_PACKET_MAX`; for `DTLSv1_listen` only the first
  record, a ClientHello of at most 2^14 bytes), and OpenSSL runs on each before the call
  returns; whatever OpenSSL left unread is then discarded (`_discard_unread`), so no
  byte of one datagram is ever read in front of the next. Epoch-0 records (no MAC) are
  numbered by the engine as they are fed (`_renumber`): a stranger's record number
  cannot move OpenSSL's replay window. Nothing is kept but a bounded set of digests of
  handshake datagrams (to notice a peer's retransmission, below) and at most one held
  ChangeCipherSpec with its Finished (reordering, below).
- Outgoing: what OpenSSL wrote is split into records (13-byte headers) and packed into
  datagrams of at most the path MTU (OpenSSL is told the same MTU, so no record is
  larger); they wait in the engine until the caller takes them with
  `datagrams_to_send`. Each `send_data` is one record; one larger than the cleartext
  MTU raises `ValueError`.
- The last handshake flight is also kept, for retransmission.

Retransmission. OpenSSL's own DTLS timer reads the wall clock (1 s, doubling), which a
sans-IO engine cannot drive, so the engine keeps the flight schedule itself on the
caller's clock (RFC 6347 §4.2.4): first after `rto_initial` (`RTO_INITIAL`, 100 ms by
default), doubling up to `RTO_MAX` (60 s). When the timer runs out, OpenSSL is asked
first (`DTLSv1_handle_timeout`: when its own timer has also run out it re-encodes the
flight, with fresh record numbers); else the engine resends the kept datagrams as they
were, which the peer accepts for every record it did not get (a record it did get is a
replay it drops). OpenSSL may also resend by its own timer inside a call that reads a
datagram; when the same call writes the next flight, that stale copy of the last one
is dropped (`_new_flight`: a peer reads the first of two ClientHellos in a datagram).
A datagram that repeats one of the peer's flight that led to our last flight means the
peer did not get ours: the engine resends it, also after its own handshake is done (the
server's last flight has no timer of its own), but at most once per interval that
starts at `rto_initial` and doubles up to `RTO_MAX` with each such resend: replayed
datagrams cannot make the engine an amplifier. The handshake as a whole has a deadline
(`handshake_timeout`, from `start` or, for a server, the first datagram).

Reordering. OpenSSL buffers handshake messages that come early, but drops a
ChangeCipherSpec that comes before the messages it follows; only a re-encoded resend
would bring it back. The engine therefore holds a ChangeCipherSpec that comes while
OpenSSL's own state says it is not the next thing to read (with the Finished that
follows it in its datagram, `held_part`: one at most, a newer one replaces it), and
gives it to OpenSSL once that state is reached: a flight that arrives out of order costs
no resend. The engine asks OpenSSL (`get_state_string`) rather than keeping its own
account of the peer's messages, so its view of the handshake is never more than
OpenSSL's: a stray record OpenSSL drops changes nothing, and the work per datagram does
not grow with what came before.

Server side. With `cookie=True` a server answers a ClientHello without a valid cookie
statelessly with a HelloVerifyRequest (`DTLSv1_listen`); the cookie is HMAC-SHA256
over the peer's address and a `COOKIE_WINDOW` counter of `now` under a per-process
secret, valid in its window and the next. `CookieListener` does the same for a
listening socket, before any per-peer state exists, within the peer caps
(`MAX_PEERS`, `MAX_HANDSHAKING_PEERS`).

Verification. A `fingerprint` (a digest of the DER of the peer's certificate, the SDP's
a=fingerprint) pins the peer: it must present exactly that certificate, and no chain or
name is checked (the WebRTC rule). The digest's length names its hash (`PIN_HASHES`: 20
bytes SHA-1, 28 SHA-224, 32 SHA-256, 48 SHA-384, 64 SHA-512, the hashes SDP writes), and
the peer's certificate is hashed with that one. Without one, the config's verification applies
(chain against the trust store, name against `verify_name`).

What ends a connection (one `ConnectionFailed` or `CloseNotify` event, then nothing):
the peer's close_notify (`CloseNotify`; the engine answers with its own); a failed
handshake, a failed verification or pin, no agreed SRTP profile, or the deadline
(`ConnectionFailed(SOCKET_TLS_HANDSHAKE_FAILED)`); a fatal alert or record error after
the handshake (`ConnectionFailed(SOCKET_LOST)`). The caller's `close` (close_notify
sent) and `abort` (nothing sent) end it without an event.

Log. Every line of one association carries one id (`log_id`: the adapter's, so that
the socket's or `IDtls`'s own lines and the engine's read as one), and a failure is
logged once, here, with OpenSSL's detail.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL, crypto
from OpenSSL._util import ffi as _ffi
from OpenSSL._util import lib as _lib

from ._errors import detail
from ._types import IPaddr, LogFlags, ShutdownReason

if TYPE_CHECKING:
    from ._context import SocketContext
    from ._log import IInstanceLog

DEFAULT_MTU = 1200
"""Path MTU (bytes of UDP payload) of new DTLS connections."""
MIN_MTU = 256
"""The smallest path MTU accepted."""
MAX_MTU = 65507
"""The largest path MTU accepted (the largest IPv4 UDP payload)."""
RECORD_OVERHEAD = 37
"""Bytes a record adds to its cleartext: 13 header + 8 explicit nonce + 16 tag (AES-GCM,
the largest of the AEAD suites negotiated)."""
HANDSHAKE_TIMEOUT = 30.0
"""Seconds a DTLS handshake may take before it fails."""
MAX_HANDSHAKING_PEERS = 64
"""Peers of one listening socket that may be in handshake at once; more are dropped."""
MAX_PEERS = 1024
"""Peers (in handshake or established) of one listening socket; more are dropped."""
CIPHERS = b"ECDHE+AESGCM:ECDHE+CHACHA20"
"""The DTLS 1.2 cipher suites: AEAD only, forward secret."""
SRTP_PROFILES = b"SRTP_AEAD_AES_128_GCM:SRTP_AES128_CM_SHA1_80:SRTP_AEAD_AES_256_GCM"
"""The SRTP protection profiles offered with SRTP, most preferred first."""
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
RTO_INITIAL = 0.1
"""Seconds before a flight is first resent, by default (`rto_initial`): short, as media
stacks use (a browser resends after about 50 ms); RFC 6347 §4.2.4.1 suggests 1 s for
paths whose round trip is unknown. The wait doubles at each resend up to `RTO_MAX`.
Measured (`python -m benchmarks.dtls --lossy`, simulated, 300 seeds): at 10% loss the
90th percentile handshake takes 0.21 s (1 s: 2.01 s); with 100 ms of round trip and no
loss it sends no more datagrams than 1 s does (0.05 s would send 15 instead of 6).
Through the loopback relay at 20% loss each way: median 0.10 s, p90 0.81 s (1 s:
2.0 s, 12 s)."""
RTO_MAX = 60.0
"""The longest wait between two resends of a flight (RFC 6347 §4.2.4.1)."""
MAX_RECORD_LENGTH = 2**14 + 2048
"""The largest record body accepted (RFC 6347 §4.3.1: TLSCiphertext.length); a record
announcing more, or running past its datagram, ends what the engine reads of that
datagram."""
MAX_RECORDS = 64
"""Records of one datagram given to OpenSSL; the rest of the datagram is dropped (a
flight packed into one datagram of the largest MTU has about ten)."""
DTLS1_2_VERSION = 0xFEFD
"""The protocol version spoken (OpenSSL's DTLS1_2_VERSION)."""

_COOKIE_SECRET = secrets.token_bytes(32)
_RECV_MAX = 16384 + 256
_HEADER = 13
_SEEN_MAX = 64
_HELLO_MAX = 2**14
"""The largest ClientHello record body `DTLSv1_listen` is given: it reads one packet of
at most 2^14 + 13 bytes (an epoch-0 record holds at most 2^14 bytes of plaintext)."""
_PACKET_MAX = _HEADER + MAX_RECORD_LENGTH
"""The most bytes written into OpenSSL's read BIO at once: OpenSSL reads them in one go."""
_SCRATCH = 4096
_JUNK_LOG_EVERY = 1000
_HELD_NEXT_MAX = 256
"""The largest record held after an early ChangeCipherSpec (its Finished is about 61
bytes)."""
# OpenSSL states after which the peer's ChangeCipherSpec is the next thing it reads
# (SSL_state_string_long; DTLS 1.2): our Finished was written (a full handshake's
# last flight of the client, a resumed one's of the server), or a server read the
# client's last message before its ChangeCipherSpec.
_CCS_NEXT = b"SSLv3/TLS write finished"
_CCS_NEXT_SERVER_CERT = b"SSLv3/TLS read certificate verify"
_CCS_NEXT_SERVER_NO_CERT = b"SSLv3/TLS read client key exchange"

_scratch = _ffi.new("char[]", _SCRATCH)

# connection states
LISTEN: Final = 0  # server: waiting for a ClientHello with a valid cookie
HANDSHAKE: Final = 1
ESTABLISHED: Final = 2
ENDED: Final = 3


# --------------------------------------------------------------------------- events


class DtlsEvent:
    """Something the caller learns from `next_event`."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class HandshakeCompleted(DtlsEvent):
    """The handshake is done: what it agreed."""

    alpn: str | None
    srtp_profile: str | None
    srtp_keys: bytes | None
    peer_fingerprint: bytes | None
    version: str
    cipher: str


@dataclass(frozen=True, slots=True)
class ApplicationData(DtlsEvent):
    """One record's cleartext."""

    data: bytes


class CloseNotify(DtlsEvent):
    """The peer closed the connection with close_notify (ours was sent in reply)."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class ConnectionFailed(DtlsEvent):
    """The connection ended on an error: the contract's reason and OpenSSL's detail."""

    reason: ShutdownReason
    detail: str


# --------------------------------------------------------------------------- pure helpers


def is_dtls(first_byte: int) -> bool:
    """RFC 7983: a datagram whose first byte is 20..63 is DTLS (0..3 is STUN, 64..79
    TURN channels, 128..191 RTP/RTCP)."""
    return 20 <= first_byte <= 63


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


def cookie_for(addr: Any, window: int) -> bytes:
    """The stateless cookie of a peer address in a cookie window."""
    msg = f"{addr[0]}|{addr[1]}|{window}".encode()
    return hmac.new(_COOKIE_SECRET, msg, hashlib.sha256).digest()


def cookie_window(now: float) -> int:
    """The cookie generation of the caller's time `now`."""
    return int(now // COOKIE_WINDOW)


def alert_record(seq: int) -> bytes:
    """A plaintext (epoch 0) fatal handshake_failure alert."""
    return (
        bytes([21, 0xFE, 0xFD, 0, 0])
        + (seq & 0xFFFFFFFFFFFF).to_bytes(6, "big")
        + bytes([0, 2, 2, 40])
    )


def valid_prefix(data: bytes, limit: int = MAX_RECORDS) -> int:
    """The length of the leading run of well-formed DTLS records in `data`: a content
    type 20..23, version DTLS 1.x, an epoch DTLS 1.2 can have (0 or 1: a
    ChangeCipherSpec in epoch 0, application data in epoch 1), a body of at most
    `MAX_RECORD_LENGTH` that ends within `data`; at most `limit` records. 0: nothing
    OpenSSL could use."""
    off = 0
    n = len(data)
    count = 0
    while count < limit and off + _HEADER <= n:
        ctype = data[off]
        if not 20 <= ctype <= 23 or data[off + 1] != 0xFE or data[off + 2] not in (0xFD, 0xFF):
            break
        epoch = data[off + 4] if data[off + 3] == 0 else 2
        if epoch > 1 or (ctype == 20 and epoch) or (ctype == 23 and not epoch):
            break
        length = (data[off + 11] << 8) | data[off + 12]
        end = off + _HEADER + length
        if length > MAX_RECORD_LENGTH or end > n:
            break
        off = end
        count += 1
    return off


def first_ccs(data: bytes) -> int:
    """The offset of the first epoch-0 ChangeCipherSpec record in `data` (well-formed
    records, as `valid_prefix` leaves them); -1: none."""
    off = 0
    n = len(data)
    while off + _HEADER <= n:
        if data[off] == 20 and data[off + 3] == 0 and data[off + 4] == 0:
            return off
        off += _HEADER + ((data[off + 11] << 8) | data[off + 12])
    return -1


def held_part(tail: bytes) -> bytes:
    """What of a datagram's tail that starts with an early ChangeCipherSpec is held: the
    ChangeCipherSpec and the record after it when that is the Finished (epoch 1,
    handshake, at most `_HELD_NEXT_MAX` bytes). What follows (application data, or
    anything else) is dropped: the held part of a connection is at most
    14 + `_HELD_NEXT_MAX` bytes."""
    ccs_end = _HEADER + ((tail[11] << 8) | tail[12])
    nxt = tail[ccs_end : ccs_end + _HEADER]
    if len(nxt) == _HEADER and nxt[0] == 22 and nxt[3:5] == b"\0\1":
        end = ccs_end + _HEADER + ((nxt[11] << 8) | nxt[12])
        if end - ccs_end <= _HELD_NEXT_MAX:
            return tail[:end]
    return tail[:ccs_end]


def _message_seqs(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(offset, end, message_seq or -1) of each record in `data`: the message_seq of an
    epoch-0 handshake record, -1 for any other."""
    off = 0
    n = len(data)
    while off < n:
        end = min(n, off + _HEADER + int.from_bytes(data[off + 11 : off + 13], "big"))
        mseq = -1
        if end - off >= _HEADER + 6 and data[off] == 22 and data[off + 3 : off + 5] == b"\0\0":
            mseq = int.from_bytes(data[off + _HEADER + 4 : off + _HEADER + 6], "big")
        yield off, end, mseq
        off = end


def _discard_unread(conn: SSL.Connection) -> int:
    """Empty OpenSSL's read BIO: bytes OpenSSL did not read would otherwise be read in
    front of the next datagram. Returns how many there were (normally 0: the engine
    writes packets OpenSSL reads whole)."""
    bio = getattr(conn, "_into_ssl", None)
    if bio is None:  # pragma: no cover - a pyOpenSSL without memory BIOs
        return 0
    total = 0
    while True:
        k = _lib.BIO_read(bio, _scratch, _SCRATCH)
        if k <= 0:
            return total
        total += k


def is_client_hello(data: bytes) -> bool:
    """Is `data` an epoch-0 handshake record holding a ClientHello (the only datagram
    from an unknown source worth OpenSSL's time)?"""
    return len(data) >= _HEADER + 12 and data[0] == 22 and data[3:5] == b"\0\0" and data[13] == 1


def is_ip(name: str) -> bool:
    """Is `name` an IP literal (brackets allowed)?"""
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


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


PIN_HASHES = {20: "sha1", 28: "sha224", 32: "sha256", 48: "sha384", 64: "sha512"}
"""A pinned fingerprint's length in bytes -> the hash it is a digest of (RFC 8122's
hashes: SDP's sha-1, sha-224, sha-256, sha-384, sha-512; each has its own length)."""


def cert_fingerprint(cert: crypto.X509 | x509.Certificate, hash_name: str = "sha256") -> bytes:
    """A certificate's DER hashed by `hash_name` (a `hashlib` name; SHA-256 by default)."""
    c = cert.to_cryptography() if isinstance(cert, crypto.X509) else cert
    return hashlib.new(hash_name, c.public_bytes(serialization.Encoding.DER)).digest()


def verify_message(err: int) -> str:
    """OpenSSL's text for an X509 verification error code."""
    from OpenSSL._util import ffi, lib

    try:
        return str(ffi.string(lib.X509_verify_cert_error_string(err)).decode())
    except Exception:  # pragma: no cover - the binding lacks the function
        return f"X509 error {err}"


def _load_cert_key(sslctx: SSL.Context, pem: bytes) -> None:
    """Key and chain (PEM, as `SocketContext.cert_pem_for`) into a pyOpenSSL context."""
    certs = x509.load_pem_x509_certificates(pem)
    key = serialization.load_pem_private_key(pem, password=None)
    sslctx.use_certificate(certs[0])
    for c in certs[1:]:
        sslctx.add_extra_chain_cert(c)
    sslctx.use_privatekey(key)  # type: ignore[arg-type]
    sslctx.check_privatekey()


# --------------------------------------------------------------------------- OpenSSL callbacks


def _core_of(conn: SSL.Connection) -> DtlsConnection | None:
    core = conn.get_app_data()
    return core if isinstance(core, DtlsConnection) else None


def _verify_cb(conn: SSL.Connection, cert: crypto.X509, err: int, depth: int, ok: int) -> bool:
    core = _core_of(conn)
    if core is None:
        return bool(ok)
    return core._verify(cert, err, depth, bool(ok))


def _cookie_generate(conn: SSL.Connection) -> bytes:
    core = _core_of(conn)
    if core is None or core._peer is None:
        return b"\0" * 32
    return cookie_for(core._peer, cookie_window(core._now))


def _cookie_verify(conn: SSL.Connection, cookie: bytes) -> bool:
    core = _core_of(conn)
    if core is None or core._peer is None:
        return False
    w = cookie_window(core._now)
    return hmac.compare_digest(cookie, cookie_for(core._peer, w)) or hmac.compare_digest(
        cookie, cookie_for(core._peer, w - 1)
    )


def _alpn_picker(
    ours: list[bytes],
) -> Callable[[SSL.Connection, list[bytes]], bytes | object]:
    """The server's ALPN choice: the first of its own protocols the client offered
    (the server's order of preference); without one, no protocol (the handshake goes on
    without ALPN, as on the TLS sockets)."""

    def pick(conn: SSL.Connection, offered: list[bytes]) -> bytes | object:
        for p in ours:
            if p in offered:
                return p
        core = _core_of(conn)
        if core is not None:
            core._logf("ALPN: no common protocol: the client offered %r", offered)
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
        core = _core_of(conn)
        if core is not None:
            core._logf(
                "SNI %r: %s certificate", name, "its" if other is not None else "the default"
            )

    return pick


# --------------------------------------------------------------------------- configuration


class DtlsConfig:
    """What every connection of one side shares: the pyOpenSSL context (certificates,
    trust, SRTP, ALPN, SNI) and the verification rule."""

    __slots__ = ("chain_check", "server", "srtp_profiles", "ssl_ctx", "use_srtp")

    def __init__(
        self,
        server: bool,
        cert_pem: bytes | None,
        *,
        use_srtp: bool = False,
        alpn: list[str] | None = None,
        verify: bool = True,
        trusted_pem: bytes | None = None,
        sni_pems: dict[str, bytes] | None = None,
        mutual: bool = True,
        srtp_profiles: bytes = SRTP_PROFILES,
    ) -> None:
        """`srtp_profiles`: the SRTP profiles offered with `use_srtp` (OpenSSL's
        colon-separated names, most preferred first).

        Raises:
            SSL.Error, ValueError: a certificate or key OpenSSL refuses."""
        self.server = server
        self.use_srtp = use_srtp
        self.srtp_profiles = srtp_profiles
        # whether verification checks a chain (server: a client certificate is required)
        self.chain_check = verify and (trusted_pem is not None or not server)
        args = (
            server,
            srtp_profiles if use_srtp else None,
            alpn or [],
            verify,
            trusted_pem,
            mutual,
        )
        self.ssl_ctx = _build(cert_pem, *args)
        if server and sni_pems:
            by_name = {name: _build(pem, *args) for name, pem in sni_pems.items()}
            self.ssl_ctx.set_tlsext_servername_callback(_sni_picker(by_name))

    @classmethod
    def from_context(
        cls,
        ctx: SocketContext,
        server: bool,
        *,
        use_srtp: bool | None = None,
        mutual: bool = True,
        own_cert_both_sides: bool = False,
        srtp_profiles: bytes = SRTP_PROFILES,
    ) -> DtlsConfig:
        """The config a socket context describes for one side. `use_srtp`: instead of
        the context's; `own_cert_both_sides`: a client presents the server certificate
        too (the engine's rule: one certificate, one fingerprint in the SDP)."""
        sni: dict[str, bytes] = {}
        if server:
            for name in ctx.server_names:
                pem = ctx.cert_pem_for(True, name)
                if pem is not None:
                    sni[name] = pem
        cert = ctx.cert_pem_for(server or own_cert_both_sides)
        return cls(
            server,
            cert,
            use_srtp=ctx.use_srtp if use_srtp is None else use_srtp,
            alpn=ctx.alpn,
            verify=ctx.verify,
            trusted_pem=ctx.trusted_pem,
            sni_pems=sni,
            mutual=mutual,
            srtp_profiles=srtp_profiles,
        )


def _build(
    pem: bytes | None,
    server: bool,
    srtp: bytes | None,
    alpn_names: list[str],
    verify: bool,
    trusted: bytes | None,
    mutual: bool,
) -> SSL.Context:
    c = SSL.Context(SSL.DTLS_METHOD)
    c.set_min_proto_version(DTLS1_2_VERSION)
    c.set_max_proto_version(DTLS1_2_VERSION)
    c.set_cipher_list(CIPHERS)
    c.set_options(SSL.OP_NO_QUERY_MTU | SSL.OP_NO_TICKET | SSL.OP_NO_RENEGOTIATION)
    if srtp is not None:
        c.set_tlsext_use_srtp(srtp)
    alpn = [p.encode() for p in alpn_names]
    if alpn and server:
        # the stub wants pyOpenSSL's private NO_OVERLAPPING_PROTOCOLS type
        c.set_alpn_select_callback(_alpn_picker(alpn))  # type: ignore[arg-type]
    elif alpn:
        c.set_alpn_protos(alpn)
    if pem is not None:
        _load_cert_key(c, pem)
    if trusted is not None:
        store = c.get_cert_store()
        assert store is not None
        for cert in x509.load_pem_x509_certificates(trusted):
            store.add_cert(crypto.X509.from_cryptography(cert))
    if server:
        c.set_cookie_generate_callback(_cookie_generate)
        c.set_cookie_verify_callback(_cookie_verify)
        if not mutual:
            c.set_verify(SSL.VERIFY_NONE)
        else:
            mode = SSL.VERIFY_PEER  # ask for a client certificate (its fingerprint, for pinning)
            if verify and trusted is not None:
                mode |= SSL.VERIFY_FAIL_IF_NO_PEER_CERT
            c.set_verify(mode, _verify_cb)
    elif verify:
        if trusted is None:
            c.set_default_verify_paths()
        c.set_verify(SSL.VERIFY_PEER, _verify_cb)
    else:
        c.set_verify(SSL.VERIFY_NONE)
    return c


# --------------------------------------------------------------------------- the connection


class DtlsConnection:
    """One DTLS association, sans-IO. See the module docstring."""

    __slots__ = (
        "_conn",
        "_deadline",
        "_events",
        "_flight",
        "_flight_mseq",
        "_held_tail",
        "_log",
        "_mtu",
        "_now",
        "_out",
        "_peer",
        "_peer_flight",
        "_pin",
        "_replay_at",
        "_replay_gap",
        "_rto",
        "_rto_initial",
        "_rtx_at",
        "_rx_since_flight",
        "_seq0",
        "_tag",
        "_timeout",
        "_verify_error",
        "_verify_name",
        "alpn",
        "config",
        "cookie",
        "junk",
        "log_id",
        "peer_fingerprint",
        "server",
        "srtp_keys",
        "srtp_profile",
        "state",
    )

    def __init__(
        self,
        config: DtlsConfig,
        *,
        peer: Any = None,
        cookie: bool = True,
        server_name: str | None = None,
        verify_name: str | None = None,
        fingerprint: bytes | None = None,
        mtu: int = DEFAULT_MTU,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        rto_initial: float = RTO_INITIAL,
        log: IInstanceLog | None = None,
        tag: str = "dtls",
        log_id: int | None = None,
    ) -> None:
        """`peer`: the peer's address (a tuple whose first two items are host and port),
        for the cookie. `cookie`: a server runs the cookie exchange first.
        `server_name`: a client sends it by SNI (not an IP literal). `verify_name`: a
        client checks the server's certificate against it (when the config verifies).
        `fingerprint`: pin the peer's certificate (its digest; the length names the
        hash, `PIN_HASHES`: 20 SHA-1, 28 SHA-224, 32 SHA-256, 48 SHA-384, 64 SHA-512).
        `rto_initial`: seconds before a flight is first resent (`RTO_INITIAL`, 0.1 s;
        RFC 6347 suggests 1 s where the path's round trip is unknown); each resend
        doubles the wait, up to `RTO_MAX`. `log_id`: the id the log lines carry (the
        adapter's own; default: this object's).

        Raises:
            ValueError: a fingerprint of none of those lengths, an `mtu` out of range, an
                `rto_initial` that is not a number of seconds from 0.001 to `RTO_MAX`.
        """
        if (
            isinstance(rto_initial, bool)
            or not isinstance(rto_initial, (int, float))
            or not 0.001 <= rto_initial <= RTO_MAX
        ):
            raise ValueError(
                f"rto_initial={rto_initial!r}: pass the seconds before the first resend, "
                f"from 0.001 to {RTO_MAX:g} (0.1 suits media, 1 is RFC 6347's default)"
            )
        if fingerprint is not None and len(fingerprint) not in PIN_HASHES:
            raise ValueError(
                f"fingerprint: {len(fingerprint)} bytes; pass the digest of the peer's "
                "certificate (the SDP's a=fingerprint, decoded from hex): 20 bytes for "
                "sha-1, 28 sha-224, 32 sha-256, 48 sha-384, 64 sha-512"
            )
        if type(mtu) is not int or not MIN_MTU <= mtu <= MAX_MTU:
            raise ValueError(f"mtu={mtu!r} must be an int from {MIN_MTU} to {MAX_MTU}")
        self.config = config
        self.server = config.server
        self.cookie = cookie and config.server
        self._peer = peer
        self._verify_name = verify_name
        self._pin = fingerprint
        self._mtu = mtu
        self._timeout = handshake_timeout
        self._log = log
        self._tag = tag
        self.log_id = id(self) if log_id is None else log_id
        self.junk = 0
        """Datagrams of which the header parse dropped something (`valid_prefix`)."""
        self._now = 0.0
        self._out: list[bytes] = []
        self._events: deque[DtlsEvent] = deque()
        self._deadline: float | None = None
        self._rtx_at: float | None = None
        self._rto_initial = float(rto_initial)
        self._rto = self._rto_initial
        self._flight: list[bytes] = []
        self._flight_mseq = -1  # the highest handshake message_seq of the kept flight
        self._seq0 = 0  # the record number the next epoch-0 record fed to OpenSSL gets
        # digests of the peer's handshake datagrams since our last flight, and of those
        # that led to it (a repeat of one means the peer did not get our flight)
        self._rx_since_flight: deque[bytes] = deque(maxlen=_SEEN_MAX)
        self._peer_flight: deque[bytes] = deque(maxlen=_SEEN_MAX)
        self._replay_at = 0.0  # no resend for a replayed datagram before this time
        self._replay_gap = self._rto_initial
        self._verify_error: str | None = None
        self._held_tail: bytes | None = None  # an early ChangeCipherSpec and what followed
        self.alpn: str | None = None
        self.srtp_profile: str | None = None
        self.srtp_keys: bytes | None = None
        self.peer_fingerprint: bytes | None = None
        self._conn: SSL.Connection | None = self._make_ssl(server_name)
        self.state: int = LISTEN if self.cookie else HANDSHAKE

    def _make_ssl(self, server_name: str | None) -> SSL.Connection:
        config = self.config
        conn = SSL.Connection(config.ssl_ctx, None)
        conn.set_app_data(self)
        conn.set_ciphertext_mtu(self._mtu)
        if self._pin is not None and _asks_cert(config):
            mode = SSL.VERIFY_PEER
            if config.server:
                mode |= SSL.VERIFY_FAIL_IF_NO_PEER_CERT
            conn.set_verify(mode, _verify_cb)
        if config.server:
            conn.set_accept_state()
        else:
            if server_name and not is_ip(server_name):
                conn.set_tlsext_host_name(server_name.encode("idna"))
            conn.set_connect_state()
        return conn

    def __repr__(self) -> str:
        return f"<DtlsConnection {'server' if self.server else 'client'} state {self.state}>"

    # ------------------------------------------------------------------ the caller's side

    @property
    def ended(self) -> bool:
        """No more datagrams or events will come (after the last event was taken)."""
        return self.state == ENDED

    @property
    def established(self) -> bool:
        """The handshake is done and the connection has not ended."""
        return self.state == ESTABLISHED

    @property
    def mtu(self) -> int:
        """The path MTU (bytes of UDP payload)."""
        return self._mtu

    @property
    def cleartext_mtu(self) -> int:
        """The largest `send_data` for the path MTU."""
        return self._mtu - RECORD_OVERHEAD

    def set_mtu(self, mtu: int) -> None:
        """Change the path MTU.

        Raises:
            ValueError: `mtu` is not `MIN_MTU`..`MAX_MTU`.
        """
        if type(mtu) is not int or not MIN_MTU <= mtu <= MAX_MTU:
            raise ValueError(f"mtu={mtu!r} must be an int from {MIN_MTU} to {MAX_MTU}")
        self._mtu = mtu
        if self._conn is not None:
            self._conn.set_ciphertext_mtu(mtu)

    def start(self, now: float, *, deadline: bool = False) -> None:
        """Begin: a client sends its first flight; a server waits for the ClientHello.
        `deadline`: a server's handshake deadline runs from now (not from the first
        datagram), as a client's does."""
        self._now = now
        if self.state != HANDSHAKE:
            return
        if self.server:
            if deadline and self._deadline is None:
                self._deadline = now + self._timeout
            return
        self._deadline = now + self._timeout
        self._step()

    def datagrams_to_send(self) -> list[bytes]:
        """The datagrams to send to the peer now, in order (each at most the MTU)."""
        out, self._out = self._out, []
        return out

    def next_event(self) -> DtlsEvent | None:
        """The next event, or None."""
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """When `handle_timer` is due (the caller's clock), or None."""
        if self.state != HANDSHAKE:
            return None
        t = self._deadline
        r = self._rtx_at
        if r is not None and (t is None or r < t):
            return r
        return t

    def handle_timer(self, now: float) -> None:
        """The timer of `get_timer` ran out: resend the flight, or fail at the deadline."""
        self._now = now
        if self.state != HANDSHAKE:
            return
        if self._deadline is not None and now >= self._deadline:
            self._fail_handshake("handshake", f"no result after {self._timeout:g}s")
            return
        if self._rtx_at is None or now < self._rtx_at:
            return
        self._rto = min(self._rto * 2, RTO_MAX)
        conn = self._conn
        assert conn is not None
        try:
            fresh = conn.DTLSv1_handle_timeout()
        except SSL.Error as e:
            self._drain_bio()
            self._fail_handshake("handshake failed after retransmissions", detail(e))
            return
        new = self._drain_bio() if fresh else []
        if new:
            self._logf("retransmitting the flight (re-encoded by OpenSSL)")
            self._flight = new
        else:
            self._logf("retransmitting the flight (%d datagrams as sent)", len(self._flight))
            self._out.extend(self._flight)
        self._rearm()

    def receive_datagram(self, data: bytes, now: float, peer: Any = None) -> None:
        """One datagram from the peer (`peer`: its address, for a server's cookie, when
        it is not the one given at creation). Only its leading well-formed records reach
        OpenSSL (`valid_prefix`); the rest is dropped."""
        self._now = now
        if peer is not None:
            self._peer = peer
        st = self.state
        conn = self._conn
        if st == ENDED or conn is None:
            return
        n = len(data)
        if (
            st == ESTABLISHED
            and n > _HEADER
            and data[0] == 23
            and data[1] == 0xFE
            and data[3] == 0
            and data[4] == 1
            and n == _HEADER + ((data[11] << 8) | data[12])
            and n <= _PACKET_MAX
            and data[2] in (0xFD, 0xFF)
        ):
            # the usual datagram: one application-data record, which `valid_prefix`
            # would pass whole and OpenSSL reads whole. 1 KiB records ping-pong, engine
            # to engine (benchmarks.dtls engine_records, best of 9, process time):
            # 30,800/s through the general path, 33,000/s here (32,000-35,000/s before
            # the header parse existed)
            conn.bio_write(data)
            self._read_records()
            return
        n = valid_prefix(data)
        if n < len(data):
            self.junk += 1
            if self.junk % _JUNK_LOG_EVERY == 1:
                self._logf(
                    "dropped %d bytes of a datagram that are no DTLS record it can use "
                    "(%d such datagrams so far, one line per %d)",
                    len(data) - n,
                    self.junk,
                    _JUNK_LOG_EVERY,
                )
            data = data[:n]
        if n == 0:
            return  # nothing OpenSSL could use (BIO_write refuses a zero-length datagram)
        if st == LISTEN:
            self._listen(data)
            return
        if data[0] in (20, 22):
            digest = hashlib.blake2b(data, digest_size=16).digest()
            if digest in self._peer_flight:
                if self._flight and (st == HANDSHAKE or self.server):
                    self._resend_for_replay()
                return
            if st == HANDSHAKE:
                self._rx_since_flight.append(digest)
        if st == HANDSHAKE:
            ccs = first_ccs(data)
            if ccs < 0:
                self._feed(data)
            else:
                if ccs > 0:
                    self._feed(data[:ccs])
                if self.state == HANDSHAKE:
                    if self._ccs_ready():
                        self._held_tail = None  # this ChangeCipherSpec supersedes it
                        self._feed(data[ccs:])
                    else:
                        if self._held_tail is None:
                            self._logf("ChangeCipherSpec before the rest of the flight: held")
                        self._held_tail = held_part(data[ccs:])
            self._feed_held()
            return
        self._feed(data)

    def _resend_for_replay(self) -> None:
        """The peer repeated a datagram of the flight that led to ours: resend ours,
        unless it was resent for a repeat less than `_replay_gap` ago (which doubles at
        each such resend, as a peer's own resends space out)."""
        now = self._now
        if now < self._replay_at:
            return
        self._replay_at = now + self._replay_gap
        self._replay_gap = min(self._replay_gap * 2, RTO_MAX)
        self._logf("the peer resent its flight: resending ours")
        self._out.extend(self._flight)

    def _feed(self, data: bytes) -> None:
        """Give well-formed records to OpenSSL, in packets it reads whole, running the
        handshake or reading records after each; nothing stays unread."""
        at = 0
        n = len(data)
        while at < n and self.state in (HANDSHAKE, ESTABLISHED):
            conn = self._conn
            assert conn is not None
            if n - at <= _PACKET_MAX:
                end = n  # the usual case: the whole datagram in one packet
            else:
                end = at
                while end < n:  # whole records, up to _PACKET_MAX (one record at least)
                    rec_end = end + _HEADER + ((data[end + 11] << 8) | data[end + 12])
                    if end > at and rec_end - at > _PACKET_MAX:
                        break
                    end = rec_end
            conn.bio_write(self._renumber(data[at:end] if at or end < n else data))
            at = end
            if self.state == HANDSHAKE:
                self._step()
            else:
                self._read_records()
            if self._conn is conn and _discard_unread(conn):
                self._logf("OpenSSL left bytes of a datagram unread: discarded")

    def _renumber(self, data: bytes) -> bytes:
        """`data` (well-formed records) with each epoch-0 record numbered by the engine,
        in the order they are fed. Epoch-0 records carry no MAC: OpenSSL's replay
        window would move to any record number a stranger sends (one record far ahead
        and the peer's real ones count as old), and mark the numbers of records whose
        content it then drops. Numbered here, a stranger's record takes only the next
        number; a repeat of the peer's handshake message is dropped by its message
        number instead, as a resend with a new record number would be. (Records of
        later epochs are authenticated and go as they came.)"""
        n = len(data)
        if data[4] and n == _HEADER + ((data[11] << 8) | data[12]):
            return data  # the usual case after the handshake: one record of epoch 1
        off = 0
        out: bytearray | None = None
        while off + _HEADER <= n:
            if data[off + 3] == 0 and data[off + 4] == 0:
                if out is None:
                    out = bytearray(data)
                out[off + 5 : off + 11] = self._seq0.to_bytes(6, "big")
                self._seq0 += 1
            off += _HEADER + ((data[off + 11] << 8) | data[off + 12])
        return data if out is None else bytes(out)

    # ------------------------------------------------------------------ reordering

    def _ccs_ready(self) -> bool:
        """Is the peer's ChangeCipherSpec the next thing OpenSSL reads? (OpenSSL drops
        one that comes before the messages it follows, and only a re-encoded resend of
        the peer's flight would bring it back.) Asked of OpenSSL's own state."""
        conn = self._conn
        if conn is None:
            return False
        state = conn.get_state_string()
        if state == _CCS_NEXT:
            return True
        if not self.server:
            return False
        if state == _CCS_NEXT_SERVER_CERT:
            return True
        # after the ClientKeyExchange a CertificateVerify follows when the client sent
        # a certificate
        return state == _CCS_NEXT_SERVER_NO_CERT and conn.get_peer_certificate() is None

    def _feed_held(self) -> None:
        """Give OpenSSL the held ChangeCipherSpec once it is the next thing to read."""
        held = self._held_tail
        if held is not None and self.state == HANDSHAKE and self._ccs_ready():
            self._held_tail = None
            self._logf("the flight before the held ChangeCipherSpec is complete: feeding it")
            self._feed(held)

    def send_data(self, data: bytes) -> None:
        """Send `data` as one record.

        Raises:
            ValueError: the record would be larger than the cleartext MTU, or is empty.
            RuntimeError: the handshake is not done, or the connection has ended.
        """
        n = len(data)
        if n > self.cleartext_mtu:
            raise ValueError(
                f"{n} bytes do not fit one DTLS record: the cleartext MTU is "
                f"{self.cleartext_mtu} bytes (path MTU {self._mtu}); split the data, or "
                "raise the MTU"
            )
        if n == 0:
            raise ValueError("empty buffer; a DTLS record carries at least one byte")
        conn = self._conn
        if self.state != ESTABLISHED or conn is None:
            raise RuntimeError("send_data before the handshake is done, or after the end")
        try:
            conn.send(data)
        except SSL.Error as e:
            self._drain_bio()
            self._fail(ShutdownReason.SOCKET_LOST, f"send failed: {detail(e)}")
            return
        self._drain_bio()

    def close(self) -> None:
        """End the connection: close_notify when the handshake is done (nothing during
        it). No event follows."""
        conn = self._conn
        if self.state == ESTABLISHED and conn is not None:
            self._send_close(conn)
        self._end()

    def abort(self) -> None:
        """End the connection at once: nothing more is sent, no event follows."""
        self._out.clear()
        self._end()

    # ------------------------------------------------------------------ server: cookies

    def accept_verified(self, now: float) -> None:
        """A connection whose ClientHello passed the cookie exchange (`CookieListener`):
        go on with the handshake."""
        self._now = now
        self.state = HANDSHAKE
        self._deadline = now + self._timeout
        self._step()

    def _listen(self, data: bytes) -> None:
        """The cookie exchange: True once a ClientHello with a valid cookie came."""
        if self.listen_step(data):
            self.accept_verified(self._now)

    def listen_step(self, data: bytes) -> bool:
        """Run `DTLSv1_listen` on one datagram: a ClientHello without a valid cookie gets
        a HelloVerifyRequest (in `datagrams_to_send`). True once one with a valid cookie
        came (the connection then waits for `accept_verified`). Only the datagram's
        first record is given to OpenSSL, and only when it is a ClientHello of at most
        2^14 bytes (what `DTLSv1_listen` reads whole)."""
        conn = self._conn
        if conn is None or not is_client_hello(data):
            return False
        n = valid_prefix(data, 1)
        if n == 0 or n - _HEADER > _HELLO_MAX:
            return False
        try:
            conn.bio_write(data[:n] if n < len(data) else data)
            conn.DTLSv1_listen()
        except SSL.WantReadError:
            _discard_unread(conn)
            self._drain_bio()
            return False
        except SSL.Error as e:
            self._drain_bio()
            self._logf("bad ClientHello from %s: %s", self._peer, detail(e))
            self._conn = self._make_ssl(None)  # its state is unknown: start afresh
            return False
        _discard_unread(conn)
        # OpenSSL reads on from the ClientHello's record number (`_renumber`)
        self._seq0 = int.from_bytes(data[5:11], "big") + 1
        whole = data[: valid_prefix(data)]  # as `receive_datagram` sees a repeat of it
        self._rx_since_flight.append(hashlib.blake2b(whole, digest_size=16).digest())
        return True

    # ------------------------------------------------------------------ the handshake

    def _step(self) -> None:
        conn = self._conn
        if conn is None:
            return
        if self._deadline is None:
            self._deadline = self._now + self._timeout
        try:
            conn.do_handshake()
        except SSL.WantReadError:
            self._new_flight()
            return
        except SSL.Error as e:
            self._drain_bio()  # the alert, if OpenSSL made one
            self._fail_handshake("handshake failed", detail(e))
            return
        self._new_flight()
        self._handshake_done(conn)

    def _new_flight(self) -> None:
        """What OpenSSL wrote in answer to a datagram: the flight to keep and resend.

        OpenSSL resends its last flight by its own (wall-clock) timer inside any call
        that finds the timer ran out. When the same call also wrote the next flight
        (higher handshake message numbers), that stale copy is dropped: packed in front,
        it would be all the peer reads (a server reads the first ClientHello of a
        datagram). When it wrote only the copy, the copy goes out as a resend: the
        schedule and the peer's flight stay as they were."""
        raw = self._read_bio()
        if not raw:
            return
        old = self._flight_mseq
        recs = list(_message_seqs(raw))
        top = max(m for _, _, m in recs)
        stale = [r for r in recs if 0 <= r[2] <= old]
        if stale and top > old:
            self._logf("dropped OpenSSL's own resend of the last flight, before the next")
            raw = b"".join(raw[a:b] for a, b, m in recs if not 0 <= m <= old)
        dgrams = pack_records(raw, self._mtu)
        self._out.extend(dgrams)
        if stale and top <= old:
            self._logf("OpenSSL resent the flight by its own timer")
            self._flight = dgrams
            return
        self._flight = dgrams
        self._flight_mseq = max(old, top)
        self._peer_flight.extend(self._rx_since_flight)
        self._rx_since_flight.clear()
        self._rto = self._rto_initial
        self._replay_at = self._now
        self._replay_gap = self._rto_initial
        self._rearm()

    def _rearm(self) -> None:
        """The next resend, on the engine's backoff (the caller's clock)."""
        self._rtx_at = self._now + self._rto

    def _verify(self, cert: crypto.X509, err: int, depth: int, ok: bool) -> bool:
        pin = self._pin
        if pin is not None:
            if depth == 0:
                hash_name = PIN_HASHES[len(pin)]
                fp = cert_fingerprint(cert, hash_name)
                if not hmac.compare_digest(fp, pin):
                    self._verify_error = (
                        f"the peer's certificate ({hash_name.upper()} {fp.hex()}) is not the "
                        f"one pinned by its fingerprint ({pin.hex()})"
                    )
                    return False
            return True
        if self.server and not self.config.chain_check:
            return True  # asked only for the fingerprint
        if not ok:
            self._verify_error = (
                f"certificate verification failed at depth {depth}: "
                f"{verify_message(err)} (X509 error {err})"
            )
            return False
        name = self._verify_name
        if (
            depth == 0
            and not self.server
            and name
            and not name_matches(cert.to_cryptography(), name)
        ):
            self._verify_error = f"the certificate does not match the name {name!r}"
            return False
        return True

    def _handshake_done(self, conn: SSL.Connection) -> None:
        self._rtx_at = None
        self._deadline = None
        self._held_tail = None
        peer = conn.get_peer_certificate(as_cryptography=True)
        if peer is not None:
            self.peer_fingerprint = cert_fingerprint(peer)
        if self._pin is not None and self.peer_fingerprint is None and _asks_cert(self.config):
            self._send_close(conn)
            self._fail_handshake("fingerprint", "the peer presented no certificate to pin")
            return
        if self.config.use_srtp:
            profile = conn.get_selected_srtp_profile().decode("ascii", "replace")
            length = SRTP_KEY_LENGTHS.get(profile)
            if not profile or length is None:
                self._send_close(conn)
                offered = self.config.srtp_profiles
                self._fail_handshake("SRTP", f"no SRTP profile agreed (offered {offered!r})")
                return
            self.srtp_profile = profile
            self.srtp_keys = conn.export_keying_material(SRTP_LABEL, length)
        raw = conn.get_alpn_proto_negotiated()
        self.alpn = raw.decode("utf-8", "replace") if raw else None
        self.state = ESTABLISHED
        version = conn.get_protocol_version_name()
        cipher = conn.get_cipher_name() or ""
        self._logf(
            "handshake done: %s %s, SRTP %s, ALPN %s, cleartext MTU %d",
            version,
            cipher,
            self.srtp_profile or "none",
            self.alpn or "none",
            self.cleartext_mtu,
        )
        self._events.append(
            HandshakeCompleted(
                self.alpn, self.srtp_profile, self.srtp_keys, self.peer_fingerprint, version, cipher
            )
        )
        self._read_records()

    # ------------------------------------------------------------------ records

    def _read_records(self) -> None:
        conn = self._conn
        while conn is not None and self.state == ESTABLISHED:
            try:
                rec = conn.recv(_RECV_MAX)
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:
                self._logf("close_notify from the peer")
                self._send_close(conn)
                self._events.append(CloseNotify())
                self._end()
                return
            except SSL.Error as e:
                self._drain_bio()
                self._fail(ShutdownReason.SOCKET_LOST, f"DTLS error: {detail(e)}")
                return
            self._events.append(ApplicationData(rec))
        self._drain_bio()

    # ------------------------------------------------------------------ output, the end

    def _read_bio(self) -> bytes:
        """What OpenSSL wrote since the last call."""
        conn = self._conn
        if conn is None:
            return b""
        out = b""
        while True:
            try:
                out += conn.bio_read(65536)
            except SSL.WantReadError:
                return out

    def _drain_bio(self) -> list[bytes]:
        """Move what OpenSSL wrote into the outgoing datagrams; returns them."""
        out = self._read_bio()
        if not out:
            return []
        dgrams = pack_records(out, self._mtu)
        self._out.extend(dgrams)
        return dgrams

    def _send_close(self, conn: SSL.Connection) -> None:
        try:
            conn.shutdown()
        except SSL.Error:
            pass
        self._drain_bio()

    def _fail_handshake(self, what: str, detail: str) -> None:
        if self._verify_error:
            detail = f"{detail} ({self._verify_error})"
        self._fail(ShutdownReason.SOCKET_TLS_HANDSHAKE_FAILED, f"{what}: {detail}")

    def _fail(self, reason: ShutdownReason, detail: str) -> None:
        if self.state == ENDED:
            return
        self._logf("failed (%s): %s", reason.name, detail)
        self._events.append(ConnectionFailed(reason, detail))
        self._end()

    def _end(self) -> None:
        self.state = ENDED
        self._conn = None
        self._rtx_at = self._deadline = None
        self._flight = []
        self._peer_flight.clear()
        self._rx_since_flight.clear()
        self._held_tail = None

    def _logf(self, fmt: str, *args: object) -> None:
        log = self._log
        if log is not None and log.LogFlagSet(LogFlags.LOG_DTLS):
            log.Log(LogFlags.LOG_DTLS, "%s %x: " + fmt, self._tag, self.log_id, *args)


def _asks_cert(config: DtlsConfig) -> bool:
    """Does this side get the peer's certificate (a server asks unless not mutual)?"""
    if not config.server:
        return True
    return config.ssl_ctx.get_verify_mode() != SSL.VERIFY_NONE


# --------------------------------------------------------------------------- listening


@dataclass(slots=True, eq=False)
class CookieListener:
    """The stateless front of a listening server: a ClientHello from an unknown source
    without a valid cookie gets a HelloVerifyRequest and leaves nothing behind; one with
    a valid cookie becomes a `DtlsConnection` waiting for `accept_verified` (or, denied,
    for `alert_record`)."""

    config: DtlsConfig
    mtu: int = DEFAULT_MTU
    """Applies to the connections made from now on (the caller may change it)."""
    log: IInstanceLog | None = None
    tag: str = "dtls"
    handshake_timeout: float = HANDSHAKE_TIMEOUT
    """Applies to the connections made from now on (the caller may change it)."""
    drops: int = field(default=0, init=False)
    _spare: DtlsConnection | None = field(default=None, init=False, repr=False)

    def receive(
        self,
        data: bytes,
        addr: Any,
        now: float,
        peers: int = 0,
        handshaking: int = 0,
        *,
        max_peers: int = MAX_PEERS,
        max_handshaking: int = MAX_HANDSHAKING_PEERS,
    ) -> tuple[list[bytes], DtlsConnection | None, str | None]:
        """One datagram from `addr`, which has no connection yet, while the listener has
        `peers` connections of which `handshaking` are in handshake (the caps:
        `max_peers`, `max_handshaking`).

        Returns (datagrams to send to `addr`, the new connection or None, why the
        datagram was dropped or None)."""
        if not is_client_hello(data):
            return [], None, None
        if peers >= max_peers:
            self.drops += 1
            return [], None, f"MAX_PEERS={max_peers} reached"
        if handshaking >= max_handshaking:
            self.drops += 1
            return [], None, f"MAX_HANDSHAKING_PEERS={max_handshaking} reached"
        spare = self._spare
        if spare is None or spare.mtu != self.mtu or spare._timeout != self.handshake_timeout:
            spare = DtlsConnection(
                self.config,
                cookie=True,
                mtu=self.mtu,
                handshake_timeout=self.handshake_timeout,
                log=self.log,
                tag=self.tag,
            )
            self._spare = spare
        spare._now = now
        spare._peer = addr
        ok = spare.listen_step(data)
        out = spare.datagrams_to_send()
        if not ok:
            return out, None, None
        self._spare = None
        return out, spare, None
