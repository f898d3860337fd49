"""The TLS configuration a server offers, as a real `openssl s_client` and sslyze see it.

Mozilla's "intermediate" configuration by default: TLS 1.2 and 1.3; for TLS 1.2 AEAD,
forward-secret suites only (no CBC); the groups X25519, P-256 and P-384 where Python can
set a list of groups (3.15 and later), else P-256 alone; no renegotiation; a default
certificate that lives at most 366 days. "modern" (`SetTLSProfile`): TLS 1.3 only. The
client side keeps its checks (tests/test_tls.py, tests/test_tls_interop.py).
"""

from __future__ import annotations

import datetime
import importlib.util
import os
import re
import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography import x509
from kit.certs import Server, connect, delete, ended_once, make_ctx
from kit.loop import LOOPS, Mux, R
from kit.peers import peer, wait_for_exit, wait_for_output

from usocket_asyncio import (
    CreateTCPSocketProvider,
    CreateTLSSocketProvider,
    IInstanceLog,
    ISocketProvider,
    SocketModeError,
)
from usocket_asyncio import _context as context_module
from usocket_asyncio._context import (
    DEFAULT_CERT_DAYS,
    SERVER_GROUP_SINGLE,
    SERVER_GROUPS,
    SocketContext,
    default_server_cert,
    restrict_groups,
)

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")

MOZILLA_TLS12 = {
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
}
MOZILLA_TLS13 = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
MOZILLA_GROUPS = {"X25519", "prime256v1", "secp384r1"}
"""What Mozilla's "intermediate" configuration (5.7) allows, as openssl names them."""

OUR_GROUPS = set(SERVER_GROUPS.split(":")) if hasattr(ssl.SSLContext, "set_groups") else {
    SERVER_GROUP_SINGLE
}  # fmt: skip
"""The groups this Python's server accepts."""


@pytest.fixture
def tls() -> ISocketProvider:
    return CreateTLSSocketProvider(CreateTCPSocketProvider())


@pytest.fixture
def server(mux: Mux, log: IInstanceLog, tls: ISocketProvider) -> Iterator[Server]:
    """A library TLS server with every default (no context)."""
    srv = Server(mux, log, tls, None)
    try:
        yield srv
    finally:
        srv.close()


def s_client(mux: Mux, port: int, *args: str) -> tuple[int, str]:
    """`openssl s_client` to the server with `args`; its exit status and output, once it
    ended (stdin closed at once: it quits after the handshake)."""
    with peer(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *args]) as p:
        assert p.stdin is not None
        p.stdin.close()
        p.stdin = None
        out = wait_for_exit(mux, p, "s_client")
        return int(p.returncode), out


def negotiated(out: str) -> tuple[str, str, str]:
    """(protocol, cipher, group) from s_client's report of a completed handshake."""
    new = re.search(r"^New, (TLSv1\.\d), Cipher is (\S+)", out, re.M)
    group = re.search(r"Server Temp Key: (?:ECDH, )?(\w+)", out)
    assert new and group, out
    return new.group(1), new.group(2), group.group(1)


# -- what the server offers --------------------------------------------------------------------


@pytest.mark.interop
@needs_openssl
@pytest.mark.parametrize("version", ["-tls1_2", "-tls1_3"])
def test_server_negotiates_mozilla_suites_and_groups(
    mux: Mux, server: Server, version: str
) -> None:
    rc, out = s_client(mux, server.port, version)
    assert rc == 0, out
    proto, cipher, group = negotiated(out)
    if version == "-tls1_2":
        assert proto == "TLSv1.2" and cipher in MOZILLA_TLS12, out
    else:
        assert proto == "TLSv1.3" and cipher in MOZILLA_TLS13, out
    assert group in OUR_GROUPS and group in MOZILLA_GROUPS, out


@pytest.mark.interop
@needs_openssl
@pytest.mark.parametrize("cipher", ["ECDHE-ECDSA-AES128-SHA256", "ECDHE-ECDSA-AES256-SHA384"])
def test_server_refuses_cbc_suites(mux: Mux, server: Server, cipher: str) -> None:
    """Python's default cipher string has these two CBC suites; Mozilla's has none."""
    rc, out = s_client(mux, server.port, "-tls1_2", "-cipher", cipher)
    assert rc != 0, out
    assert "Cipher is (NONE)" in out or "Cipher    : 0000" in out, out


@pytest.mark.interop
@needs_openssl
@pytest.mark.parametrize("group", ["X448", "secp521r1", "ffdhe2048"])
@pytest.mark.parametrize("version", ["-tls1_2", "-tls1_3"])
def test_server_refuses_groups_outside_mozilla(
    mux: Mux, server: Server, group: str, version: str
) -> None:
    rc, out = s_client(mux, server.port, version, "-groups", group)
    assert rc != 0, out


@pytest.mark.interop
@needs_openssl
def test_a_client_that_offers_x25519_and_p256_connects(mux: Mux, server: Server) -> None:
    """The usual TLS 1.3 client: it offers both and predicts X25519; where the server has
    P-256 alone it is asked for a P-256 share (HelloRetryRequest) and connects."""
    rc, out = s_client(mux, server.port, "-tls1_3", "-groups", "X25519:P-256")
    assert rc == 0, out
    assert negotiated(out)[2] in OUR_GROUPS


@pytest.mark.interop
@needs_openssl
def test_client_renegotiation_is_refused(mux: Mux, server: Server) -> None:
    """s_client asks for a renegotiation ("R" on its input) on TLS 1.2: refused."""
    with peer(["openssl", "s_client", "-connect", f"127.0.0.1:{server.port}", "-tls1_2"]) as p:
        wait_for_output(mux, p, "Verify return code")
        assert p.stdin is not None
        p.stdin.write(b"R\n")
        p.stdin.flush()
        out = wait_for_exit(mux, p, "s_client's renegotiation")
    assert "RENEGOTIATING" in out, out
    assert "no renegotiation" in out, out


def test_server_contexts_refuse_renegotiation_on_any_openssl(log: IInstanceLog) -> None:
    """OpenSSL 3 refuses client renegotiation by default; the library does not rely on
    that default (OpenSSL 1.1.1 allowed it)."""
    ctx = SocketContext(log)
    ctx.SetServerCertificate(default_server_cert().pem)
    sslctx = ctx.ssl_context(True)
    assert sslctx.options & ssl.OP_NO_RENEGOTIATION
    assert not sslctx.options & ssl.OP_CIPHER_SERVER_PREFERENCE  # Mozilla: the client's order
    names = {c["name"] for c in sslctx.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert names == MOZILLA_TLS12


# -- the groups per Python ---------------------------------------------------------------------


class _NewerContext:
    """What `restrict_groups` uses of a Python 3.15+ SSLContext (`set_groups`)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def set_groups(self, groups: str) -> None:
        self.calls.append(("set_groups", groups))

    def set_ecdh_curve(self, name: str) -> None:
        self.calls.append(("set_ecdh_curve", name))


def test_groups_are_all_of_mozillas_where_python_can_set_a_list() -> None:
    newer = _NewerContext()
    assert restrict_groups(newer) == "X25519:prime256v1:secp384r1"  # type: ignore[arg-type]
    assert newer.calls == [("set_groups", "X25519:prime256v1:secp384r1")]
    assert set(SERVER_GROUPS.split(":")) == MOZILLA_GROUPS


def test_groups_are_p256_alone_where_python_sets_one() -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if hasattr(ctx, "set_groups"):
        pytest.skip("this Python sets a list of groups (3.15+)")
    assert restrict_groups(ctx) == "prime256v1"


# -- the default certificate -------------------------------------------------------------------


def test_default_certificate_lives_at_most_366_days() -> None:
    cert = x509.load_der_x509_certificate(default_server_cert().leaf_der)
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert life <= datetime.timedelta(days=366)
    assert life == datetime.timedelta(days=DEFAULT_CERT_DAYS)
    now = datetime.datetime.now(datetime.UTC)
    assert cert.not_valid_before_utc < now < cert.not_valid_after_utc
    # RFC 5280's key identifiers: verifiers that pin it as a trust anchor want them
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest


@pytest.mark.interop
@needs_openssl
def test_default_certificate_as_a_client_sees_it(mux: Mux, server: Server) -> None:
    rc, out = s_client(mux, server.port, "-showcerts")
    assert rc == 0, out
    pem = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", out, re.S)
    assert pem, out
    cert = x509.load_pem_x509_certificate(pem.group(0).encode())
    assert cert.not_valid_after_utc - cert.not_valid_before_utc <= datetime.timedelta(days=366)


# -- "modern": TLS 1.3 only ----------------------------------------------------------------


@pytest.fixture
def modern_server(mux: Mux, log: IInstanceLog, tls: ISocketProvider) -> Iterator[Server]:
    ctx = tls.CreateSocketContext(log)
    ctx.SetTLSProfile("modern")
    srv = Server(mux, log, tls, ctx)  # type: ignore[arg-type]
    try:
        yield srv
    finally:
        srv.close()


@pytest.mark.interop
@needs_openssl
def test_modern_server_refuses_tls12(mux: Mux, modern_server: Server) -> None:
    rc, out = s_client(mux, modern_server.port, "-tls1_2")
    assert rc != 0, out
    rc, out = s_client(mux, modern_server.port)
    assert rc == 0, out
    assert negotiated(out)[0] == "TLSv1.3"


def test_modern_client_refuses_a_tls12_server(
    mux: Mux, log: IInstanceLog, tls: ISocketProvider, ca: Any
) -> None:
    from kit.certs import pem_of

    sctx = make_ctx(tls, log, cert=pem_of(ca, "localhost"), version="tls12")
    srv = Server(mux, log, tls, sctx)
    trust = ca.cert_pem.bytes()
    cctx = make_ctx(tls, log, trust=trust)
    cctx.SetTLSProfile("modern")
    sock, crec = connect(mux, log, tls, cctx, srv.port)
    try:
        mux.run_until(lambda: crec.shutdown is not None, what="the refused handshake")
        ended_once(crec, R.SOCKET_TLS_HANDSHAKE_FAILED)
        # the same client with the default profile connects (the server is fine otherwise)
        plain = make_ctx(tls, log, trust=trust)
        sock2, crec2 = connect(mux, log, tls, plain, srv.port)
        mux.run_until(lambda: crec2.events != [], what="the TLS 1.2 handshake")
        assert crec2.names() == ["connect"], crec2.events
        delete(sock2)
    finally:
        delete(sock)
        srv.close()


def test_set_tls_profile_takes_two_names(log: IInstanceLog) -> None:
    ctx = SocketContext(log)
    assert ctx.profile == "intermediate"
    with pytest.raises(ValueError, match=r"'intermediate'.*'modern'"):
        ctx.SetTLSProfile("old")
    ctx.SetTLSProfile("modern")
    assert ctx.ssl_context(True).minimum_version == ssl.TLSVersion.TLSv1_3
    assert ctx.ssl_context(False).minimum_version == ssl.TLSVersion.TLSv1_3
    ctx.SetTLSProfile("intermediate")
    assert ctx.ssl_context(True).minimum_version == ssl.TLSVersion.TLSv1_2
    ctx.Delete()
    with pytest.raises(SocketModeError, match="deleted"):
        ctx.SetTLSProfile("modern")


# -- sslyze, Mozilla's "intermediate" check ------------------------------------------------


@pytest.mark.interop
@pytest.mark.timeout(120)
@pytest.mark.skipif(
    importlib.util.find_spec("sslyze") is None, reason="sslyze is not installed (the dev extra)"
)
@pytest.mark.parametrize("loop", LOOPS)
def test_sslyze_finds_the_defaults_mozilla_intermediate(loop: str) -> None:
    """tests/kit/tls_scan.py: the library's server with every default, scanned by sslyze
    (a child process each; a scan of loopback takes about a second)."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kit", "tls_scan.py")
    run = subprocess.run(
        [sys.executable, script, "--loop", loop],
        capture_output=True,
        timeout=110,
        check=False,
    )
    report = run.stdout.decode("utf-8", "replace")
    assert run.returncode == 0, report + run.stderr.decode("utf-8", "replace")
    assert "OK - Compliant." in report, report


def test_the_module_names_its_choices() -> None:
    """The constants SECURITY.md quotes."""
    assert context_module.SERVER_CIPHERS.count(":") == 5
    assert DEFAULT_CERT_DAYS <= 366
