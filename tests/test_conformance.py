"""TCP over IPv4 and IPv6 and local sockets through the generic stream checker."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

import pytest
from conformance import ALL_CHECKS, RAW_PEER_CHECKS, StreamKind, run_check
from conftest import Mux, have_ipv6

from usocket_asyncio import CreateLocalSocketProvider, CreateTCPSocketProvider, IInstanceLog


def _raw_tcp(address: str) -> tuple[int, tuple[str, int]]:
    host, _, port = address.rpartition(":")
    if host.startswith("["):
        return socket.AF_INET6, (host[1:-1], int(port))
    return socket.AF_INET, (host, int(port))


KINDS = {
    "tcp4": StreamKind(
        name="tcp4",
        provider=CreateTCPSocketProvider,
        bind_args=lambda tmp: ("127.0.0.1", 0),
        connect_address=lambda a, p: f"127.0.0.1:{p}",
        raw_connect=_raw_tcp,
    ),
    "tcp6": StreamKind(
        name="tcp6",
        provider=CreateTCPSocketProvider,
        bind_args=lambda tmp: ("::1", 0),
        connect_address=lambda a, p: f"[::1]:{p}",
        use_ipv6=True,
        raw_connect=_raw_tcp,
    ),
    "local": StreamKind(
        name="local",
        provider=CreateLocalSocketProvider,
        bind_args=lambda tmp: (os.path.join(tmp, "s"), 0),
        connect_address=lambda a, p: a,
        raw_connect=lambda address: (socket.AF_UNIX, address),
    ),
}


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize(
    "check", ALL_CHECKS + RAW_PEER_CHECKS, ids=lambda c: c.__name__.removeprefix("check_")
)
def test_stream_conformance(
    mux: Mux, log: IInstanceLog, kind: str, check: Callable[..., None], short_tmp: str
) -> None:
    if kind == "tcp6" and not have_ipv6():
        pytest.skip("no IPv6 loopback")
    run_check(check, mux, log, KINDS[kind], short_tmp)
