"""TCP over IPv4 and IPv6 and local sockets through the generic stream checker."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from kit.conformance import ALL_CHECKS, RAW_PEER_CHECKS, STREAM_KINDS, run_check
from kit.loop import Mux, have_ipv6

from usocket_asyncio import IInstanceLog


@pytest.mark.parametrize("kind", list(STREAM_KINDS))
@pytest.mark.parametrize(
    "check", ALL_CHECKS + RAW_PEER_CHECKS, ids=lambda c: c.__name__.removeprefix("check_")
)
def test_stream_conformance(
    mux: Mux, log: IInstanceLog, kind: str, check: Callable[..., None], short_tmp: str
) -> None:
    if kind == "tcp6" and not have_ipv6():
        pytest.skip("no IPv6 loopback")
    run_check(check, mux, log, STREAM_KINDS[kind], short_tmp)
