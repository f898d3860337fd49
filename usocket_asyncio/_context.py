"""ISocketContext: certificates, trust and ALPN, turned into `ssl.SSLContext` objects.

A context is a description; the `ssl.SSLContext` objects made from it are built on first
use and cached until a setter changes the description. A connection keeps the
`SSLContext` it started with, so a new certificate applies to new connections only, and
one context may serve many sockets at once.

Private keys never touch the disk. `ssl.SSLContext.load_cert_chain` only reads files, so
the PEM is written into an anonymous in-memory file (`os.memfd_create`) and loaded
through its `/proc/self/fd/N` path; where memfd or /proc is missing (not Linux), a pipe
read through `/dev/fd/N` does the same. Neither has a name in any filesystem.

The DTLS sockets (`_dtls.py`) and `IDtls` read the same description through the
package-internal attributes `dtls_enabled`, `use_srtp`, `verify`, `alpn`, `trusted_pem`,
`server_names` and `cert_pem_for(server, hostName)`: the DTLS engine
(`_dtls_core.DtlsConfig.from_context`) builds its pyOpenSSL contexts from them.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import ipaddress
import os
import re
import ssl
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ._api import ISocketContext
from ._types import LogFlags, SocketModeError

if TYPE_CHECKING:
    from ._log import IInstanceLog

MIN_TLS_VERSION = ssl.TLSVersion.TLSv1_2
"""The oldest TLS version any socket accepts."""

# What a TLS server offers, after Mozilla's "intermediate" configuration (version 5.7,
# https://ssl-config.mozilla.org/): TLS 1.2 and 1.3; for TLS 1.2 ECDHE with AES-GCM or
# ChaCha20-Poly1305 only (AEAD and forward secret, as the DTLS engine's CIPHERS); TLS 1.3
# keeps OpenSSL's three suites, all of Mozilla's list. The DHE suites Mozilla also allows
# are left out: Python's `ssl` sets no DH parameters, so OpenSSL could not use them.
SERVER_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)
"""The TLS 1.2 cipher suites a server offers (OpenSSL names)."""

SERVER_GROUPS = "X25519:prime256v1:secp384r1"
"""The key-exchange groups a server accepts where Python can set a list of them
(`ssl.SSLContext.set_groups`, Python 3.15 and later)."""

SERVER_GROUP_SINGLE = "prime256v1"
"""Where Python can set one group only (`set_ecdh_curve`, Python 3.11 to 3.14): P-256,
the one of Mozilla's three every TLS client has. A TLS 1.3 client that sent only an
X25519 key share is asked for a P-256 one (HelloRetryRequest: one more round trip)."""

DEFAULT_CERT_DAYS = 365
"""Lifetime of the default self-signed certificate (scanners flag more than 366 days)."""

PROFILES = ("intermediate", "modern")
"""`SetTLSProfile` names: "intermediate" (the default: TLS 1.2 and 1.3) and "modern"
(TLS 1.3 only)."""

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----", re.DOTALL)
_KEY_LABELS = (b"PRIVATE KEY", b"RSA PRIVATE KEY", b"EC PRIVATE KEY", b"DSA PRIVATE KEY")


class CertKey(NamedTuple):
    """A parsed certificate buffer: the key, the chain (leaf first) and the leaf's DER."""

    key_pem: bytes
    chain_pem: bytes
    leaf_der: bytes

    @property
    def pem(self) -> bytes:
        """The private key followed by the chain, as one PEM buffer."""
        return self.key_pem + self.chain_pem


def _as_bytes(buf: object, length: int | None, what: str) -> bytes:
    if isinstance(buf, str):
        data = buf.encode("ascii", "replace")
    elif isinstance(buf, bytes | bytearray | memoryview):
        data = bytes(buf)
    else:
        raise TypeError(f"{what}: the certificate must be PEM as bytes, not {type(buf).__name__}")
    if length is not None:
        if not 0 <= length <= len(data):
            raise ValueError(f"{what}: certLen={length} but the buffer holds {len(data)} bytes")
        data = data[:length]
    return data.rstrip(b"\0")  # C callers often count the terminating NUL


def parse_cert_key(buf: object, length: int | None = None, what: str = "certificate") -> CertKey:
    """Parse PEM holding a private key and a certificate chain (any order).

    Raises:
        ValueError: the buffer is not PEM, holds no key or no certificate, the key is
            encrypted or malformed, or the key does not belong to any certificate.
    """
    data = _as_bytes(buf, length, what)
    blocks = [(m.group(1), m.group(0)) for m in _PEM_BLOCK.finditer(data)]
    if not blocks:
        raise ValueError(
            f"{what}: malformed buffer: no PEM block found; pass PEM text holding the private "
            "key and the certificate chain (-----BEGIN ...----- lines)"
        )
    keys = [b for label, b in blocks if label in _KEY_LABELS]
    if any(label == b"ENCRYPTED PRIVATE KEY" for label, _ in blocks):
        raise ValueError(f"{what}: the private key is encrypted; pass an unencrypted key")
    if not keys:
        raise ValueError(
            f"{what}: the buffer holds no private key; put the PEM private key and the "
            "certificate chain in one buffer"
        )
    if len(keys) > 1:
        raise ValueError(f"{what}: the buffer holds {len(keys)} private keys; pass exactly one")
    try:
        key = serialization.load_pem_private_key(keys[0], password=None)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{what}: malformed private key: {e}") from None
    certs_pem = [b for label, b in blocks if label == b"CERTIFICATE"]
    if not certs_pem:
        raise ValueError(
            f"{what}: the buffer holds a private key but no certificate; append the "
            "certificate chain (leaf first)"
        )
    try:
        certs = [x509.load_pem_x509_certificate(c) for c in certs_pem]
    except ValueError as e:
        raise ValueError(f"{what}: malformed certificate: {e}") from None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    want = key.public_key().public_bytes(der, spki)
    leaf_i = next(
        (i for i, c in enumerate(certs) if c.public_key().public_bytes(der, spki) == want), None
    )
    if leaf_i is None:
        raise ValueError(
            f"{what}: the private key does not match the certificate "
            f"(none of the {len(certs)} certificates in the buffer carries its public key)"
        )
    order = [leaf_i] + [i for i in range(len(certs)) if i != leaf_i]
    pem = serialization.Encoding.PEM
    chain = b"".join(certs[i].public_bytes(pem) for i in order)
    key_pem = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return CertKey(key_pem, chain, certs[leaf_i].public_bytes(der))


# --------------------------------------------------------------------------- default cert

_default_lock = threading.Lock()
_default: CertKey | None = None


def default_server_cert() -> CertKey:
    """The self-signed certificate of servers given none: made once per process."""
    global _default
    with _default_lock:
        if _default is None:
            _default = _make_self_signed()
        return _default


def _make_self_signed() -> CertKey:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "usocket_asyncio self-signed")])
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=DEFAULT_CERT_DAYS))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # the key identifiers RFC 5280 asks for: verifiers that pin this certificate as
        # a trust anchor (sslyze, cryptography's) refuse one without them
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return CertKey(key_pem, cert.public_bytes(pem), cert.public_bytes(serialization.Encoding.DER))


# --------------------------------------------------------------------------- key loading


@contextlib.contextmanager
def _memory_file(data: bytes) -> Iterator[str]:
    """A path that reads `data` from memory only (memfd, else a pipe)."""
    memfd = getattr(os, "memfd_create", None)
    if memfd is not None and os.path.isdir("/proc/self/fd"):
        fd = memfd("usocket_asyncio-pem", getattr(os, "MFD_CLOEXEC", 0))
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    r, w = os.pipe()  # pragma: no cover - platforms without memfd
    try:
        if len(data) > 60000:
            raise ValueError("certificate buffer too large to load through a pipe (60 kB)")
        os.write(w, data)
        os.close(w)
        w = -1
        yield f"/dev/fd/{r}"
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def load_cert_key(sslctx: ssl.SSLContext, ck: CertKey) -> None:
    """`load_cert_chain` from memory (the key never reaches a file on disk)."""
    # the chain first: OpenSSL takes the first certificate in the file as the leaf
    with _memory_file(ck.chain_pem + ck.key_pem) as path:
        sslctx.load_cert_chain(path)


# --------------------------------------------------------------------------- the context


class SocketContext(ISocketContext):
    """Certificates, trust and ALPN for TLS (and DTLS) sockets. See API.md.

    Package-internal, for the TLS and DTLS sockets: `ssl_context(server)`,
    `cert_pem_for(server, hostName)`, `server_names`, `trusted_pem`, `verify`, `alpn`,
    `dtls_enabled`, `use_srtp`,
    `tls_max_version` (tests pin TLS 1.2 with it), `log`.
    """

    def __init__(self, log: IInstanceLog) -> None:
        self.log = log
        self.dtls_enabled = False
        self.use_srtp = False
        self.tls_max_version: ssl.TLSVersion | None = None
        self._server: dict[str | None, CertKey] = {}
        self._client: CertKey | None = None
        self._trusted: bytes | None = None
        self._verify = True
        self._alpn: list[str] = []
        self._cache: dict[bool, ssl.SSLContext] = {}
        self._deleted = False
        self._profile = "intermediate"

    def _changed(self) -> None:
        if self._deleted:
            raise SocketModeError("the socket context was deleted; make a new one")
        self._cache.clear()

    # ------------------------------------------------------------------ ISocketContext

    def SetServerCertificate(
        self, cert: bytes, certLen: int | None = None, hostName: str | None = None
    ) -> None:
        """Use `cert` (PEM: private key and chain) for server sockets made from now on.

        With `hostName`, the certificate serves only clients that ask for that name by
        SNI; the one set without a name serves the others.

        Raises:
            ValueError: malformed buffer, no private key, no certificate, or a key that
                matches none of the certificates.
        """
        ck = parse_cert_key(cert, certLen, "SetServerCertificate")
        self._changed()
        self._server[hostName.lower() if hostName else None] = ck
        self.log.Log(LogFlags.LOG_TLS, "tls context %x: server certificate set", id(self))

    def SetClientCertificate(
        self, cert: bytes, certLen: int | None = None, hostName: str | None = None
    ) -> None:
        """Client sockets made from now on present `cert` (PEM: private key and chain)
        when the server asks. `hostName` is accepted for the SDK's signature and unused.

        Raises:
            ValueError: as `SetServerCertificate`.
        """
        ck = parse_cert_key(cert, certLen, "SetClientCertificate")
        self._changed()
        self._client = ck

    def DisableClientCertificate(self) -> None:
        """Client sockets made from now on present no certificate."""
        self._changed()
        self._client = None

    def GetCertificateFingerprint(self) -> bytes:
        """SHA-256 (32 bytes) of the DER of the server certificate in use (the default
        self-signed one when none was set)."""
        ck = self._server.get(None) or default_server_cert()
        return hashlib.sha256(ck.leaf_der).digest()

    def SetALPNProtocols(self, alpnList: Sequence[str]) -> None:
        """The ALPN protocols, most preferred first. A server picks by this order; the
        result reaches `SocketAcceptSelectedALPNProtocol` on both sides."""
        if isinstance(alpnList, str | bytes):
            raise TypeError("SetALPNProtocols takes a list of protocol names, not one string")
        names = [str(p) for p in alpnList]
        for p in names:
            if not p or len(p.encode()) > 255:
                raise ValueError(f"ALPN protocol {p!r} must be 1 to 255 bytes long")
        self._changed()
        self._alpn = names

    def EnableDTLS(self, useSrtp: bool) -> None:
        """Sockets made with this context from now on speak DTLS over UDP; `useSrtp`
        also negotiates DTLS-SRTP keying (RFC 5764)."""
        self._changed()
        self.dtls_enabled = True
        self.use_srtp = bool(useSrtp)

    def SetTrustedCertificates(self, pem: bytes) -> None:
        """Trust only the CA certificates in `pem` (instead of the system store).
        Clients verify servers with them; servers then require client certificates.

        Raises:
            ValueError: `pem` holds no certificate, or a malformed one.
        """
        data = _as_bytes(pem, None, "SetTrustedCertificates")
        blocks = [
            b
            for label, b in ((m.group(1), m.group(0)) for m in _PEM_BLOCK.finditer(data))
            if label == b"CERTIFICATE"
        ]
        if not blocks:
            raise ValueError("SetTrustedCertificates: no PEM certificate in the buffer")
        try:
            for b in blocks:
                x509.load_pem_x509_certificate(b)
        except ValueError as e:
            raise ValueError(f"SetTrustedCertificates: malformed certificate: {e}") from None
        self._changed()
        self._trusted = b"\n".join(blocks) + b"\n"

    def DisableCertificateVerification(self) -> None:
        """Explicit opt-out: clients accept any server certificate and name; servers do
        not ask for client certificates."""
        self._changed()
        self._verify = False
        self.log.Log(
            LogFlags.LOG_TLS, "tls context %x: certificate verification disabled", id(self)
        )

    def SetTLSProfile(self, profile: str) -> None:
        """Beyond the SDK: the TLS versions TLS sockets made from now on accept.

        "intermediate" (the default) is TLS 1.2 and 1.3, Mozilla's "intermediate"
        configuration; "modern" is TLS 1.3 only (Mozilla's "modern" protocol rule), for
        server and client sockets alike: a peer that cannot speak TLS 1.3 fails with
        `SOCKET_TLS_HANDSHAKE_FAILED`. Cipher suites, groups and the certificate rules stay
        as SECURITY.md describes. DTLS sockets are not affected (DTLS 1.2 is the only
        version OpenSSL offers).

        Raises:
            ValueError: `profile` is not "intermediate" or "modern".
        """
        if profile not in PROFILES:
            raise ValueError(
                f"SetTLSProfile: unknown profile {profile!r}; use 'intermediate' (TLS 1.2 "
                "and 1.3, the default) or 'modern' (TLS 1.3 only)"
            )
        self._changed()
        self._profile = profile
        self.log.Log(LogFlags.LOG_TLS, "tls context %x: profile %s", id(self), profile)

    def Delete(self) -> None:
        """Release the context; sockets made with it live on with their settings."""
        self._deleted = True
        self._cache.clear()

    # ------------------------------------------------------------------ package-internal

    @property
    def verify(self) -> bool:
        """False after `DisableCertificateVerification`."""
        return self._verify

    @property
    def alpn(self) -> list[str]:
        """The ALPN protocols, most preferred first (a copy)."""
        return list(self._alpn)

    @property
    def trusted_pem(self) -> bytes | None:
        """The CA bundle of `SetTrustedCertificates`, else None (the system store)."""
        return self._trusted

    def cert_pem_for(self, server: bool, hostName: str | None = None) -> bytes | None:
        """Key + chain PEM a socket presents: for servers the one set for `hostName`
        (else the one set without a name, else the default self-signed one), for
        clients the one set (else None)."""
        if server:
            ck = self._server.get(hostName.lower()) if hostName else None
            return (ck or self._server.get(None) or default_server_cert()).pem
        return self._client.pem if self._client is not None else None

    @property
    def server_names(self) -> list[str]:
        """The host names (lower case) a server certificate was set for, to pick by SNI."""
        return [h for h in self._server if h]

    def ssl_context(self, server: bool) -> ssl.SSLContext:
        """The `ssl.SSLContext` for new server or client connections (cached)."""
        ctx = self._cache.get(server)
        if ctx is None:
            ctx = self._build_server() if server else self._build_client()
            self._cache[server] = ctx
        return ctx

    @property
    def profile(self) -> str:
        """The `SetTLSProfile` name in use."""
        return self._profile

    def _base(self, purpose: int) -> ssl.SSLContext:
        ctx = ssl.SSLContext(purpose)
        if self._profile == "modern":
            ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        else:
            ctx.minimum_version = MIN_TLS_VERSION
        if self.tls_max_version is not None:
            ctx.maximum_version = self.tls_max_version
        if self._alpn:
            ctx.set_alpn_protocols(self._alpn)
        return ctx

    def _build_client(self) -> ssl.SSLContext:
        ctx = self._base(ssl.PROTOCOL_TLS_CLIENT)
        if self._verify:
            ctx.check_hostname = True
            ctx.verify_mode = ssl.CERT_REQUIRED
            if self._trusted is not None:
                ctx.load_verify_locations(cadata=self._trusted.decode("ascii"))
            else:
                ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
        else:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self._client is not None:
            load_cert_key(ctx, self._client)
        return ctx

    def _build_server_for(self, ck: CertKey) -> ssl.SSLContext:
        ctx = self._base(ssl.PROTOCOL_TLS_SERVER)
        harden_server(ctx)
        load_cert_key(ctx, ck)
        if self._verify and self._trusted is not None:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(cadata=self._trusted.decode("ascii"))
        return ctx

    def _build_server(self) -> ssl.SSLContext:
        ctx = self._build_server_for(self._server.get(None) or default_server_cert())
        by_name = {h: self._build_server_for(ck) for h, ck in self._server.items() if h}
        if by_name:

            def pick(
                sslobj: ssl.SSLObject | ssl.SSLSocket, name: str | None, _: ssl.SSLContext
            ) -> None:
                other = by_name.get(name.lower()) if name else None
                if other is not None:
                    sslobj.context = other

            ctx.sni_callback = pick
        return ctx


def restrict_groups(ctx: ssl.SSLContext) -> str:
    """Limit the key-exchange groups of server context `ctx` to Mozilla's: all three
    (`SERVER_GROUPS`) where Python has `set_groups` (3.15 and later), else P-256 alone
    (`SERVER_GROUP_SINGLE`, through `set_ecdh_curve`, which sets one group). What was set."""
    set_groups = getattr(ctx, "set_groups", None)
    if set_groups is not None:
        set_groups(SERVER_GROUPS)
        return SERVER_GROUPS
    ctx.set_ecdh_curve(SERVER_GROUP_SINGLE)
    return SERVER_GROUP_SINGLE


def harden_server(ctx: ssl.SSLContext) -> None:
    """What a server offers beyond Python's defaults, to meet Mozilla's "intermediate"
    configuration (see SECURITY.md): AEAD, forward-secret TLS 1.2 suites only
    (`SERVER_CIPHERS`); the client's order of them (all are strong, and a client without
    AES hardware prefers ChaCha20); Mozilla's groups (`restrict_groups`); and no
    renegotiation, whatever the OpenSSL version's default (`OP_NO_RENEGOTIATION`)."""
    ctx.set_ciphers(SERVER_CIPHERS)
    ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    restrict_groups(ctx)


def as_context(ctx: ISocketContext | None, log: IInstanceLog) -> SocketContext:
    """The context a TLS socket uses: the one given, or a fresh default one."""
    if ctx is None:
        return SocketContext(log)
    if not isinstance(ctx, SocketContext):
        raise TypeError("socketContext must come from the TLS provider's CreateSocketContext")
    if ctx._deleted:
        raise SocketModeError("the socket context was deleted; make a new one")
    return ctx
