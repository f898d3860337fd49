"""TLS 1.2 and 1.3 through the generic stream checker (tests/conformance.py)."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

import pytest
from conformance import ALL_CHECKS, StreamKind, run_check
from conftest import Mux

from usocket_asyncio import CreateTLSSocketProvider, IInstanceLog, ISocketContext, ISocketProvider
from usocket_asyncio._context import SocketContext

VERSIONS = {"tls12": ssl.TLSVersion.TLSv1_2, "tls13": ssl.TLSVersion.TLSv1_3}


def tls_kind(ca: Any, version: str) -> StreamKind:
    """TLS over IPv4 loopback, server certificate from the test CA, the client verifying it."""
    server_pem = ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.bytes()
    ca_pem = ca.cert_pem.bytes()

    def server_ctx(p: ISocketProvider, log: IInstanceLog) -> ISocketContext | None:
        ctx = p.CreateSocketContext(log)
        assert isinstance(ctx, SocketContext)
        ctx.tls_max_version = VERSIONS[version]
        ctx.SetServerCertificate(server_pem)
        return ctx

    def client_ctx(p: ISocketProvider, log: IInstanceLog) -> ISocketContext | None:
        ctx = p.CreateSocketContext(log)
        assert isinstance(ctx, SocketContext)
        ctx.tls_max_version = VERSIONS[version]
        ctx.SetTrustedCertificates(ca_pem)
        return ctx

    return StreamKind(
        name=version,
        provider=lambda: CreateTLSSocketProvider(None),
        bind_args=lambda tmp: ("127.0.0.1", 0),
        connect_address=lambda a, p: f"127.0.0.1:{p}",
        server_context=server_ctx,
        client_context=client_ctx,
        server_name="localhost",
    )


@pytest.mark.timeout(60)
@pytest.mark.parametrize("version", list(VERSIONS))
@pytest.mark.parametrize("check", ALL_CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
def test_tls_conformance(
    mux: Mux, log: IInstanceLog, ca: Any, version: str, check: Callable[..., None], short_tmp: str
) -> None:
    run_check(check, mux, log, tls_kind(ca, version), short_tmp)
