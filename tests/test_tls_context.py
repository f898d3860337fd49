"""ISocketContext: certificate buffers, fingerprints, the default certificate, no key on disk."""

from __future__ import annotations

import hashlib
import re
import ssl
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from usocket_asyncio import CreateTLSSocketProvider, IInstanceLog
from usocket_asyncio._context import SocketContext, default_server_cert


def new_ctx() -> SocketContext:
    ctx = CreateTLSSocketProvider(None).CreateSocketContext(IInstanceLog(0))
    assert isinstance(ctx, SocketContext)
    return ctx


def split(pem: bytes) -> tuple[bytes, bytes]:
    """(key block, certificate blocks) of a trustme key+chain PEM."""
    m = re.search(
        rb"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.*?-----END \1PRIVATE KEY-----\n", pem, re.S
    )
    assert m is not None
    return m.group(0), pem[: m.start()] + pem[m.end() :]


@pytest.mark.parametrize(
    ("buf", "message"),
    [
        (b"", "no PEM block"),
        (b"hello, I am not a certificate", "no PEM block"),
        (
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "malformed private key",
        ),
    ],
)
def test_malformed_buffers(buf: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        new_ctx().SetServerCertificate(buf)


def test_key_missing_certificate_missing_and_mismatch(ca: Any) -> None:
    key, chain = split(ca.issue_cert("localhost").private_key_and_cert_chain_pem.bytes())
    other_key, _ = split(ca.issue_cert("other").private_key_and_cert_chain_pem.bytes())
    ctx = new_ctx()
    with pytest.raises(ValueError, match="no private key"):
        ctx.SetServerCertificate(chain)
    with pytest.raises(ValueError, match="no private key"):
        ctx.SetClientCertificate(chain)
    with pytest.raises(ValueError, match="no certificate"):
        ctx.SetServerCertificate(key)
    with pytest.raises(ValueError, match="does not match the certificate"):
        ctx.SetServerCertificate(other_key + chain)
    broken = chain.replace(b"MII", b"XXX", 1)
    with pytest.raises(ValueError, match="malformed certificate"):
        ctx.SetServerCertificate(key + broken)
    with pytest.raises(ValueError, match="no PEM certificate"):
        ctx.SetTrustedCertificates(b"nothing")
    # key after the chain, a C-style trailing NUL and certLen all work
    ctx.SetServerCertificate(chain + key + b"\0")
    ctx.SetServerCertificate(key + chain + b"trailing junk", len(key + chain))
    assert ctx.cert_pem_for(True) is not None


def test_fingerprint_is_sha256_of_the_der(ca: Any) -> None:
    pem = ca.issue_cert("localhost").private_key_and_cert_chain_pem.bytes()
    ctx = new_ctx()
    ctx.SetServerCertificate(pem)
    _, chain = split(pem)
    leaf = x509.load_pem_x509_certificates(chain)[0]
    der = leaf.public_bytes(serialization.Encoding.DER)
    fp = ctx.GetCertificateFingerprint()
    assert len(fp) == 32 and fp == hashlib.sha256(der).digest()


def test_default_certificate_is_made_once_per_process() -> None:
    a, b = new_ctx(), new_ctx()
    assert a.GetCertificateFingerprint() == b.GetCertificateFingerprint()
    assert default_server_cert() is default_server_cert()
    assert a.cert_pem_for(True) == default_server_cert().pem
    assert a.cert_pem_for(False) is None
    assert a.GetCertificateFingerprint() == hashlib.sha256(default_server_cert().leaf_der).digest()


def test_dtls_view_of_the_context(ca: Any) -> None:
    ctx = new_ctx()
    assert (ctx.dtls_enabled, ctx.use_srtp, ctx.verify, ctx.alpn, ctx.trusted_pem) == (
        False,
        False,
        True,
        [],
        None,
    )
    ctx.EnableDTLS(True)
    ctx.SetALPNProtocols(["webrtc", "c-webrtc"])
    ctx.SetTrustedCertificates(ca.cert_pem.bytes())
    client_pem = ca.issue_cert("client").private_key_and_cert_chain_pem.bytes()
    ctx.SetClientCertificate(client_pem)
    assert ctx.dtls_enabled and ctx.use_srtp and ctx.alpn == ["webrtc", "c-webrtc"]
    assert ctx.trusted_pem is not None and b"BEGIN CERTIFICATE" in ctx.trusted_pem
    pem = ctx.cert_pem_for(False)
    assert pem is not None and b"PRIVATE KEY" in pem and b"CERTIFICATE" in pem
    ctx.DisableClientCertificate()
    assert ctx.cert_pem_for(False) is None
    ctx.DisableCertificateVerification()
    assert not ctx.verify
    with pytest.raises(ValueError):
        ctx.SetALPNProtocols([""])
    with pytest.raises(TypeError):
        ctx.SetALPNProtocols("h2")


def test_secure_defaults_and_the_key_never_touches_a_named_file(
    ca: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths: list[str] = []
    real = ssl.SSLContext.load_cert_chain

    def spy(self: ssl.SSLContext, certfile: Any, keyfile: Any = None, password: Any = None) -> None:
        paths.append(str(certfile))
        real(self, certfile, keyfile, password)

    monkeypatch.setattr(ssl.SSLContext, "load_cert_chain", spy)
    ctx = new_ctx()
    ctx.SetServerCertificate(ca.issue_cert("localhost").private_key_and_cert_chain_pem.bytes())
    ctx.SetClientCertificate(ca.issue_cert("client").private_key_and_cert_chain_pem.bytes())
    server, client = ctx.ssl_context(True), ctx.ssl_context(False)
    assert paths and all(p.startswith(("/proc/self/fd/", "/dev/fd/")) for p in paths)
    assert server.minimum_version == client.minimum_version == ssl.TLSVersion.TLSv1_2
    assert client.verify_mode == ssl.CERT_REQUIRED and client.check_hostname
    assert server.verify_mode == ssl.CERT_NONE  # no trust bundle: no client certificates
    ctx.SetTrustedCertificates(ca.cert_pem.bytes())
    assert ctx.ssl_context(True).verify_mode == ssl.CERT_REQUIRED
    assert ctx.ssl_context(True) is ctx.ssl_context(True)  # cached until a setter runs
